"""What an ingest needs from the store it writes to, owned by ``events``.

:func:`cohortlens.events.ingest` writes through an :class:`IngestSession` that an
:class:`IngestTarget` opens; every store backend (``cohortlens.store``) fills these protocols.
The store depends on ``events`` (the schemas, the reader contract, the validation statement it
may run in its own engine, and these protocols); ``events`` never imports the store.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class CommitCounts:
    """Rows of one source that reached the events table, and those already known."""

    inserted: int
    duplicates: int


@dataclass(frozen=True)
class OutcomeCounts:
    """What merging one outcomes table did, per learner (the last row of a learner counts)."""

    inserted: int  # learners without stored outcomes
    updated: int  # learners whose given columns changed
    unchanged: int  # learners whose given columns already held these values


@dataclass(frozen=True)
class RejectExample:
    """One quarantined row of the current ingest (for an error that shows examples)."""

    reason: str
    line: int | None
    detail: str | None
    raw: str | None


class IngestSession(Protocol):
    """One transactional ingest: nothing is visible to readers until ``commit`` succeeds."""

    def stage(self, events: pa.Table, source: str) -> None:
        """Add validated canonical events of ``source`` (duplicates are resolved at commit)."""

    def quarantine(self, rejected: pa.Table) -> None:
        """Record rejected rows (``QUARANTINE_SCHEMA``)."""

    def put_outcomes(self, outcomes: pa.Table) -> OutcomeCounts:
        """Merge learner outcomes column by column; returns what changed, per learner.

        ``outcomes`` has ``learner_id`` and any non-empty subset of the other columns of
        ``OUTCOME_SCHEMA`` (with their types). Only those columns are written (a null sets
        null); a stored learner's other columns keep their values. Within the table the last
        row of a learner wins. Anything else is an :class:`~cohortlens.errors.InputError`.
        """

    def reject_examples(self, source: str, per_reason: int) -> list[RejectExample]:
        """Rows of ``source`` quarantined by this (uncommitted) ingest: the first ``per_reason``
        of each reason, by line."""

    def resolve(self) -> dict[str, CommitCounts]:
        """Insert staged events not already stored (first occurrence wins), still uncommitted.

        Returns per-source counts of inserted rows and duplicates.
        """

    def commit(self, report: dict[str, object], *, spool_segment: str | None = None) -> None:
        """Keep ``report`` in the ingest log and commit the transaction.

        ``spool_segment`` names the spool segment this ingest applies; it is recorded in
        ``spool_applied`` in the same transaction.
        """


class IngestTarget(Protocol):
    """Where an ingest writes: anything that opens an :class:`IngestSession` (every store)."""

    def ingest_session(self) -> AbstractContextManager[IngestSession]:
        """Open a transaction for one ingest; leaving the block without commit rolls back."""
