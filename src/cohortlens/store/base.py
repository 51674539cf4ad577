"""The store interface: what the rest of cohortlens needs from persistence.

DuckDB (embedded, the default) implements it in :mod:`cohortlens.store.duckdb`; PostgreSQL
(:mod:`cohortlens.store.postgres`) fills the same protocol when several service replicas and a
rollout controller share state.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pyarrow as pa

from cohortlens.errors import StoreError
from cohortlens.events.session import IngestSession

#: Statuses of a stored cohort model (``cohort_models.status``).
MODEL_STATUSES: tuple[str, ...] = ("active", "candidate", "retired")
#: Schema metadata key of ``read_quarantine``'s result: the rows matching its filters in all.
QUARANTINE_TOTAL_KEY = b"cohortlens.total_rows"
#: Bytes of randomness in a release salt (``Routing.salt``, hex: twice as many characters).
SALT_BYTES = 8


def with_quarantine_total(rows: pa.Table, schema: pa.Schema, limit: int | None) -> pa.Table:
    """Rows of a quarantine query (``_state_sql.quarantine_query``: a ``_total`` column, at
    least one row when any matches) -> at most ``limit`` rows of ``schema``, the total kept in
    the schema metadata."""
    total = int(rows.column("_total")[0].as_py()) if rows.num_rows else 0
    table = rows.drop_columns(["_total"]).cast(schema)
    if limit is not None:
        table = table.slice(0, max(limit, 0))
    return table.replace_schema_metadata({QUARANTINE_TOTAL_KEY: str(total).encode()})


def quarantine_total(table: pa.Table) -> int:
    """How many quarantined rows matched a ``read_quarantine`` call (beyond its limit)."""
    meta = table.schema.metadata or {}
    return int(meta.get(QUARANTINE_TOTAL_KEY, str(table.num_rows).encode()))


def require_existing(url: str) -> None:
    """Refuse a DuckDB file that does not exist: commands that only read, or need earlier
    results, never leave an empty store behind a typo (checked before DuckDB is loaded)."""
    if url != ":memory:" and not Path(url).exists():
        raise StoreError(
            f"no store at {url}: nothing has been ingested there yet "
            "(check --db / $COHORTLENS_DB, or run `cohortlens ingest` first)"
        )


class ConflictError(StoreError):
    """An optimistic-concurrency check failed: the state moved on since it was read."""


class StoreBusyError(StoreError):
    """The embedded store stayed held by another process for the whole wait (retry later)."""


@dataclass(frozen=True)
class Routing:
    """Which models serve learners: the stable model and a candidate on a fraction of learners.

    ``revision`` increments on every change (replicas poll it); ``release_id`` and ``salt``
    change on every new release, so each release hashes learners afresh.
    """

    stable_model_id: int | None
    candidate_model_id: int | None
    candidate_weight: float  # fraction of learners routed to the candidate, in [0, 1]
    salt: str  # hashing salt of the current release
    release_id: int
    revision: int
    updated_at: datetime
    updated_by: str
    reason: str | None
    #: Learner ids routed to the candidate whatever the weight (QA, pilots), sorted.
    overrides: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``updated_at`` as ISO 8601)."""
        return {
            "stable_model_id": self.stable_model_id,
            "candidate_model_id": self.candidate_model_id,
            "candidate_weight": self.candidate_weight,
            "salt": self.salt,
            "release_id": self.release_id,
            "revision": self.revision,
            "updated_at": self.updated_at.isoformat(),
            "updated_by": self.updated_by,
            "reason": self.reason,
            "overrides": list(self.overrides),
        }


@dataclass(frozen=True)
class RolloutEvent:
    """One entry of a rollout's append-only event log (``seq`` increments per rollout)."""

    name: str
    seq: int
    at: datetime
    kind: str
    reason: str
    detail: dict[str, Any]


