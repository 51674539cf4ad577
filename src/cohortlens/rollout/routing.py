"""Which learners a release routes to the candidate, and their outcomes by arm (pure).

**The** routing rule, used by the service (:mod:`cohortlens.serve.routing` re-exports it),
the controller and the simulation alike: a learner is on the candidate iff it is one of the
release's override learners (QA, pilots: role ``override``) or
``bucket_of(learner_id, salt) < round(weight × 10000)``
(:func:`cohortlens.experiments.assignment.buckets`). Consequences the tests check over
100,000 ids: the candidate's share tracks the weight (±0.5 points), the candidate set at a
weight contains the set at any lower weight (nobody moves back to stable as the weight
rises), and a new release (new salt) draws an independent split.

Because the split is a salted hash, candidate-routed and stable-routed learners form a
randomized comparison: :func:`guardrail_arms` reduces their outcomes to the sufficient
statistics the experiments module analyses.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from cohortlens.experiments.assignment import N_BUCKETS, buckets
from cohortlens.experiments.stats import SufficientStats
from cohortlens.rollout.checks import GuardrailArms


class Role(StrEnum):
    """The part a model plays for a learner (the ``model_role`` label of every metric)."""

    STABLE = "stable"
    CANDIDATE = "candidate"
    #: The candidate, for an override learner (its traffic is kept out of the analysis).
    OVERRIDE = "override"
    NONE = "none"


def candidate_threshold(weight: float) -> int:
    """Buckets below this go to the candidate: ``round(weight × 10000)``, in [0, 10000]."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"candidate weight == {weight}, must be in [0, 1]")
    return round(weight * N_BUCKETS)


def route(bucket: int, threshold: int, has_candidate: bool, *, override: bool = False) -> Role:
    """The role of a learner with ``bucket`` (``override``: it is an override learner)."""
    if not has_candidate:
        return Role.STABLE
    if override:
        return Role.OVERRIDE
    return Role.CANDIDATE if bucket < threshold else Role.STABLE


def candidate_mask(
    learner_ids: pa.Array | pa.ChunkedArray | Sequence[str], salt: str, weight: float
) -> npt.NDArray[np.bool_]:
    """True where a learner is routed to the candidate by weight at ``weight`` under ``salt``
    (override learners aside: :func:`override_mask`)."""
    return buckets(learner_ids, salt) < candidate_threshold(weight)


def override_mask(
    learner_ids: pa.Array | pa.ChunkedArray | Sequence[str], overrides: Sequence[str]
) -> npt.NDArray[np.bool_]:
    """True where a learner is one of the release's override learners."""
    ids = (
        learner_ids
        if isinstance(learner_ids, pa.Array | pa.ChunkedArray)
        else pa.array(list(learner_ids), pa.string())
    )
    if not overrides:
        return np.zeros(len(ids), dtype=bool)
    hit = pc.is_in(ids, value_set=pa.array(list(overrides), pa.string()))
    return np.asarray(pc.fill_null(hit, False).to_numpy(zero_copy_only=False), dtype=bool)


def guardrail_arms(
    learner_ids: pa.Array | pa.ChunkedArray | Sequence[str],
    values: npt.ArrayLike,
    as_of: npt.ArrayLike,
    *,
    since: datetime,
    until: datetime,
    salt: str,
    weight: float,
    overrides: Sequence[str] = (),
) -> GuardrailArms:
    """Sufficient statistics of ``values`` for stable- and candidate-routed learners.

    Only learners whose outcome was recorded in ``[since, until)`` count (outcomes of the
    analysis step); NaN values (unknown outcomes) are left out, and so are override
    learners (chosen by hand, not randomized).

    Args:
        learner_ids: one id per row.
        values: the outcome per row (0/1 for binary metrics), NaN when unknown.
        as_of: when each outcome was recorded, ``datetime64[us]`` in UTC.
        since, until: the window (timezone-aware).
        salt, weight: the release's routing.
    """
    v = np.asarray(values, dtype=np.float64)
    t = np.asarray(as_of, dtype="datetime64[us]")
    lo = np.datetime64(_naive_utc(since), "us")
    hi = np.datetime64(_naive_utc(until), "us")
    keep = (t >= lo) & (t < hi) & np.isfinite(v) & ~override_mask(learner_ids, overrides)
    cand = candidate_mask(learner_ids, salt, weight)
    return GuardrailArms(
        stable=SufficientStats.from_arrays(v[keep & ~cand]),
        candidate=SufficientStats.from_arrays(v[keep & cand]),
    )


def outcome_columns(table: pa.Table, metric: str) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """``(learner_id, values, as_of)`` of an outcomes table for :func:`guardrail_arms`.

    Booleans become 0/1, nulls NaN; ``as_of`` nulls never fall in a window.

    Raises:
        KeyError: the table has no column ``metric``.
    """
    if metric not in table.column_names:
        raise KeyError(
            f"outcomes have no column {metric!r} (columns: {', '.join(table.column_names)})"
        )
    col = table.column(metric)
    if pa.types.is_boolean(col.type):
        col = pc.cast(col, pa.float64())
    values = pc.fill_null(pc.cast(col, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    ts = table.column("as_of")
    if pa.types.is_timestamp(ts.type) and ts.type.tz is not None:
        ts = pc.cast(ts, pa.timestamp("us", tz="UTC"))
    ts_us = pc.cast(ts, pa.timestamp("us"))
    as_of = ts_us.to_numpy(zero_copy_only=False).astype("datetime64[us]")
    ids = pc.cast(table.column("learner_id"), pa.string()).combine_chunks()
    return ids, np.asarray(values, dtype=np.float64), as_of


def _naive_utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("window bounds must be timezone-aware")
    return at.astimezone(UTC).replace(tzinfo=None)


__all__ = [
    "Role",
    "candidate_mask",
    "candidate_threshold",
    "guardrail_arms",
    "outcome_columns",
    "override_mask",
    "route",
]
