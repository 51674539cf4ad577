"""What one process serves: the routed models and their learners, as one immutable object.

A :class:`ServingSnapshot` is built off the request path (in a worker thread) and swapped in
with one reference assignment, so requests in flight finish on the snapshot they started
with and no request is dropped while a model is loaded.

Memory: one dict entry per learner (``learner_id -> row``) plus three packed 2-byte arrays
(bucket, stable cohort, candidate cohort) and each model's Arrow learner ids;
docs/BENCHMARKS.md gives the measured bytes per learner.
"""

from __future__ import annotations

import json
from array import array
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cohortlens.cohorts import CohortModel
from cohortlens.experiments.assignment import buckets
from cohortlens.serve.routing import Role, candidate_threshold


@dataclass(frozen=True, eq=False)
class ServedModel:
    """One model version with its stored assignments, ready for look-ups."""

    model_id: int
    model: CohortModel
    #: Cohort id of each cohort code (codes index these tuples).
    cohort_ids: tuple[int, ...]
    archetypes: tuple[str, ...]
    #: Learners with a stored assignment, and each one's cohort code (aligned).
    learner_ids: pa.Array = field(repr=False)
    codes: np.ndarray = field(repr=False)

    @classmethod
    def build(cls, model_id: int, artifact: dict[str, Any], assignments: pa.Table) -> ServedModel:
        """From a stored artifact and its assignments (learner_id, cohort_id, archetype)."""
        model = CohortModel.from_dict(artifact)
        cohort = assignments.column("cohort_id").to_numpy(zero_copy_only=False).astype(np.int64)
        uniq, inverse = np.unique(cohort, return_inverse=True)
        names = {int(k): str(v) for k, v in model.names_.items()}
        if assignments.num_rows:
            stored = assignments.group_by(["cohort_id", "archetype"]).aggregate([])
            for row in stored.to_pylist():
                names.setdefault(int(row["cohort_id"]), str(row["archetype"]))
        ids = tuple(int(c) for c in uniq.tolist())
        return cls(
            model_id=model_id,
            model=model,
            cohort_ids=ids,
            archetypes=tuple(names.get(c, "") for c in ids),
            learner_ids=assignments.column("learner_id").combine_chunks().cast(pa.string()),
            codes=inverse.astype(np.int16),
        )

    def archetype_of(self, cohort_id: int) -> str:
        """The archetype name of a cohort id (empty when the model does not know it)."""
        return str(self.model.names_.get(int(cohort_id), ""))


def _tail(model: ServedModel, role: Role, code: int, *, provisional: bool = False) -> bytes:
    """The JSON body after ``{"learner_id":<id>`` for a learner of cohort ``code``."""
    body: dict[str, object] = {
        "cohort_id": model.cohort_ids[code],
        "archetype": model.archetypes[code],
        "model_version": model.model_id,
        "model_role": role.value,
    }
    if provisional:
        body["provisional"] = True
    return ("," + json.dumps(body, separators=(",", ":"))[1:]).encode()


def _tails(model: ServedModel | None, role: Role, *, provisional: bool) -> tuple[bytes, ...]:
    if model is None:
        return ()
    return tuple(
        _tail(model, role, c, provisional=provisional) for c in range(len(model.cohort_ids))
    )


