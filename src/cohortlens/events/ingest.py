"""Ingest: open sources, validate batch by batch, and commit to the store in one transaction.

Every source is opened (header checked) before anything is written, so a file lacking required
columns fails the whole request and leaves the store untouched. The counting invariant
``rows_read == accepted + rejected + duplicates`` is checked for every source before commit.
A source whose rejected share exceeds ``max_reject_rate`` fails the request too (rolled back),
with its top reasons and likely fixes (:mod:`cohortlens.events.diagnose`). Outcome tables are
merged column by column (:mod:`cohortlens.events.outcomes`).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cohortlens.errors import InputError
from cohortlens.events.diagnose import (
    EXAMPLES_PER_REASON,
    RejectRateError,
    summarize,
)
from cohortlens.events.outcomes import check_outcomes, read_outcomes
from cohortlens.events.readers import detect_format, open_source
from cohortlens.events.readers._text import check_encoding
from cohortlens.events.readers.csv import in_background
from cohortlens.events.schema import QUARANTINE_SCHEMA
from cohortlens.events.session import IngestSession, IngestTarget
from cohortlens.events.source import LINE_COLUMN, RawBatch, ReadOptions, Source
from cohortlens.events.validate import check_ts_format, validate_batch
from cohortlens.progress import Progress as StepProgress
from cohortlens.progress import tell

#: Called after each batch with (source name, rows read so far in that source).
Progress = Callable[[str, int], None]
#: Seconds between two looks at the progress of a store's native scan.
_POLL_S = 0.25
#: Progress step of the end of an ingest (duplicates resolved, transaction committed).
COMMIT_STEP = "duplicates and commit"
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
    store: IngestTarget,
    paths: Sequence[Path],
    *,
    fmt: str | None = None,
    options: ReadOptions | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
    outcomes: Sequence[Path] = (),
    max_reject_rate: float | None = None,
    on_progress: StepProgress | None = None,
) -> IngestReport:
    """Validate ``paths`` (and ``outcomes`` files) into ``store`` in one transaction.

    Re-ingesting the same rows adds nothing: they are counted as duplicates. A source with
    more than ``max_reject_rate`` of its rows rejected fails the whole request
    (:class:`~cohortlens.events.diagnose.RejectRateError`; ``None``, the library's default, is
    no limit; the CLI default is ``events.limits.DEFAULT_MAX_REJECT_RATE``). Outcomes files need no
    event paths. ``progress`` is told (source, rows read so far) after each batch.
    ``on_progress`` (:mod:`cohortlens.progress`) gets one step per source with its exact size:
    the rows of a Parquet file (from its footer), the lines of a plain CSV/JSON Lines file
    (counted first, only when ``on_progress`` is given); other sources count rows without a total.
    """
    options = checked_options(options)
    if not paths and not outcomes:
        raise InputError("nothing to ingest: give event files or --outcomes FILE")
    sources = open_sources(paths, fmt, options)
    sources += [outcomes_source(Path(p), options.encoding) for p in outcomes]
    extents = (
        [source_extent(Path(p), fmt) for p in paths] + [(None, "rows")] * len(outcomes)
        if on_progress is not None
        else None
    )
    return ingest_sources(
        store,
        sources,
        options=options,
        now=now,
        progress=progress,
        max_reject_rate=max_reject_rate,
        on_progress=on_progress,
        extents=extents,
    )


def source_extent(path: Path, fmt: str | None = None) -> tuple[int | None, str]:
    """The size of a source for progress: (rows, "rows") of a Parquet file, (lines, "lines")
    of a plain text file, (None, "rows") when it is not known before reading."""
    try:
        kind = fmt or detect_format(path)
    except InputError:
        return None, "rows"
    if path.is_dir():
        return None, "rows"
    if kind == "parquet":
        try:
            return int(pq.ParquetFile(path).metadata.num_rows), "rows"
        except (OSError, pa.ArrowException):
            return None, "rows"
    if kind in ("csv", "jsonl") and not path.name.lower().endswith(".gz"):
        return _count_lines(path), "lines"
    return None, "rows"


def _count_lines(path: Path, block: int = 1 << 23) -> int | None:
    """Physical lines of a text file (a last line without a newline counts), or None."""
    lines, last = 0, b"\n"
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(block):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    except OSError:
        return None
    return lines + (last != b"\n")


def ingest_sources(
    store: IngestTarget,
    sources: Sequence[Source],
    *,
    options: ReadOptions | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
    max_reject_rate: float | None = None,
    spool_segment: str | None = None,
    on_progress: StepProgress | None = None,
    extents: Sequence[tuple[int | None, str]] | None = None,
) -> IngestReport:
    """Validate opened ``sources`` (events and outcomes) into ``store`` in one transaction.

    The service's ``POST /v1/events`` batches come through this from its spool:
    ``spool_segment`` is recorded as applied in the same transaction. ``max_reject_rate``
    (a fraction in [0, 1]; ``None``, the default here, = no limit): a source whose rejected
    rows exceed that share of its rows read fails the request, and nothing is written.
    ``extents`` are the sources' sizes for ``on_progress`` (:func:`source_extent`; rows without
    a total if None).
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
    sizes = list(extents) if extents is not None else [(None, "rows")] * len(sources)
    with store.ingest_session() as session:
        for source, report, (total, unit) in zip(sources, reports, sizes, strict=True):
            reasons: Counter[str] = Counter()
            tracker = _Tracker(on_progress, source.name, total, unit)
            for rows, accepted, rejected, last_line in _staged_counts(
                session, source, options, now, tracker
            ):
                report.rows_read += rows
                report.accepted += accepted
                report.rejected += sum(rejected.values())
                reasons.update(rejected)
                if progress is not None:
                    progress(source.name, report.rows_read)
                tracker.read(report.rows_read, last_line)
            tracker.finish(report.rows_read)
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
        tell(on_progress, COMMIT_STEP, 0, 1, "steps")
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
    tell(on_progress, COMMIT_STEP, 1, 1, "steps")
    return result


