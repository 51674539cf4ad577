"""The service's state and operations, independent of HTTP framing.

:class:`CohortService` owns the store (a session store: an embedded DuckDB file is opened only
for each unit of work, so other processes share it; :mod:`cohortlens.store.shared`), the
current :class:`~cohortlens.serve.snapshot.ServingSnapshot`, the metrics, the exposure buffer,
the spool (:mod:`cohortlens.serve.spool`) and the fault-injection switches. The HTTP routes
(:mod:`cohortlens.serve.api`) and the single-look-up fast path (:mod:`cohortlens.serve.edge`)
both call it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cohortlens.errors import CohortlensError, InputError
from cohortlens.experiments.assignment import (
    EXPOSURE_SCHEMA,
    HASH_VERSION,
    ExperimentDesign,
    assign,
)
from cohortlens.serve.experiments import load_experiments
from cohortlens.serve.metrics import ServiceMetrics
from cohortlens.serve.routing import Role
from cohortlens.serve.settings import ServeSettings
from cohortlens.serve.snapshot import LearnerIndex, ServedModel, ServingSnapshot, cohort_codes
from cohortlens.serve.spool import Segment, Spool, SpoolFullError
from cohortlens.store.base import StoreBusyError
from cohortlens.store.shared import as_session_store

log = logging.getLogger("cohortlens.serve")
T = TypeVar("T")

#: Longest learner id accepted in a path or body.
MAX_LEARNER_ID_CHARS = 256
#: Learners scored per step when scoring learners the served models have not seen.
PROVISIONAL_CHUNK = 5_000
#: Longest a background poll or flush waits for an embedded store another process holds.
BACKGROUND_WAIT_S = 0.5
#: Exposure records kept in memory while neither the spool nor the store takes them.
MAX_BUFFERED_EXPOSURES = 100_000


class FieldError(InputError):
    """Malformed request input, naming the offending field (HTTP 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFoundError(CohortlensError):
    """An unknown learner, model or experiment (HTTP 404)."""


class StateConflictError(CohortlensError):
    """A valid request the current routing state refuses, e.g. promote without candidate (409)."""


class UnavailableError(CohortlensError):
    """The service cannot answer yet, e.g. no active model (HTTP 503)."""


class ModelFailureError(RuntimeError):
    """A routed model failed to answer (injected or real); the stable model answers instead."""


@dataclass
class Faults:
    """Injected faults for the candidate (chaos tests of the rollout controller)."""

    candidate_error_rate: float = 0.0
    candidate_latency_ms: float = 0.0


@dataclass(frozen=True)
class Lookup:
    """The answer to one look-up: HTTP status, JSON body, and the routed model."""

    status: int
    body: bytes
    role: str
    version: str
    delay_s: float = 0.0


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class CohortService:
    """Look-ups, batch assignment, experiment assignment, event intake and admin actions."""

    def __init__(self, settings: ServeSettings, store: Any) -> None:
        self.settings = settings
        self.store = as_session_store(store)
        self.metrics = ServiceMetrics()
        self.faults = Faults()
        self.experiments: dict[str, ExperimentDesign] = load_experiments(settings.experiments_path)
        self.spool = (
            Spool(settings.spool_dir, max_bytes=settings.spool_max_bytes)
            if settings.spool_dir is not None
            else None
        )
        self._exposures: list[tuple[str, str, str, int, datetime]] = []
        self._exposure_lock = threading.Lock()
        self._spool_full = False
        self._drain_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._applied: dict[str, dict[str, Any]] = {}  # reports of applied event segments
        self._rng = random.Random()
        self._models: dict[int, ServedModel] = {}
        self._stats: dict[int, Any] = {}
        self._scanned_ingest = 0  # newest ingest searched for learners the models lack
        self._provisional_ids = pa.array([], pa.string())
        self._store_busy_since: float | None = None
        self._seen_token: tuple[int, ...] | None = None
        self.snapshot: ServingSnapshot | None = None
        self.ready = False

    # -- store access ---------------------------------------------------------------------
    def with_store(
        self, fn: Callable[[Any], T], *, read_only: bool = False, wait_s: float | None = None
    ) -> T:
        """Run ``fn(store)`` in one unit of work on the store.

        An embedded store held by another process is waited for up to ``wait_s`` (default
        ``settings.store_wait_s``), then :class:`~cohortlens.store.base.StoreBusyError`.
        """
        wait = self.settings.store_wait_s if wait_s is None else wait_s
        try:
            with self.store.session(read_only=read_only, wait_s=wait) as store:
                result = fn(store)
        except StoreBusyError:
            self._note_busy(True)
            raise
        self._note_busy(False)
        return result

    def _note_busy(self, busy: bool) -> None:
        """Log once when another process starts and stops holding the store."""
        import time

        if busy and self._store_busy_since is None:
            self._store_busy_since = time.monotonic()
            self.metrics.store_busy.set(1)
            log.info("the store is held by another process; serving from memory meanwhile")
        elif not busy and self._store_busy_since is not None:
            held = time.monotonic() - self._store_busy_since
            self._store_busy_since = None
            self.metrics.store_busy.set(0)
            log.info("the store is free again (held elsewhere for %.1f s)", held)

    # -- loading --------------------------------------------------------------------------
    def _served(self, store: Any, model_id: int) -> ServedModel:
        cached = self._models.get(model_id)
        if cached is None:
            cached = ServedModel.build(
                model_id, store.model(model_id), store.read_assignments(model_id)
            )
        return cached

    def refresh(self, *, force: bool = False, wait_s: float | None = None) -> bool:
        """Load the routing record, any model it names that is not loaded yet, and learners
        ingested since the last call that the served models have not seen.

        Returns True when the served snapshot changed. Runs in a worker thread; each swap is
        one reference assignment, so requests never see a half-built state. The first call
        may create the routing record (a write); later ones only read.
        """
        with self._refresh_lock:
            first = self.snapshot is None
            token = self.store.change_token()
            if not force and not first and token is not None and token == self._seen_token:
                return False  # nobody wrote the file since the last poll: no need to open it
            changed = self.with_store(
                lambda st: self._load_routing(st, force=force),
                read_only=not first,
                wait_s=wait_s,
            )
            provisional = self._update_provisional(wait_s=wait_s)
            self._seen_token = token
            return provisional or changed

    def _load_routing(self, store: Any, *, force: bool) -> bool:
        revision = store.routing_revision()
        current = self.snapshot
        if not force and current is not None and current.revision == revision:
            return False
        routing = store.routing()
        stable_id = routing.stable_model_id
        cand_id = routing.candidate_model_id
        if (
            not force
            and current is not None
            and current.salt == routing.salt
            and _model_id(current.stable) == stable_id
            and _model_id(current.candidate) == cand_id
        ):
            snap = current.with_weight(
                routing.revision, routing.candidate_weight, frozenset(routing.overrides)
            )
        else:
            stable = self._served(store, stable_id) if stable_id is not None else None
            cand = self._served(store, cand_id) if cand_id is not None else None
            self._models = {m.model_id: m for m in (stable, cand) if m is not None}
            snap = ServingSnapshot.build(
                revision=routing.revision,
                salt=routing.salt,
                weight=routing.candidate_weight if cand is not None else 0.0,
                stable=stable,
                candidate=cand,
                overrides=frozenset(routing.overrides),
            )
            self._scanned_ingest = 0  # other models: every unseen learner is scored again
            self._provisional_ids = pa.array([], pa.string())
        self.snapshot = snap
        self.ready = snap.stable is not None
        self.metrics.set_routing(
            snap.revision, snap.weight, _model_id(snap.stable), _model_id(snap.candidate)
        )
        log.info(
            "serving routing revision %d: stable=%s candidate=%s weight=%.4f",
            snap.revision,
            _model_id(snap.stable),
            _model_id(snap.candidate),
            snap.weight,
        )
        return True

    # -- learners the served models have not seen ------------------------------------------
    def _update_provisional(self, *, wait_s: float | None = None) -> bool:
        """Score learners of new ingests that neither served model has an assignment for.

        They are answered with ``"provisional": true`` until a feature run and ``discover``
        include them. Their features come from their stored events against the stable
        model's feature-run statistics, as in ``POST /v1/cohorts/assign``; at most
        ``max_provisional_learners`` are kept.
        """
        snap = self.snapshot
        if snap is None or snap.stable is None:
            return False
        models = [m.model_id for m in (snap.stable, snap.candidate) if m is not None]
        newest, fresh = self.with_store(
            lambda st: self._unseen(st, models), read_only=True, wait_s=wait_s
        )
        if not len(fresh):
            self._scanned_ingest = max(self._scanned_ingest, newest)
            return False
        try:
            stats = self.global_stats()
        except UnavailableError as exc:  # a model fitted without stored statistics
            if newest > self._scanned_ingest:
                log.warning("learners the model has not seen cannot be scored: %s", exc)
            self._scanned_ingest = max(self._scanned_ingest, newest)
            return False
        ids, stable_c, cand_c = [], [], []
        for start in range(0, len(fresh), PROVISIONAL_CHUNK):
            chunk = fresh.slice(start, PROVISIONAL_CHUNK)
            events = self.with_store(
                functools.partial(_learner_events, ids=chunk), read_only=True, wait_s=wait_s
            )
            scored = self._score_events(events, stats, snap)
            if scored is not None:
                ids.append(scored[0])
                stable_c.append(scored[1])
                cand_c.append(scored[2])
        if self.snapshot is not snap:  # routing moved on meanwhile: the next poll rescores
            return False
        new_ids = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
        keep = pc.invert(pc.is_in(self._provisional_ids, value_set=new_ids))
        old = snap.provisional
        old_ids = self._provisional_ids.filter(keep)
        old_rows = np.array([old.rows[x] for x in old_ids.to_pylist()], dtype=np.int64)
        all_ids = pa.concat_arrays([old_ids, new_ids])
        stable_codes = np.concatenate(
            [np.frombuffer(old.stable_code, np.int16)[old_rows], *stable_c]
        )
        cand_codes = np.concatenate(
            [np.frombuffer(old.candidate_code, np.int16)[old_rows], *cand_c]
        )
        index = LearnerIndex.build(
            all_ids,
            snap.salt,
            snap.stable,
            snap.candidate,
            stable_codes,
            cand_codes,
            provisional=True,
        )
        self._provisional_ids = all_ids
        self._scanned_ingest = max(self._scanned_ingest, newest)
        self.snapshot = snap.with_provisional(index)
        self.metrics.provisional_learners.set(len(index))
        log.info("%d learner(s) the served models have not seen answered provisionally", len(index))
        return True

    def _unseen(self, store: Any, models: list[int]) -> tuple[int, pa.Array]:
        newest = int(store.max_ingest_id())
        if newest <= self._scanned_ingest:
            return newest, pa.array([], pa.string())
        room = self.settings.max_provisional_learners
        found = store.unassigned_learners(
            models, after_ingest_id=self._scanned_ingest, limit=room + 1
        )
        if len(found) > room:
            log.warning(
                "more than %d learners the served models have not seen; answering the first "
                "%d provisionally (run `cohortlens features` and `cohortlens discover`)",
                room,
                room,
            )
            found = found.slice(0, room)
        return newest, found

    def _score_events(
        self, events: pa.Table, stats: Any, snap: ServingSnapshot
    ) -> tuple[pa.Array, np.ndarray, np.ndarray] | None:
        """Cohort codes under both served models of the learners of ``events``."""
        from cohortlens.features import compute_features

        known = pa.array(stats.items.domains.to_pylist(), pa.string())
        usable = events.filter(pc.is_in(events.column("domain"), value_set=known))
        if usable.num_rows < events.num_rows:
            self.metrics.provisional_skipped_events.inc(events.num_rows - usable.num_rows)
        if usable.num_rows == 0:
            return None
        features = compute_features(usable, stats=stats)
        columns = _model_columns(features, snap.stable, snap.candidate)  # type: ignore[arg-type]
        everyone = np.ones(features.num_rows, dtype=bool)
        assert snap.stable is not None
        stable = cohort_codes(snap.stable, snap.stable.model.predict(_rows(columns, everyone)))
        cand = np.full(features.num_rows, -1, dtype=np.int16)
        if snap.candidate is not None:
            cand = cohort_codes(
                snap.candidate, snap.candidate.model.predict(_rows(columns, everyone))
            )
        ids = features.column("learner_id").combine_chunks().cast(pa.string())
        return ids, stable, cand

    # -- single look-up (the hot path) -----------------------------------------------------
    def lookup(self, learner_id: str) -> Lookup:
        """The cohort of one learner under the current routing, as a ready JSON body."""
        snap = self.snapshot
        if snap is None or snap.stable is None:
            return Lookup(503, _error("unavailable", "no active cohort model"), "none", "none")
        if not learner_id or len(learner_id) > MAX_LEARNER_ID_CHARS:
            return Lookup(
                422,
                _error(
                    "invalid_request",
                    f"learner_id: must be 1..{MAX_LEARNER_ID_CHARS} characters",
                    field="path.learner_id",
                ),
                "none",
                "none",
            )
        index = snap.learners
        row = index.rows.get(learner_id)
        if row is None:
            index = snap.provisional
            row = index.rows.get(learner_id)
            if row is None:
                return Lookup(
                    404,
                    _error("not_found", "unknown learner_id for the served models"),
                    Role.STABLE.value,
                    str(snap.stable.model_id),
                )
        head = b'{"learner_id":' + json.dumps(learner_id).encode()
        cand = snap.candidate
        override = bool(snap.overrides) and learner_id in snap.overrides
        if cand is not None and (override or index.bucket[row] < snap.threshold):
            role = Role.OVERRIDE.value if override else Role.CANDIDATE.value
            tails = index.override_tails if override else index.candidate_tails
            version = str(cand.model_id)
            code = index.candidate_code[row]
            delay = self.faults.candidate_latency_ms / 1000.0
            if code >= 0:
                try:
                    self._maybe_fail()
                    return Lookup(200, head + tails[code], role, version, delay)
                except ModelFailureError:
                    self.metrics.model_failures.labels(role, version).inc()
            code = index.stable_code[row]
            if code < 0:
                return Lookup(404, _error("not_found", "unknown learner_id"), role, version, delay)
            return Lookup(200, head + index.stable_tails[code], role, version, delay)
        code = index.stable_code[row]
        version = str(snap.stable.model_id)
        if code < 0:
            return Lookup(404, _error("not_found", "unknown learner_id"), "stable", version)
        return Lookup(200, head + index.stable_tails[code], "stable", version)

    def _maybe_fail(self) -> None:
        rate = self.faults.candidate_error_rate
        if rate > 0.0 and self._rng.random() < rate:
            raise ModelFailureError("injected candidate failure")

    # -- batch assignment -----------------------------------------------------------------
    def assign_features(self, features: pa.Table) -> tuple[pa.Table, dict[str, int]]:
        """Route and assign learners given by feature rows (learner_id + feature columns).

        Returns the assignments (learner_id, cohort_id, archetype, model_version, model_role)
        in input order, and the number of learners answered per routed role.
        """
        snap = self._require_snapshot()
        ids = features.column("learner_id")
        n = features.num_rows
        stable = snap.stable
        assert stable is not None
        role = np.zeros(n, dtype=bool)
        override = np.zeros(n, dtype=bool)
        cand = snap.candidate
        if cand is not None and n:
            from cohortlens.rollout.routing import candidate_mask, override_mask

            if snap.threshold > 0:
                role = candidate_mask(ids, snap.salt, snap.weight)
            if snap.overrides:
                override = override_mask(ids, tuple(snap.overrides))
                role = role | override
        cohort = np.empty(n, dtype=np.int64)
        version = np.full(n, stable.model_id, dtype=np.int64)
        columns = _model_columns(features, stable, cand)
        if (~role).any():
            cohort[~role] = stable.model.predict(_rows(columns, ~role))
        if role.any() and cand is not None:
            subset = _rows(columns, role)
            try:
                self._maybe_fail()
                cohort[role] = cand.model.predict(subset)
                version[role] = cand.model_id
            except Exception as exc:  # graceful degradation: the stable model answers
                log.warning("candidate model %d failed on a batch: %s", cand.model_id, exc)
                self.metrics.model_failures.labels("candidate", str(cand.model_id)).inc()
                cohort[role] = stable.model.predict(subset)
        table = pa.table(
            {
                "learner_id": ids,
                "cohort_id": pa.array(cohort, pa.int32()),
                "archetype": _archetypes(
                    cohort, role, stable, cand if cand is not None and role.any() else None
                ),
                "model_version": pa.array(version, pa.int64()),
                "model_role": pa.DictionaryArray.from_arrays(
                    pa.array(role.astype(np.int8) + override.astype(np.int8)),
                    pa.array([Role.STABLE.value, Role.CANDIDATE.value, Role.OVERRIDE.value]),
                ).cast(pa.string()),
            }
        )
        routed = {"stable": int((~role).sum()), "candidate": int((role & ~override).sum())}
        if override.any():
            routed["override"] = int(override.sum())
        return table, routed

    def out_of_distribution(self, features: pa.Table, assigned: pa.Table) -> dict[str, Any]:
        """How far the learners of a batch lie from each answering model's training data.

        Per role that answered (stable; candidate, override learners included): the share of
        learners farther from every centre than the model's training 99th-percentile distance
        and the PSI per feature (:func:`cohortlens.cohorts.ood_summary`), with a warning above
        ``settings.ood_max_share``; counted in the ``cohortlens_ood_*`` metrics.
        """
        from cohortlens.cohorts import ood_summary

        snap = self._require_snapshot()
        roles = assigned.column("model_role").to_numpy(zero_copy_only=False)
        on_candidate = roles != Role.STABLE.value
        out: dict[str, Any] = {}
        for role, served, mask in (
            (Role.STABLE.value, snap.stable, ~on_candidate),
            (Role.CANDIDATE.value, snap.candidate, on_candidate),
        ):
            if served is None or not mask.any():
                continue
            rows = features if mask.all() else features.filter(pa.array(mask))
            summary = ood_summary(served.model, rows, max_share=self.settings.ood_max_share)
            version = str(served.model_id)
            self.metrics.ood_assessed.labels(role, version).inc(summary.n_assessed)
            self.metrics.ood_beyond.labels(role, version).inc(summary.n_beyond)
            if summary.warning:
                self.metrics.ood_warnings.labels(role, version).inc()
                log.warning("batch assignment, %s model %s: %s", role, version, summary.message)
            out[role] = summary.to_dict() | {"model_version": served.model_id}
        return out

    def _require_snapshot(self) -> ServingSnapshot:
        snap = self.snapshot
        if snap is None or snap.stable is None:
            raise UnavailableError("no active cohort model")
        return snap

    def global_stats(self) -> Any:
        """Item difficulties and retention prior of the stable model's feature run.

        New learners' features are computed against these, so they are comparable with the
        features the model was fitted on.
        """
        from cohortlens.features import stats_of

        snap = self._require_snapshot()
        assert snap.stable is not None
        key = snap.stable.model_id
        cached = self._stats.get(key)
        if cached is not None:
            return cached
        run = snap.stable.model.feature_run_
        if run is None:
            raise UnavailableError("the stable model names no feature run to score events with")
        _, table = self.with_store(lambda s: s.read_features(int(run)), read_only=True)
        stats = stats_of(table)
        if stats is None:
            raise UnavailableError(
                f"feature run {run} carries no global statistics (made by an older release); "
                "rerun `cohortlens features` and `cohortlens discover`"
            )
        self._stats = {key: stats}
        return stats

    def warm_up(self) -> float:
        """Compile/load the feature and assignment kernels once, before the first request.

        Returns the seconds spent (numba loads compiled kernels from its cache on first use).
        """
        import time

        from cohortlens.events import EVENT_SCHEMA
        from cohortlens.features import compute_features

        start = time.perf_counter()
        snap = self.snapshot
        if snap is None or snap.stable is None:
            return 0.0
        try:
            stats = self.global_stats()
        except UnavailableError:
            stats = None
        domains = ["d1", "d2"]
        items = [f"i{i}" for i in range(7)]
        if stats is not None and len(stats.items.domains) and len(stats.items.item_ids):
            domains = [str(stats.items.domains[0])] * 2
            items = [str(x) for x in stats.items.item_ids.to_pylist()[:7]]
        n = 30
        events = (
            pa.table(
                {
                    "event_id": [f"w{i}" for i in range(n)],
                    "learner_id": ["warm-a"] * (n // 2) + ["warm-b"] * (n - n // 2),
                    "ts": pa.array(
                        [1_735_000_000_000_000 + i * 86_400_000_000 for i in range(n)],
                        pa.timestamp("us", tz="UTC"),
                    ),
                    "domain": domains * (n // 2),
                    "item_id": [items[i % len(items)] for i in range(n)],
                    "outcome": [float(i % 2) for i in range(n)],
                    "duration_s": [30.0] * n,
                }
            )
            .select(EVENT_SCHEMA.names)
            .cast(EVENT_SCHEMA)
        )
        feats = compute_features(events, stats=stats)
        self.assign_features(feats)
        return time.perf_counter() - start

    # -- experiments ----------------------------------------------------------------------
    def experiment_assignment(self, key: str, learner_id: str) -> dict[str, Any]:
        """Deterministic variant of one learner; an assigned learner's exposure is recorded
        (in the spool's journal, or buffered for the store) before the variant is returned."""
        design = self.experiments.get(key)
        if design is None:
            raise NotFoundError(f"unknown experiment {key!r}")
        cohorts = None
        if design.target_cohorts is not None:
            cohort = self._cohort_of(learner_id)
            cohorts = [cohort]
        result = assign([learner_id], design, cohorts).to_pylist()[0]
        if result["variant"] is not None:
            record = (learner_id, key, result["variant"], int(result["bucket"]), datetime.now(UTC))
            if self.spool is not None:
                if self._spool_full:
                    raise UnavailableError(
                        "the spool is full (the store has been held elsewhere for too long); "
                        "no variant is handed out whose exposure could not be recorded"
                    )
                self.spool.record_exposure(*record)
            else:
                with self._exposure_lock:
                    if len(self._exposures) >= MAX_BUFFERED_EXPOSURES:
                        raise UnavailableError(
                            "exposure records cannot be written (the store is unreachable); "
                            "no variant is handed out whose exposure could not be recorded"
                        )
                    self._exposures.append(record)
        return {
            "experiment": key,
            "learner_id": learner_id,
            "variant": result["variant"],
            "status": result["status"],
            "bucket": int(result["bucket"]),
            "hash_version": HASH_VERSION,
        }

    def _cohort_of(self, learner_id: str) -> str | None:
        found = self.lookup(learner_id)
        if found.status != 200:
            return None
        return str(json.loads(found.body)["cohort_id"])

    def flush_exposures(self, *, wait_s: float | None = BACKGROUND_WAIT_S) -> int:
        """Seal the exposure journal into a spool segment, then apply the spool.

        Returns the exposure records applied to the store by this call. Without a spool
        (PostgreSQL), buffered records go to the store directly and stay buffered on failure.
        """
        if self.spool is not None:
            self.spool.seal()
            self._spool_full = self.spool.full()
            return self.drain(wait_s=wait_s)["exposures"]
        with self._exposure_lock:
            pending, self._exposures = self._exposures, []
        if not pending:
            return 0
        table = _exposure_table(pending)
        try:
            written = int(self.with_store(lambda s: s.log_exposures(table), wait_s=wait_s))
        except Exception:
            with self._exposure_lock:  # keep them for the next flush: nothing is lost
                self._exposures[:0] = pending
            raise
        self.metrics.exposures_logged.inc(written)
        return written

    def close(self, *, wait_s: float | None = None) -> None:
        """Apply what can be applied, seal the journal and let the store go."""
        try:
            self.flush_exposures(wait_s=self.settings.store_wait_s if wait_s is None else wait_s)
        finally:
            if self.spool is not None:
                self.spool.close()
            self.store.close()

    def drain(self, *, wait_s: float | None = BACKGROUND_WAIT_S) -> dict[str, int]:
        """Apply spooled segments to the store, oldest first, each in one transaction.

        A segment the store records as applied already (the process died after the commit)
        is deleted without being applied again. Returns the records applied per kind; raises
        :class:`StoreBusyError` when the store stays held (the segments wait on disk).
        """
        applied = {"exposures": 0, "events": 0}
        if self.spool is None:
            return applied
        with self._drain_lock:
            segments = self.spool.pending()
            if not segments:
                return applied

            def apply_all(store: Any) -> None:
                done = store.spool_applied([seg.name for seg in segments])
                for seg in segments:
                    if seg.name not in done:
                        applied[seg.kind] += self._apply_segment(store, seg)
                    self.spool.remove(seg)  # type: ignore[union-attr]

            try:
                self.with_store(apply_all, wait_s=wait_s)
            finally:
                self.metrics.spool_segments.set(len(self.spool.pending()))
        self.metrics.exposures_logged.inc(applied["exposures"])
        return applied

    def _apply_segment(self, store: Any, seg: Segment) -> int:
        from cohortlens.events import ingest_sources

        assert self.spool is not None
        read = self.spool.read(seg)
        if read is None:
            return 0
        table, meta = read
        if seg.kind == "exposures":
            return int(store.log_exposures(table, spool_segment=seg.name))
        now = datetime.fromisoformat(meta["now"])
        source = source_of(table, meta["source"])
        report = ingest_sources(store, [source], now=now, spool_segment=seg.name)
        self._applied[seg.name] = _intake_counts(report.to_dict())
        while len(self._applied) > 1000:  # answers nobody waits for any more
            self._applied.pop(next(iter(self._applied)))
        return int(report.rows_read)

    # -- event intake ---------------------------------------------------------------------
    def ingest_events(self, rows: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        """Validate and store events posted to ``/v1/events``: (HTTP status, body).

        200: stored; the counts are the ingest's, and learners the served models have not
        seen are answered provisionally from now on. 202: another process holds the store;
        the rows wait in the spool (durable) and are stored when it is free; the counts are
        from validation, duplicates unknown yet. Docs: SERVING.md, "When posted events count".
        """
        from cohortlens.events import ingest_sources

        now = datetime.now(UTC)
        name = f"api:/v1/events@{now.isoformat()}"
        raw = raw_events_table(rows)
        if self.spool is None:
            report = self.with_store(lambda st: ingest_sources(st, [source_of(raw, name)], now=now))
            self._after_intake()
            return 200, _intake_counts(report.to_dict()) | {"status": "stored"}
        try:
            seg = self.spool.put_events(raw, {"now": now.isoformat(), "source": name})
        except SpoolFullError as exc:
            raise UnavailableError(str(exc)) from exc
        with contextlib.suppress(StoreBusyError):
            self.drain(wait_s=self.settings.store_wait_s)
        done = self._applied.pop(seg.name, None)
        if done is not None:
            self._after_intake()
            return 200, done | {"status": "stored"}
        return 202, _validated_counts(raw, name, now) | {"status": "queued", "duplicates": None}

    def _after_intake(self) -> None:
        """Make learners just stored visible before the intake request returns."""
        try:
            self._update_provisional(wait_s=self.settings.store_wait_s)
        except Exception as exc:  # the next poll retries; the events are stored
            log.warning("scoring new learners failed (%s); the next poll retries", exc)

    # -- admin ----------------------------------------------------------------------------
    def routing_dict(self) -> dict[str, Any]:
        """The stored routing record as JSON-ready data."""
        routing = self.with_store(lambda s: s.routing())
        return routing_to_dict(routing)

    def set_faults(self, error_rate: float, latency_ms: float) -> Faults:
        """Inject faults into the candidate (only reachable with fault injection enabled)."""
        if not 0.0 <= error_rate <= 1.0:
            raise InputError("candidate_error_rate: must be in [0, 1]")
        if not 0.0 <= latency_ms <= 60_000:
            raise InputError("candidate_latency_ms: must be in [0, 60000]")
        self.faults = Faults(error_rate, latency_ms)
        return self.faults


#: The fields of an event posted to the service, in the order of a raw batch's columns.
EVENT_FIELDS = ("learner_id", "ts", "domain", "item_id", "outcome", "duration_s", "event_id")


def events_source(rows: list[dict[str, Any]], name: str) -> Any:
    """Posted events (dicts of :data:`EVENT_FIELDS`) as an in-memory ingest source."""
    return source_of(raw_events_table(rows), name)


def source_of(table: pa.Table, name: str) -> Any:
    """A raw table of posted events (:func:`raw_events_table`) as an ingest source."""
    from cohortlens.events.source import RawBatch, Source

    batch = RawBatch(source=name, table=table)
    return Source(name=name, columns=EVENT_FIELDS, batches=lambda: iter([batch]))


def raw_events_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Posted events as a raw batch's table: each field as text, line numbers, raw JSON."""
    from cohortlens.events.source import LINE_COLUMN, RAW_COLUMN

    def text(v: Any) -> str | None:
        if v is None:
            return None
        if isinstance(v, bool):
            return "1" if v else "0"
        return str(v)

    table = pa.table(
        {
            **{f: pa.array([text(r.get(f)) for r in rows], pa.string()) for f in EVENT_FIELDS},
            LINE_COLUMN: pa.array(range(1, len(rows) + 1), pa.int64()),
            RAW_COLUMN: pa.array(
                [json.dumps(r, separators=(",", ":"), default=str) for r in rows], pa.string()
            ),
        }
    )
    return table


def _learner_events(store: Any, *, ids: pa.Array) -> pa.Table:
    return store.learner_events(ids)


def _intake_counts(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("rows_read", "accepted", "rejected", "duplicates", "rejected_by_reason")
    return {k: report[k] for k in keys}


def _validated_counts(raw: pa.Table, name: str, now: datetime) -> dict[str, Any]:
    """Counts of a posted batch from validation alone (before the store has seen it)."""
    from cohortlens.events import validate_batch
    from cohortlens.events.source import RawBatch

    checked = validate_batch(RawBatch(source=name, table=raw), now=now)
    reasons = pc.value_counts(checked.rejected.column("reason")).to_pylist()
    return {
        "rows_read": raw.num_rows,
        "accepted": checked.accepted.num_rows,
        "rejected": checked.rejected.num_rows,
        "rejected_by_reason": {str(p["values"]): int(p["counts"]) for p in reasons},
    }


def _exposure_table(pending: list[tuple[str, str, str, int, datetime]]) -> pa.Table:
    lids, keys, variants, bucket, at = zip(*pending, strict=True)
    return pa.table(
        {
            "learner_id": pa.array(lids, pa.string()),
            "experiment": pa.array(keys, pa.string()),
            "variant": pa.array(variants, pa.string()),
            "layer": pa.nulls(len(pending), pa.string()),
            "bucket": pa.array(bucket, pa.int32()),
            "hash_version": pa.array([HASH_VERSION] * len(pending), pa.string()),
            "exposed_at": pa.array(at, pa.timestamp("us", tz="UTC")),
        },
        schema=EXPOSURE_SCHEMA,
    )


def _model_columns(
    features: pa.Table, stable: ServedModel, cand: ServedModel | None
) -> dict[str, np.ndarray]:
    """The columns either model reads, converted to float arrays once per batch (splitting
    NumPy arrays by role is far cheaper than filtering the whole Arrow table twice)."""
    names = {"n_events"}
    for served in (stable, cand):
        if served is not None:
            names.update(spec.column for spec in served.model.features_)
    return {
        name: pc.fill_null(features.column(name).cast(pa.float64()), np.nan).to_numpy()
        for name in names
        if name in features.column_names
    }


def _rows(columns: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[mask] for name, values in columns.items()}


def _archetypes(
    cohort: np.ndarray, on_candidate: np.ndarray, stable: ServedModel, cand: ServedModel | None
) -> pa.Array:
    """Archetype name of each (model, cohort id), vectorized through one dictionary array."""
    labels: list[str] = []
    codes = np.zeros(len(cohort), dtype=np.int32)
    for model, mask in ((stable, ~on_candidate), (cand, on_candidate)):
        if model is None or not mask.any():
            continue
        names = model.model.names_
        ids = np.array(sorted(int(k) for k in names), dtype=np.int64)
        offset = len(labels)
        labels.extend(str(names[int(k)]) for k in ids)
        labels.append("")  # cohorts the model does not name
        pos = np.searchsorted(ids, cohort[mask])
        pos_c = np.minimum(pos, max(len(ids) - 1, 0))
        known = (pos < len(ids)) & (ids[pos_c] == cohort[mask]) if len(ids) else pos < 0
        codes[mask] = offset + np.where(known, pos_c, len(ids))
    dictionary = pa.array(labels or [""], pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(codes), dictionary).cast(pa.string())


def routing_to_dict(routing: Any) -> dict[str, Any]:
    """A store ``Routing`` as JSON-ready data."""
    return {
        "stable_model_id": routing.stable_model_id,
        "candidate_model_id": routing.candidate_model_id,
        # percent, like every weight a person reads or types (the store keeps the fraction)
        "candidate_weight_percent": round(routing.candidate_weight * 100.0, 6),
        "salt": routing.salt,
        "release_id": routing.release_id,
        "revision": routing.revision,
        "updated_at": routing.updated_at.isoformat() if routing.updated_at else None,
        "updated_by": routing.updated_by,
        "reason": routing.reason,
        "overrides": list(getattr(routing, "overrides", ())),
    }


def _model_id(model: ServedModel | None) -> int | None:
    return model.model_id if model is not None else None


def _error(code: str, message: str, *, field: str | None = None) -> bytes:
    body: dict[str, Any] = {"error": code, "message": message}
    if field is not None:
        body["field"] = field
    return _json(body)


def error_body(code: str, message: str, *, field: str | None = None) -> bytes:
    """The JSON error body every route uses: ``{"error", "message"[, "field"]}``."""
    return _error(code, message, field=field)
