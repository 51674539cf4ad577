"""The store interface: what the rest of cohortlens needs from persistence.

DuckDB (embedded, the default) implements it in :mod:`cohortlens.store.duckdb`; a PostgreSQL
implementation fills the same protocol when several service replicas share state.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa


@dataclass(frozen=True)
class CommitCounts:
    """Rows of one source that reached the events table, and those already known."""

    inserted: int
    duplicates: int


class IngestSession(Protocol):
    """One transactional ingest: nothing is visible to readers until ``commit`` succeeds."""

    def stage(self, events: pa.Table, source: str) -> None:
        """Add validated canonical events of ``source`` (duplicates are resolved at commit)."""

    def quarantine(self, rejected: pa.Table) -> None:
        """Record rejected rows (``QUARANTINE_SCHEMA``)."""

    def put_outcomes(self, outcomes: pa.Table) -> None:
        """Upsert learner outcomes (``OUTCOME_SCHEMA``); the latest ingest wins per learner."""

    def resolve(self) -> dict[str, CommitCounts]:
        """Insert staged events not already stored (first occurrence wins), still uncommitted.

        Returns per-source counts of inserted rows and duplicates.
        """

    def commit(self, report: dict[str, object]) -> None:
        """Keep ``report`` in the ingest log and commit the transaction."""


class Store(Protocol):
    """Persistence of events, quarantine, outcomes, and (in later stages) models and runs."""

    url: str

    def schema_version(self) -> int:
        """The applied migration version."""

    def ingest_session(self) -> AbstractContextManager[IngestSession]:
        """Open a transaction for one ingest; leaving the block without commit rolls back."""

    def count_events(self) -> int:
        """Number of stored events."""

    def read_events(
        self, *, sort: bool = True, batch_rows: int = 1 << 20
    ) -> Iterator[pa.RecordBatch]:
        """Stream canonical events (sorted by learner_id, ts when ``sort``)."""

    def read_outcomes(self) -> pa.Table:
        """All learner outcomes."""

    def read_quarantine(self, limit: int | None = None) -> pa.Table:
        """Quarantined rows, oldest first."""

    def ingest_log(self) -> pa.Table:
        """One row per committed ingest with its counts."""

    def close(self) -> None:
        """Release the connection."""
