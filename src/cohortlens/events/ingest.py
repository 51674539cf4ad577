"""Ingest: open sources, validate batch by batch, and commit to the store in one transaction.

Every source is opened (header checked) before anything is written, so a file lacking required
columns fails the whole request and leaves the store untouched. The counting invariant
``rows_read == accepted + rejected + duplicates`` is checked for every source before commit.
A source whose rejected share exceeds ``max_reject_rate`` fails the request too (rolled back),
with its top reasons and likely fixes (:mod:`cohortlens.events.diagnose`). Outcome tables are
merged column by column (:mod:`cohortlens.events.outcomes`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from cohortlens.errors import InputError
from cohortlens.events.diagnose import (
    EXAMPLES_PER_REASON,
    RejectRateError,
    summarize,
)
from cohortlens.events.outcomes import check_outcomes, read_outcomes
from cohortlens.events.readers import open_source
from cohortlens.events.readers._text import check_encoding
from cohortlens.events.readers.csv import in_background
from cohortlens.events.schema import QUARANTINE_SCHEMA
from cohortlens.events.source import RawBatch, ReadOptions, Source
from cohortlens.events.validate import check_ts_format, validate_batch
from cohortlens.store.base import IngestSession, Store

#: Called after each batch with (source name, rows read so far in that source).
Progress = Callable[[str, int], None]
#: A store that validates in its own SQL engine gets batches of at least this many rows: each
#: statement has a fixed cost (measured: a third more CPU at 2^18 rows per statement than at
#: 2^20, and a serial tail), and a group of 2^20 text rows takes about 110 MB.
SQL_GROUP_ROWS = 1 << 20
#: Whether such groups are read one ahead in a background thread.
_PREFETCH = True


class InvariantError(AssertionError):
    """Rows were lost or double-counted: a bug in cohortlens, never a data problem."""


@dataclass
class SourceReport:
    """Counts for one source; ``rows_read == accepted + rejected + duplicates``.

    ``kind`` is ``events``, or ``outcomes`` for an outcomes file (no events). ``outcomes``
    counts the outcome rows the source carried; ``outcomes_inserted``, ``outcomes_updated``
    and ``outcomes_unchanged`` the learners they were merged into (the last row of a learner
    counts), so these three add up to at most ``outcomes``.
    """

    source: str
    kind: str = "events"
    rows_read: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    outcomes: int = 0
    outcomes_inserted: int = 0
    outcomes_updated: int = 0
    outcomes_unchanged: int = 0


_TOTALS = (
    "rows_read",
    "accepted",
    "rejected",
    "duplicates",
    "outcomes_inserted",
    "outcomes_updated",
    "outcomes_unchanged",
)


@dataclass
class IngestReport:
    """Totals over all sources of one ingest, plus each source's own counts."""

    sources: list[SourceReport]

    def _sum(self, name: str) -> int:
        return sum(int(getattr(s, name)) for s in self.sources)

    @property
    def rows_read(self) -> int:
        return self._sum("rows_read")

    @property
    def accepted(self) -> int:
        return self._sum("accepted")

    @property
    def rejected(self) -> int:
        return self._sum("rejected")

    @property
    def duplicates(self) -> int:
        return self._sum("duplicates")

    @property
    def outcomes_inserted(self) -> int:
        return self._sum("outcomes_inserted")

    @property
    def outcomes_updated(self) -> int:
        return self._sum("outcomes_updated")

    @property
    def outcomes_unchanged(self) -> int:
        return self._sum("outcomes_unchanged")

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for s in self.sources:
            total.update(s.rejected_by_reason)
        return dict(sorted(total.items()))

    def to_dict(self) -> dict[str, object]:
        """The ``--json`` shape documented in docs/CLI.md."""
        return {
            **{k: self._sum(k) for k in _TOTALS},
            "rejected_by_reason": self.rejected_by_reason,
            "sources": [asdict(s) for s in self.sources],
        }