@dataclass(frozen=True, eq=False)
class LearnerIndex:
    """Learners indexed for single look-ups: row per id, packed bucket and cohort codes.

    The served models' own learners form one index; learners the models have not seen, scored
    provisionally from their stored events, form a second, small one.
    """

    #: learner_id -> row of the arrays below.
    rows: dict[str, int] = field(repr=False)
    bucket: array = field(repr=False)
    stable_code: array = field(repr=False)
    candidate_code: array = field(repr=False)
    stable_tails: tuple[bytes, ...] = field(repr=False)
    candidate_tails: tuple[bytes, ...] = field(repr=False)
    #: The candidate's answers for override learners (role ``override``).
    override_tails: tuple[bytes, ...] = field(repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def build(
        cls,
        learner_ids: pa.Array,
        salt: str,
        stable: ServedModel | None,
        candidate: ServedModel | None,
        stable_codes: np.ndarray,
        candidate_codes: np.ndarray,
        *,
        provisional: bool = False,
    ) -> LearnerIndex:
        """From aligned arrays of ids and cohort codes (-1: the model has no cohort for them)."""
        n = len(learner_ids)
        bucket = buckets(learner_ids, salt).astype(np.uint16) if n else np.zeros(0, np.uint16)
        return cls(
            rows=dict(zip(learner_ids.to_pylist(), range(n), strict=True)),
            bucket=array("H", bucket.tobytes()),
            stable_code=array("h", stable_codes.astype(np.int16).tobytes()),
            candidate_code=array("h", candidate_codes.astype(np.int16).tobytes()),
            stable_tails=_tails(stable, Role.STABLE, provisional=provisional),
            candidate_tails=_tails(candidate, Role.CANDIDATE, provisional=provisional),
            override_tails=_tails(candidate, Role.OVERRIDE, provisional=provisional),
        )

    @classmethod
    def empty(cls) -> LearnerIndex:
        """No learners."""
        none = np.zeros(0, np.int16)
        return cls.build(pa.array([], pa.string()), "", None, None, none, none)


def cohort_codes(model: ServedModel | None, cohort_ids: np.ndarray) -> np.ndarray:
    """Each cohort id's code in ``model`` (-1 where the model serves no such cohort)."""
    out = np.full(len(cohort_ids), -1, dtype=np.int16)
    if model is None or not len(model.cohort_ids) or not len(cohort_ids):
        return out
    known = np.asarray(model.cohort_ids, dtype=np.int64)
    pos = np.clip(np.searchsorted(known, cohort_ids), 0, len(known) - 1)
    hit = known[pos] == cohort_ids
    out[hit] = pos[hit]
    return out


@dataclass(frozen=True, eq=False)
class ServingSnapshot:
    """Routing plus the stable and candidate models, indexed for single look-ups."""

    revision: int
    salt: str
    weight: float
    stable: ServedModel | None
    candidate: ServedModel | None
    #: The models' own learners (union of both models').
    learners: LearnerIndex = field(repr=False)
    #: Learners with stored events that neither model has seen, scored from those events.
    provisional: LearnerIndex = field(repr=False)
    #: Learners always routed to the candidate (QA, pilots), whatever the weight.
    overrides: frozenset[str] = frozenset()

    @property
    def threshold(self) -> int:
        """Buckets below this are routed to the candidate."""
        return candidate_threshold(self.weight) if self.candidate is not None else 0

    @classmethod
    def build(
        cls,
        *,
        revision: int,
        salt: str,
        weight: float,
        stable: ServedModel | None,
        candidate: ServedModel | None,
        overrides: frozenset[str] = frozenset(),
    ) -> ServingSnapshot:
        """Index both models' learners and precompute each learner's routing bucket.

        Everything per learner is vectorized except the one dict of learner ids; codes and
        buckets are packed into ``array`` objects (2 bytes a learner each).
        """
        parts = [m.learner_ids for m in (stable, candidate) if m is not None]
        union = parts[0] if parts else pa.array([], pa.string())
        if len(parts) == 2:
            extra = parts[1].filter(pc.invert(pc.is_in(parts[1], value_set=parts[0])))
            union = pa.concat_arrays([parts[0], extra]) if len(extra) else parts[0]
        n = len(union)

        def aligned(model: ServedModel | None) -> np.ndarray:
            out = np.full(n, -1, dtype=np.int16)
            if model is not None and n:
                pos = pc.index_in(model.learner_ids, value_set=union).to_numpy(zero_copy_only=False)
                out[pos.astype(np.int64)] = model.codes
            return out

        return cls(
            revision=revision,
            salt=salt,
            weight=weight,
            stable=stable,
            candidate=candidate,
            learners=LearnerIndex.build(
                union, salt, stable, candidate, aligned(stable), aligned(candidate)
            ),
            provisional=LearnerIndex.empty(),
            overrides=overrides if candidate is not None else frozenset(),
        )

    def with_weight(
        self, revision: int, weight: float, overrides: frozenset[str] = frozenset()
    ) -> ServingSnapshot:
        """The same models and salt at another weight and override list (no re-indexing)."""
        candidate_threshold(weight)
        return replace(
            self,
            revision=revision,
            weight=weight,
            overrides=overrides if self.candidate is not None else frozenset(),
        )

    def with_provisional(self, index: LearnerIndex) -> ServingSnapshot:
        """The same snapshot with another set of provisionally scored learners."""
        return replace(self, provisional=index)