class Store(Protocol):
    """Persistence of events, features, models, routing, rollout state and leases."""

    url: str

    def schema_version(self) -> int:
        """The applied migration version."""

    def ingest_session(self) -> AbstractContextManager[IngestSession]:
        """Open a transaction for one ingest; leaving the block without commit rolls back."""

    def count_events(self) -> int:
        """Number of stored events."""

    def max_learner_events(self) -> int:
        """The largest number of events any one learner has (0 without events)."""

    def read_events(
        self,
        *,
        sort: bool = True,
        batch_rows: int = 1 << 20,
        columns: Sequence[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Stream canonical events (sorted by learner_id, ts when ``sort``; unsorted, the
        stream holds at most ``batch_rows`` rows), only ``columns`` when given."""

    def events_reader(
        self,
        *,
        sort: bool = True,
        batch_rows: int = 1 << 20,
        columns: Sequence[str] | None = None,
    ) -> pa.RecordBatchReader:
        """The events as one Arrow stream (see :meth:`read_events`)."""

    def read_outcomes(self) -> pa.Table:
        """All learner outcomes."""

    def read_quarantine(
        self, limit: int | None = None, *, reason: str | None = None, source: str | None = None
    ) -> pa.Table:
        """Quarantined rows, newest ingest first (by source and line within one ingest).

        ``reason`` keeps one reason code; ``source`` one source (its stored name, or a name it
        ends with after a ``/``). The schema metadata holds how many rows match in all,
        whatever ``limit`` (:func:`quarantine_total`).
        """

    def ingest_log(self) -> pa.Table:
        """One row per committed ingest with its counts."""

    # -- feature runs and models -------------------------------------------------------------
    def save_feature_run(self, features: pa.Table, params: dict[str, Any], source: str) -> int:
        """Store one run's feature table with its parameters; returns the run id."""

    def read_features(self, run_id: int | None = None) -> tuple[int, pa.Table]:
        """A feature run's table (the latest when ``run_id`` is None)."""

    def feature_runs(self) -> list[dict[str, Any]]:
        """Every feature run: id, time, source, parameters, learners."""

    def save_model(
        self, artifact: dict[str, Any], *, feature_run_id: int | None, activate: bool
    ) -> int:
        """Store a cohort-model artifact; with ``activate`` it becomes the stable model."""

    def active_model(self) -> tuple[int, dict[str, Any]] | None:
        """The active model's id and artifact, or None."""

    def model(self, model_id: int) -> dict[str, Any]:
        """One model's artifact (StoreError when unknown)."""

    def models(self) -> list[dict[str, Any]]:
        """Every stored model: id, time, feature run, status."""

    def set_model_status(
        self, model_id: int, status: str, *, actor: str = "system", reason: str | None = None
    ) -> Routing:
        """Set a model's status; 'active' retires the previous one and moves the stable model."""

    def save_assignments(self, model_id: int, assignments: pa.Table) -> None:
        """Replace the stored assignments of ``model_id``."""

    def read_assignments(self, model_id: int) -> pa.Table:
        """All assignments of ``model_id``."""

    # -- routing -----------------------------------------------------------------------------
    def routing(self) -> Routing:
        """The current routing row (created on first use)."""

    def routing_revision(self) -> int:
        """The routing revision (a cheap poll)."""

    def start_release(
        self,
        candidate_model_id: int,
        *,
        actor: str,
        reason: str | None = None,
        expected_revision: int | None = None,
        salt: str | None = None,
    ) -> Routing:
        """Make ``candidate_model_id`` the candidate at weight 0 with a new salt and release.

        The salt is random unless ``salt`` (16 lowercase hex characters) is given.
        """

    def set_candidate_weight(
        self,
        weight: float,
        *,
        actor: str,
        reason: str | None = None,
        expected_revision: int | None = None,
    ) -> Routing:
        """Route fraction ``weight`` of learners to the candidate."""

    def promote_candidate(
        self, *, actor: str, reason: str | None = None, expected_revision: int | None = None
    ) -> Routing:
        """The candidate becomes the stable (active) model; the old stable is retired."""

    def clear_candidate(
        self,
        *,
        actor: str,
        reason: str | None = None,
        retire: bool = True,
        expected_revision: int | None = None,
    ) -> Routing:
        """Drop the candidate (weight 0), retiring it when ``retire``."""

    def set_overrides(
        self,
        learner_ids: list[str] | tuple[str, ...],
        *,
        actor: str,
        reason: str | None = None,
        expected_revision: int | None = None,
    ) -> Routing:
        """Route exactly these learners to the candidate whatever the weight (needs one)."""

    def routing_history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Routing changes, newest last (the last ``limit`` when given)."""

    # -- rollout state and leases ------------------------------------------------------------
    def put_rollout_spec(self, name: str, spec: dict[str, Any]) -> None:
        """Create or replace a rollout's desired state."""

    def rollout_spec(self, name: str) -> dict[str, Any] | None:
        """A rollout's desired state, or None."""

    def rollout_names(self) -> list[str]:
        """Names of every stored rollout spec, sorted."""

    def rollout_status(self, name: str) -> tuple[int, dict[str, Any]] | None:
        """A rollout's observed state and its revision, or None."""

    def record_rollout(
        self,
        name: str,
        status: dict[str, Any],
        events: list[tuple[str, str, dict[str, Any]]],
        *,
        expected_revision: int | None,
        at: datetime,
        counters: tuple[str, ...] = (),
    ) -> int:
        """Write status, append events and add 1 to each of ``counters`` (lifetime counters
        of the rollout) in one transaction; returns the new revision."""

    def rollout_counters(self) -> dict[str, dict[str, int]]:
        """Lifetime counters per rollout (``completed``, ``aborted``), from ``record_rollout``."""

    def rollout_events(self, name: str, since_seq: int = 0) -> list[RolloutEvent]:
        """A rollout's events after ``since_seq``, in order."""

    def acquire_lease(self, name: str, holder: str, ttl_s: float, now: datetime) -> bool:
        """Take or renew lease ``name`` for ``holder`` until ``now + ttl_s``; False when held."""

    def release_lease(self, name: str, holder: str) -> None:
        """Give up lease ``name`` if ``holder`` holds it."""

    # -- experiments -------------------------------------------------------------------------
    def log_exposures(self, exposures: pa.Table, *, spool_segment: str | None = None) -> int:
        """Append exposure records; returns rows added.

        With ``spool_segment``, the segment is recorded in ``spool_applied`` in the same
        transaction (a segment already recorded adds nothing and returns 0).
        """

    def spool_applied(self, segments: list[str]) -> set[str]:
        """Which of ``segments`` the store has applied already."""

    def max_ingest_id(self) -> int:
        """The newest committed ingest (0 before the first)."""

    def unassigned_learners(
        self, model_ids: list[int], *, after_ingest_id: int = 0, limit: int | None = None
    ) -> pa.Array:
        """Learners with events from ingests after ``after_ingest_id`` that none of
        ``model_ids`` has an assignment for (sorted; at most ``limit``)."""

    def learner_events(self, learner_ids: pa.Array) -> pa.Table:
        """All events of ``learner_ids``, sorted by (learner_id, ts, event_id)."""

    def read_exposures(self, experiment: str | None = None) -> pa.Table:
        """Exposure records in logging order."""

    def experiment_outcomes(self, experiment: str) -> pa.Table:
        """Per learner: first exposure's variant joined with outcomes."""

    def close(self) -> None:
        """Release the connection."""