def open_sources(
    paths: Sequence[Path], fmt: str | None = None, options: ReadOptions | None = None
) -> list[Source]:
    """Open every path first, so one bad file fails the request before anything is written."""
    return [open_source(Path(p), fmt, options) for p in paths]


def outcomes_source(path: Path, encoding: str | None = None) -> Source:
    """An outcomes file as a source without events; read and checked now (before any write)."""
    table = read_outcomes(Path(path), encoding)
    return Source(name=str(path), columns=(), batches=lambda: iter(()), outcomes=lambda: table)


def checked_options(options: ReadOptions | None) -> ReadOptions:
    """``options`` with the encoding's canonical name; bad values are :class:`InputError`."""
    options = options or ReadOptions()
    if options.ts_format is not None and options.ts_unit != "auto":
        raise InputError("--ts-format and --ts-unit exclude each other; give one")
    check_ts_format(options.ts_format)
    return replace(options, encoding=check_encoding(options.encoding))


def ingest(
    store: Store,
    paths: Sequence[Path],
    *,
    fmt: str | None = None,
    options: ReadOptions | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
    outcomes: Sequence[Path] = (),
    max_reject_rate: float | None = None,
) -> IngestReport:
    """Validate ``paths`` (and ``outcomes`` files) into ``store`` in one transaction.

    Re-ingesting the same rows adds nothing: they are counted as duplicates. A source with
    more than ``max_reject_rate`` of its rows rejected fails the whole request
    (:class:`~cohortlens.events.diagnose.RejectRateError`; ``None``, the library's default, is
    no limit; the CLI default is ``events.source.DEFAULT_MAX_REJECT_RATE``). Outcomes files need no
    event paths.
    """
    options = checked_options(options)
    if not paths and not outcomes:
        raise InputError("nothing to ingest: give event files or --outcomes FILE")
    sources = open_sources(paths, fmt, options)
    sources += [outcomes_source(Path(p), options.encoding) for p in outcomes]
    return ingest_sources(
        store,
        sources,
        options=options,
        now=now,
        progress=progress,
        max_reject_rate=max_reject_rate,
    )


def ingest_sources(
    store: Store,
    sources: Sequence[Source],
    *,
    options: ReadOptions | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
    max_reject_rate: float | None = None,
    spool_segment: str | None = None,
) -> IngestReport:
    """Validate opened ``sources`` (events and outcomes) into ``store`` in one transaction.

    The service's ``POST /v1/events`` batches come through this from its spool:
    ``spool_segment`` is recorded as applied in the same transaction. ``max_reject_rate``
    (a fraction in [0, 1]; ``None``, the default here, = no limit): a source whose rejected
    rows exceed that share of its rows read fails the request, and nothing is written.
    """
    options = options or ReadOptions()
    now = now or datetime.now(UTC)
    if max_reject_rate is not None and not 0.0 <= max_reject_rate <= 1.0:
        raise InputError(f"--max-reject-rate {max_reject_rate:g}: expected a fraction in [0, 1]")
    names = [s.name for s in sources]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"{', '.join(repeated)} given more than once in one ingest")
    reports = [
        SourceReport(source=s.name, kind="events" if s.columns else "outcomes") for s in sources
    ]
    with store.ingest_session() as session:
        for source, report in zip(sources, reports, strict=True):
            reasons: Counter[str] = Counter()
            for rows, accepted, rejected in _staged_counts(session, source, options, now):
                report.rows_read += rows
                report.accepted += accepted
                report.rejected += sum(rejected.values())
                reasons.update(rejected)
                if progress is not None:
                    progress(source.name, report.rows_read)
            report.rejected_by_reason = dict(sorted(reasons.items()))
            if max_reject_rate is not None and report.rejected > max_reject_rate * report.rows_read:
                examples = session.reject_examples(source.name, EXAMPLES_PER_REASON)
                raise RejectRateError(
                    source.name,
                    report.rows_read,
                    report.rejected,
                    max_reject_rate,
                    summarize(report.rejected_by_reason, examples, options),
                )
            if source.outcomes is not None:
                carried = check_outcomes(source.outcomes(), source.name)
                merged = session.put_outcomes(carried)
                report.outcomes = carried.num_rows
                report.outcomes_inserted = merged.inserted
                report.outcomes_updated = merged.updated
                report.outcomes_unchanged = merged.unchanged
        by_name = {r.source: r for r in reports}
        for name, counts in session.resolve().items():
            # The first occurrence of an event stays "accepted"; later copies are duplicates.
            report = by_name[name]
            report.accepted -= counts.duplicates
            report.duplicates += counts.duplicates
        result = IngestReport(reports)
        for r in reports:
            if r.rows_read != r.accepted + r.rejected + r.duplicates:
                raise InvariantError(
                    f"{r.source}: rows_read={r.rows_read} != accepted={r.accepted} + "
                    f"rejected={r.rejected} + duplicates={r.duplicates}"
                )
        summary = result.to_dict()
        session.commit(
            {
                "totals": {
                    k: summary[k] for k in ("rows_read", "accepted", "rejected", "duplicates")
                },
                **summary,
            },
            spool_segment=spool_segment,
        )
    return result