class _Tracker:
    """One source's progress: rows (or physical lines) done out of its known size."""

    def __init__(
        self, on_progress: StepProgress | None, name: str, total: int | None, unit: str
    ) -> None:
        self._tell = on_progress
        self._name = name
        self.total = total
        self._unit = unit if total is not None else "rows"
        self._done = 0
        self._lock = threading.Lock()
        self._report(0)

    @property
    def active(self) -> bool:
        return self._tell is not None

    @property
    def lines(self) -> bool:
        """Whether progress counts physical lines (each batch's last line is wanted)."""
        return self.active and self._unit == "lines"

    def _report(self, done: int) -> None:
        if self._tell is None:
            return
        with self._lock:
            self._done = max(self._done, done)
            if self.total is not None:
                self._done = min(self._done, self.total)
            self._tell(self._name, self._done, self.total, self._unit)

    def read(self, rows: int, last_line: int | None) -> None:
        """After a batch: ``rows`` read so far; ``last_line`` the batch's last physical line."""
        self._report(last_line if self._unit == "lines" and last_line is not None else rows)

    def share(self, fraction: float) -> None:
        """A store's native scan reports the share of the file done."""
        if self.total is not None:
            self._report(int(fraction * self.total))

    def finish(self, rows: int) -> None:
        """The source is read whole."""
        self._report(self.total if self.total is not None else rows)


@contextmanager
def _polled(session: IngestSession, tracker: _Tracker) -> Iterator[None]:
    """While the block runs, pass the share of the store's native scan done to ``tracker``."""
    tracked = getattr(session, "progress_tracked", None)
    if tracked is None or not tracker.active or tracker.total is None:
        yield
        return
    stop = threading.Event()
    with tracked() as share_done:

        def watch() -> None:
            while not stop.wait(_POLL_S):
                share = share_done()
                if share is not None:
                    tracker.share(share)

        thread = threading.Thread(target=watch, name="ingest-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def _staged_counts(
    session: IngestSession,
    source: Source,
    options: ReadOptions,
    now: datetime,
    tracker: _Tracker,
) -> Iterator[tuple[int, int, dict[str, int], int | None]]:
    """Stage a source; yield (rows read, accepted, rejects by reason, last line) per step.

    A store that can scan the file itself does it in one step (``tracker`` follows its scan);
    otherwise batch by batch.
    """
    native = getattr(session, "stage_native", None)
    if source.native is not None and native is not None:
        with _polled(session, tracker):
            rows, accepted, rejected = native(
                source.native,
                source.name,
                ts_unit=options.ts_unit,
                now=now,
                ts_format=options.ts_format,
            )
        yield rows, accepted, rejected, None
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
            yield batch.n_rows, accepted, rejected, _last_line(batch) if tracker.lines else None
    finally:  # on an error, stop the reader (and its threads) now, not when collected
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _last_line(batch: RawBatch) -> int | None:
    """The highest physical line (or record number) in a batch, reader rejects included."""
    highest = None
    for column in (
        batch.table.column(LINE_COLUMN) if LINE_COLUMN in batch.table.column_names else None,
        batch.rejects.column("line"),
    ):
        if column is not None and len(column):
            value = pc.max(column).as_py()
            if value is not None and (highest is None or value > highest):
                highest = int(value)
    return highest


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