def _staged_counts(
    session: IngestSession, source: Source, options: ReadOptions, now: datetime
) -> Iterator[tuple[int, int, dict[str, int]]]:
    """Stage a source; yield (rows read, accepted, rejects by reason) per step.

    A store that can scan the file itself does it in one step; otherwise batch by batch.
    """
    native = getattr(session, "stage_native", None)
    if source.native is not None and native is not None:
        yield native(
            source.native,
            source.name,
            ts_unit=options.ts_unit,
            now=now,
            ts_format=options.ts_format,
        )
        return
    batches = source.batches()
    if getattr(session, "stage_raw", None) is not None:
        batches = _grouped(batches, max(options.batch_rows, SQL_GROUP_ROWS))
        if _PREFETCH:
            # The next group is read while the store validates and writes this one (the
            # parsers and DuckDB release the GIL), so neither waits for the other.
            batches = in_background(batches, 1)
    try:
        for batch in batches:
            accepted, rejected = _stage(session, batch, source.name, options, now)
            yield batch.n_rows, accepted, rejected
    finally:  # on an error, stop the reader (and its threads) now, not when collected
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _grouped(batches: Iterator[RawBatch], rows: int) -> Iterator[RawBatch]:
    """Consecutive batches joined (without copying) into batches of at least ``rows`` rows.

    Only batches with the same schema are joined (a JSON Lines column may change type).
    """
    pending: list[RawBatch] = []
    count = 0
    for batch in batches:
        if pending and batch.table.schema != pending[0].table.schema:
            yield _joined(pending)
            pending, count = [], 0
        pending.append(batch)
        count += batch.n_rows
        if count >= rows:
            yield _joined(pending)
            pending, count = [], 0
    if pending:
        yield _joined(pending)


def _joined(batches: list[RawBatch]) -> RawBatch:
    """One batch holding the rows and the reader's rejects of ``batches`` (same schema)."""
    if len(batches) == 1:
        return batches[0]
    return RawBatch(
        batches[0].source,
        pa.concat_tables([b.table for b in batches]),
        pa.concat_tables([b.rejects.cast(QUARANTINE_SCHEMA) for b in batches]),
    )


def _stage(
    session: IngestSession, batch: RawBatch, source: str, options: ReadOptions, now: datetime
) -> tuple[int, dict[str, int]]:
    """Validate and stage one batch: in the store's own SQL engine when it has one."""
    fused = getattr(session, "stage_raw", None)
    if fused is not None:
        counts: tuple[int, dict[str, int]] = fused(
            batch, source, ts_unit=options.ts_unit, now=now, ts_format=options.ts_format
        )
        return counts
    checked = validate_batch(batch, ts_unit=options.ts_unit, now=now, ts_format=options.ts_format)
    session.stage(checked.accepted, source)
    session.quarantine(checked.rejected)
    reasons = {
        str(p["values"]): int(p["counts"])
        for p in pc.value_counts(checked.rejected["reason"]).to_pylist()
    }
    return checked.accepted.num_rows, reasons
