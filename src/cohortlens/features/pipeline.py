"""Partitioned, parallel, streaming feature pipeline (bounded memory for data larger than RAM).

1. Spill pass: stream the source in record batches; hash every learner to one of
   ``n_partitions`` buckets (:func:`partition_of`, stable across processes); append the rows to
   per-bucket Arrow IPC files (lz4); fold item statistics on the way (the global pass).
2. Fit pass: per bucket, the review pairs and graded first attempts of the hash-sampled
   learners -> the retention and velocity population models (empirical-Bayes priors), merged
   in hash order (independent of buckets).
3. Kernel pass: the per-learner MAPs (:func:`feature_kernel`) per bucket in worker processes.
Peak memory is about one bucket per worker plus the spill buffers, whatever the source size.
"""

from __future__ import annotations

import errno
import math
import multiprocessing as mp
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import (
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    as_completed,
)
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cohortlens.budget import MemoryBudget, format_bytes
from cohortlens.errors import InputError, SpillSpaceError
from cohortlens.features._hash import partition_of
from cohortlens.features._prep import EventEncoder, encoded_item_stats, prepare, prepare_encoded
from cohortlens.features._stats_io import attach_stats
from cohortlens.features.engine import (
    FEATURE_SCHEMA,
    PairSample,
    TrendSample,
    finish_features,
    global_stats_from,
    partial_features,
    sample_pairs,
    sample_trend,
)
from cohortlens.features.params import FeatureParams
from cohortlens.features.stats import GlobalStats, ItemStats, ItemStatsAccumulator
from cohortlens.progress import Progress, tell

T = TypeVar("T")

#: Columns the engines read (``event_id`` is not needed).
KERNEL_COLUMNS = ("learner_id", "ts", "domain", "item_id", "outcome", "duration_s")
_KERNEL_SCHEMA = pa.schema(
    [
        pa.field("learner_id", pa.string()),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
        pa.field("domain", pa.string()),
        pa.field("item_id", pa.string()),
        pa.field("outcome", pa.float64()),
        pa.field("duration_s", pa.float64()),
    ]
)
#: Target events per bucket when ``n_partitions`` is chosen automatically.
EVENTS_PER_PARTITION = 2_000_000
#: Parquet sources up to this many events are processed in memory in one process (about
#: 60 bytes per event at peak, so 3.6 GB at the default); larger ones take the spill path.
IN_MEMORY_MAX_EVENTS = 60_000_000
#: Peak resident bytes per event of the in-memory path, above the process's fixed part
#: (measured: docs/FEATURES.md, "Memory budget").
IN_MEMORY_BYTES_PER_EVENT = 60
#: Peak resident bytes per event of one bucket in a kernel worker (read, prepare, partial
#: features), above the worker's fixed part: 132 B measured between buckets of 1M and 4M
#: simulated events (docs/FEATURES.md, "Memory budget").
BUCKET_BYTES_PER_EVENT = 140
#: Bytes per buffered event in the spill buffers (Arrow rows of the kernel columns).
SPILL_BYTES_PER_EVENT = 80
#: Resident memory of a process before any event (interpreter, Arrow, NumPy, numba, DuckDB).
PROCESS_FIXED_BYTES = 300 << 20
_STRING_COLUMNS = ("learner_id", "domain", "item_id")
#: Progress step names (:mod:`cohortlens.progress`).
_READING = "reading events"
_COMPUTING = "computing features"
_PARTITIONS = "learner partitions"
#: Stages of the in-memory path after reading: items + prepare, partial features, the
#: population fit, finishing (retention MAP).
_IN_MEMORY_STAGES = 4


@dataclass(frozen=True)
class SpillPlan:
    """How a memory budget sizes one feature build (:func:`plan_for_budget`)."""

    #: Sources of at most this many events run in memory in one process.
    in_memory_max_events: int
    #: Learner buckets of the spill path (each fits one worker's share).
    n_partitions: int
    #: Rows buffered per bucket before they are appended to its spill file.
    flush_rows: int
    #: Rows per record batch read from the source.
    batch_rows: int


#: Spill buffers never get less than this (64 buckets x 4096 rows).
_MIN_SPILL_BYTES = 64 * 4096 * SPILL_BYTES_PER_EVENT


def pipeline_bytes(budget: MemoryBudget) -> int:
    """The part of ``budget`` the feature pipeline plans with: the rest is DuckDB's."""
    return max(0, budget.limit_bytes - budget.duckdb_limit_bytes)


def _in_memory_need(total_events: int) -> int:
    return PROCESS_FIXED_BYTES + max(0, int(total_events)) * IN_MEMORY_BYTES_PER_EVENT


def _spill_need(max_learner_events: int, n_workers: int) -> int:
    workers = max(1, int(n_workers))
    worker = workers * max(1, int(max_learner_events)) * BUCKET_BYTES_PER_EVENT
    spill_free = max(worker + _MIN_SPILL_BYTES, math.ceil(worker * 4 / 3))
    return (1 + _worker_processes(workers)) * PROCESS_FIXED_BYTES + spill_free


def _worker_processes(n_workers: int) -> int:
    """Processes started beside the main one (one worker runs in the main process)."""
    return 0 if n_workers <= 1 else int(n_workers)


def minimum_budget_bytes(total_events: int, max_learner_events: int, n_workers: int = 1) -> int:
    """The smallest budget under which :func:`plan_for_budget` can build these events.

    Either every event fits the in-memory path, or the spill path gives each kernel worker
    a share that holds the largest learner's events (a learner's events are never split),
    beside the fixed memory of the processes and the spill buffers. This is the least
    ``--memory-limit`` that works; the bucket that holds the largest learner also holds
    others, so its worker may use more than this share.
    """
    return int(min(_in_memory_need(total_events), _spill_need(max_learner_events, n_workers)))


def limit_for(pipeline_need: int, share: float) -> int:
    """The smallest ``--memory-limit`` whose pipeline share (:func:`pipeline_bytes`) is at
    least ``pipeline_need`` bytes (DuckDB takes its share of the rest)."""
    limit = math.ceil(pipeline_need / (1 - share))
    while pipeline_bytes(MemoryBudget(limit, duckdb_share=share)) < pipeline_need:
        limit += 1 << 20
    return limit


def check_budget(
    budget: MemoryBudget, total_events: int, max_learner_events: int, n_workers: int
) -> None:
    """Raise :class:`~cohortlens.errors.InputError` (exit 2) when ``budget`` is too small.

    The message gives the least ``--memory-limit`` that would work (from
    :func:`minimum_budget_bytes`, plus DuckDB's share) and why.
    """
    need = minimum_budget_bytes(total_events, max_learner_events, n_workers)
    if pipeline_bytes(budget) >= need:
        return
    in_memory, spill = _in_memory_need(total_events), _spill_need(max_learner_events, n_workers)
    spill_1 = _spill_need(max_learner_events, 1)
    fixed = format_bytes(PROCESS_FIXED_BYTES)
    why = (
        f"the largest learner has {max_learner_events:,} events, which one worker holds at "
        f"once ({BUCKET_BYTES_PER_EVENT} B each, beside {fixed} per process and the spill "
        "buffers)"
    )
    if in_memory <= spill:
        why = (
            f"all {total_events:,} events in memory take {IN_MEMORY_BYTES_PER_EVENT} B each "
            f"beside {fixed}; the spill path would need {format_bytes(limit_for(spill, budget.duckdb_share))}, "
            f"as {why}"
        )
    elif n_workers > 1 and spill_1 < spill:
        why += f"; with --workers 1, {format_bytes(limit_for(spill_1, budget.duckdb_share))}"
    raise InputError(
        f"--memory-limit {format_bytes(budget.limit_bytes)} is below what these events need: "
        f"at least {format_bytes(limit_for(need, budget.duckdb_share))} ({budget.duckdb_share:.1%} of it is DuckDB's): {why}"
    )


def check_parquet_budget(source: str | Path, budget: MemoryBudget, n_workers: int) -> None:
    """:func:`check_budget` for Parquet events at ``source`` (a file or a directory).

    Row counts come from the footers; the largest learner is counted only when the events do
    not fit in memory (one DuckDB ``GROUP BY`` under the budget's DuckDB share).
    """
    import duckdb

    files = _parquet_files(Path(source))
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    if total <= plan_for_budget(pipeline_bytes(budget), total, n_workers).in_memory_max_events:
        return
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = '{budget.duckdb_limit_bytes}B'")
        largest = con.execute(
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM read_parquet(?) "
            "GROUP BY learner_id)",
            [files],
        ).fetchall()[0][0]
    finally:
        con.close()
    check_budget(budget, total, int(largest), n_workers)


def plan_for_budget(limit_bytes: int, total_events: int | None, n_workers: int) -> SpillPlan:
    """Partition count, buffers and the in-memory threshold that keep a build in ``limit_bytes``.

    ``limit_bytes`` is the resident memory of every process of the build together (the
    CLI passes the budget less DuckDB's share, which the store's reader may fill). The in-memory
    path runs when its peak (``IN_MEMORY_BYTES_PER_EVENT`` per event) fits; otherwise the main
    process keeps a quarter of what is left for read batches and spill buffers, and each
    kernel worker gets an equal share of the rest, from which the bucket size follows.
    """
    workers = max(1, int(n_workers))
    free = max(0, int(limit_bytes) - PROCESS_FIXED_BYTES)
    in_memory_max = free // IN_MEMORY_BYTES_PER_EVENT
    spill_free = max(0, free - _worker_processes(workers) * PROCESS_FIXED_BYTES)
    main_share = max(_MIN_SPILL_BYTES, spill_free // 4)
    worker_share = max(BUCKET_BYTES_PER_EVENT, (spill_free - main_share) // workers)
    events_per_bucket = max(1, worker_share // BUCKET_BYTES_PER_EVENT)
    total = total_events if total_events is not None else 0
    n_partitions = max(2 * workers, math.ceil(total / events_per_bucket)) if total else 64
    # a batch and its bucket-sorted copy, then the buffers of every bucket
    batch_rows = int(min(1 << 20, max(4096, main_share // (4 * SPILL_BYTES_PER_EVENT))))
    buffer_rows = max(0, main_share - 2 * batch_rows * SPILL_BYTES_PER_EVENT)
    flush_rows = int(max(4096, buffer_rows // (SPILL_BYTES_PER_EVENT * n_partitions)))
    return SpillPlan(in_memory_max, n_partitions, flush_rows, batch_rows)


@dataclass(frozen=True)
class _SpillTask:
    """A share of the source for one spill worker: Parquet fragments and row groups."""

    worker: int
    pieces: tuple[tuple[str, tuple[int, ...]], ...]


def _conform(batch: pa.RecordBatch | pa.Table) -> pa.Table:
    """Select and cast the kernel columns (absent optional ones become nulls)."""
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    cols = {}
    for f in _KERNEL_SCHEMA:
        if f.name in table.column_names:
            cols[f.name] = table.column(f.name).cast(f.type)
        elif f.name == "domain":
            cols[f.name] = pa.chunked_array([pa.array(["unknown"] * table.num_rows, pa.string())])
        else:
            cols[f.name] = pa.chunked_array([pa.nulls(table.num_rows, f.type)])
    return pa.table(cols, schema=_KERNEL_SCHEMA)


class _Spiller:
    """Buffers rows per bucket and appends them to ``part-<p>-w<worker>.parquet`` files."""

    def __init__(self, out_dir: Path, n_partitions: int, worker: int, flush_rows: int) -> None:
        self.out_dir = out_dir
        self.n = n_partitions
        self.worker = worker
        self.flush_rows = flush_rows
        self.buffers: list[list[pa.Table]] = [[] for _ in range(n_partitions)]
        self.buffered = np.zeros(n_partitions, np.int64)
        self.writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
        self.sinks: dict[int, pa.NativeFile] = {}
        self.items = ItemStatsAccumulator()
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        """Route one batch to its buckets."""
        if table.num_rows == 0:
            return
        table = _conform(table)
        self.items.add(table)
        self.rows += table.num_rows
        part = partition_of(table.column("learner_id"), self.n)
        order = np.argsort(part, kind="stable")
        counts = np.bincount(part, minlength=self.n)
        sorted_table = table.take(pa.array(order))
        offset = 0
        for p in np.flatnonzero(counts):
            c = int(counts[p])
            self.buffers[p].append(sorted_table.slice(offset, c))
            offset += c
            self.buffered[p] += c
            if self.buffered[p] >= self.flush_rows:
                self._flush(int(p))

    def _flush(self, p: int) -> None:
        if not self.buffers[p]:
            return
        data = pa.concat_tables(self.buffers[p]).combine_chunks()
        writer = self.writers.get(p)
        if writer is None:
            path = self.out_dir / f"part-{p:05d}-w{self.worker:03d}.arrow"
            sink = self.sinks[p] = pa.OSFile(str(path), "wb")
            writer = pa.ipc.new_file(
                sink, _KERNEL_SCHEMA, options=pa.ipc.IpcWriteOptions(compression="lz4")
            )
            self.writers[p] = writer
        writer.write_table(data)
        self.buffers[p] = []
        self.buffered[p] = 0

    def close(self) -> tuple[tuple[list[pa.Table], list[pa.Table]], int]:
        """Flush everything; return the item accumulator's partials and the rows seen."""
        try:
            for p in range(self.n):
                self._flush(p)
        finally:
            self.abort()
        return self.items.partials(), self.rows

    def abort(self) -> None:
        """Close every spill file (after a failure too: no descriptor outlives the build)."""
        writers, self.writers = self.writers, {}
        sinks, self.sinks = self.sinks, {}
        for w in writers.values():
            with suppress(OSError, pa.ArrowException):
                w.close()
        for sink in sinks.values():  # the file itself, even when the writer could not finish
            with suppress(OSError, pa.ArrowException):
                sink.close()

    def __enter__(self) -> _Spiller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


def _spill_worker(
    task: _SpillTask, out_dir: str, n_partitions: int, flush_rows: int, batch_rows: int
) -> tuple[tuple[list[pa.Table], list[pa.Table]], int]:
    with _Spiller(Path(out_dir), n_partitions, task.worker, flush_rows) as spiller:
        for path, row_groups in task.pieces:
            pf = pq.ParquetFile(path)
            cols = [c for c in KERNEL_COLUMNS if c in pf.schema_arrow.names]
            for batch in pf.iter_batches(
                batch_size=batch_rows, row_groups=list(row_groups), columns=cols
            ):
                spiller.add(pa.Table.from_batches([batch]))
        return spiller.close()


def _parquet_files(source: Path) -> list[str]:
    if source.is_dir():
        files = sorted(str(p) for p in source.rglob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"{source}: no .parquet files")
        return files
    return [str(source)]


def _spill_tasks(files: list[str], n_workers: int) -> tuple[list[_SpillTask], int]:
    """Round-robin row groups over workers (balanced by rows); also the total row count."""
    pieces: list[tuple[str, int, int]] = []
    for f in files:
        meta = pq.ParquetFile(f).metadata
        pieces += [(f, rg, meta.row_group(rg).num_rows) for rg in range(meta.num_row_groups)]
    load = np.zeros(n_workers)
    assign: list[dict[str, list[int]]] = [{} for _ in range(n_workers)]
    for f, rg, rows in sorted(pieces, key=lambda x: -x[2]):
        w = int(np.argmin(load))
        load[w] += rows
        assign[w].setdefault(f, []).append(rg)
    tasks = [
        _SpillTask(w, tuple((f, tuple(sorted(rgs))) for f, rgs in sorted(assign[w].items())))
        for w in range(n_workers)
        if assign[w]
    ]
    return tasks, int(sum(p[2] for p in pieces))


def _merge_items(
    partials: list[tuple[list[pa.Table], list[pa.Table]]], params: FeatureParams
) -> ItemStats:
    acc = ItemStatsAccumulator()
    for items, domains in partials:
        acc.merge(items, domains)
    return acc.finish(params.velocity)


def _read_partition(files: list[str]) -> pa.Table:
    return (
        pa.concat_tables([pa.ipc.open_file(f).read_all() for f in files])
        if files
        else _KERNEL_SCHEMA.empty_table()
    )


def _phase_a_worker(
    files: list[str], items: ItemStats, params: FeatureParams, cache: str
) -> tuple[PairSample, TrendSample]:
    """Read + prepare a bucket once: partial features cached to disk, fit samples returned."""
    table = _read_partition(files)
    if table.num_rows == 0:
        return PairSample.empty(), TrendSample.empty()
    prep = prepare(table, items)
    partial = partial_features(prep, items, params)
    with open(cache, "wb") as fh:
        pickle.dump(partial, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return (
        sample_pairs(prep, params.retention, partial.pairs),
        sample_trend(prep, params.velocity, partial.trend),
    )


def _phase_b_worker(
    cache: str, stats: GlobalStats, params: FeatureParams, out_path: str | None
) -> pa.Table | str:
    """Finish a bucket: per-learner velocity and retention MAPs under the population models."""
    if not os.path.exists(cache):
        feats = FEATURE_SCHEMA.empty_table()
    else:
        with open(cache, "rb") as fh:
            partial = pickle.load(fh)
        feats = finish_features(partial, stats, params)
    if out_path is None:
        return feats
    pq.write_table(feats, out_path)
    return out_path


def _single_threaded_worker() -> None:
    """Worker processes already share the cores: one numba thread each (no oversubscription)."""
    nb.set_num_threads(1)


class _SerialExecutor(Executor):
    """Runs tasks in the calling process (``n_workers == 1``: no process start-up cost)."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        fut: Future[T] = Future()
        fut.set_result(fn(*args, **kwargs))
        return fut


def _reader_batches(reader: pa.RecordBatchReader) -> Iterator[pa.Table]:
    for batch in reader:
        yield pa.Table.from_batches([batch])


def _row_groups(files: list[str]) -> Iterator[pa.Table]:
    """Row groups of the kernel columns, string columns read as Parquet dictionaries.

    A background thread decodes the next row group while the caller encodes the current one
    (Arrow and the numba encoder both release the GIL).
    """

    def read(piece: tuple[pq.ParquetFile, int, list[str]]) -> pa.Table:
        pf, rg, cols = piece
        return pf.read_row_group(rg, columns=cols, use_threads=True)

    pieces = []
    for f in files:
        names = pq.read_schema(f).names
        pf = pq.ParquetFile(f, read_dictionary=[c for c in _STRING_COLUMNS if c in names])
        cols = [c for c in KERNEL_COLUMNS if c in names]
        pieces += [(pf, rg, cols) for rg in range(pf.metadata.num_row_groups)]
    with ThreadPoolExecutor(max_workers=1) as ex:
        nxt = ex.submit(read, pieces[0]) if pieces else None
        for i in range(len(pieces)):
            assert nxt is not None
            table = nxt.result()
            nxt = ex.submit(read, pieces[i + 1]) if i + 1 < len(pieces) else None
            yield table


def _build_in_memory(
    tables: Iterator[pa.Table],
    total_rows: int,
    params: FeatureParams,
    n_threads: int,
    on_progress: Progress | None = None,
) -> pa.Table:
    """All learners at once in this process: encode while reading, sort once, run the engines.

    Same rows as the spill path (a learner's row depends only on its events and the global
    statistics); no process start-up, no spill files, no per-bucket Python overheads.
    """
    prev_threads = nb.get_num_threads()
    nb.set_num_threads(max(1, min(n_threads, int(nb.config.NUMBA_NUM_THREADS))))  # type: ignore[attr-defined]
    try:
        encoder = EventEncoder(capacity=total_rows)
        read = 0
        tell(on_progress, _READING, 0, total_rows, "events")
        for table in tables:
            encoder.add(table)
            read += table.num_rows
            tell(on_progress, _READING, read, total_rows, "events")
        enc = encoder.finish()
        del encoder
        tell(on_progress, _COMPUTING, 0, _IN_MEMORY_STAGES, "stages")
        items = encoded_item_stats(enc, params.velocity)
        prep = prepare_encoded(enc, items, release=True)
        del enc
        tell(on_progress, _COMPUTING, 1, _IN_MEMORY_STAGES, "stages")
        partial = partial_features(prep, items, params)
        tell(on_progress, _COMPUTING, 2, _IN_MEMORY_STAGES, "stages")
        sample = sample_pairs(prep, params.retention, partial.pairs)
        trend = sample_trend(prep, params.velocity, partial.trend)
        del prep
        stats = global_stats_from(items, [sample], params, [trend])
        tell(on_progress, _COMPUTING, 3, _IN_MEMORY_STAGES, "stages")
        feats = attach_stats(finish_features(partial, stats, params), stats)
        tell(on_progress, _COMPUTING, _IN_MEMORY_STAGES, _IN_MEMORY_STAGES, "stages")
        return feats
    finally:
        nb.set_num_threads(prev_threads)


def _write_partitions(feats: pa.Table, out_dir: Path, n_parts: int) -> None:
    """``features-<p>.parquet`` per learner bucket (as the spill path writes them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    part = partition_of(feats.column("learner_id"), n_parts)
    for p in range(n_parts):
        pq.write_table(feats.filter(pa.array(part == p)), out_dir / f"features-{p:05d}.parquet")


def build_features(
    source: str | Path | pa.RecordBatchReader,
    params: FeatureParams | None = None,
    n_partitions: int | None = None,
    n_workers: int = 2,
    *,
    tmp_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    batch_rows: int = 1 << 18,
    flush_rows: int = 1 << 17,
    in_memory_max_events: int = IN_MEMORY_MAX_EVENTS,
    on_progress: Progress | None = None,
    total_events: int | None = None,
    budget: MemoryBudget | None = None,
) -> pa.Table:
    """Features of every learner in ``source`` (Parquet file/dir or a record batch reader).

    Worker processes are started with ``spawn`` (safe with Arrow's and numba's threads), so a
    script calling this with ``n_workers > 1`` needs the ``if __name__ == "__main__":`` guard.
    ``n_partitions`` defaults to about 2M events per bucket (at least ``2 * n_workers``; 64 for
    a reader, whose size is unknown). With ``out_dir`` each bucket's features are also written
    there as ``features-<p>.parquet``. The returned table is sorted by learner_id; a learner's
    row does not depend on ``n_partitions`` or ``n_workers``.

    A Parquet source of at most ``in_memory_max_events`` rows is processed in memory in this
    process (``n_workers`` numba threads; about 60 bytes per event at peak); larger sources and
    record batch readers take the bounded-memory spill path. Both give the same table.

    ``on_progress`` (:mod:`cohortlens.progress`) is told the events read, then the stages or
    learner partitions finished; ``total_events`` is the row count of a record batch reader
    when the caller knows it (a Parquet source's comes from its footers); a reader of at most
    ``in_memory_max_events`` known rows also runs in memory.

    ``budget`` (:class:`~cohortlens.budget.MemoryBudget`) sizes the build instead of the
    defaults (:func:`plan_for_budget`: the in-memory threshold, the partition count, the
    buffers) and names the spill directory (``tmp_dir`` wins). Spill files that cannot be
    written (a full disk) raise :class:`~cohortlens.errors.SpillSpaceError` naming the path.
    """
    params = params or FeatureParams()
    n_workers = max(1, int(n_workers))
    files: list[str] = []
    if isinstance(source, pa.RecordBatchReader):
        total_rows = total_events
    else:
        files = _parquet_files(Path(source))
        total_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    if budget is not None:
        plan = plan_for_budget(pipeline_bytes(budget), total_rows, n_workers)
        in_memory_max_events = plan.in_memory_max_events
        n_partitions = n_partitions or plan.n_partitions
        flush_rows, batch_rows = plan.flush_rows, plan.batch_rows
        if tmp_dir is None and budget.temp_dir is not None:
            tmp_dir = budget.temp_dir
    if total_rows is not None and total_rows <= in_memory_max_events:
        tables = (
            _reader_batches(source)
            if isinstance(source, pa.RecordBatchReader)
            else _row_groups(files)
        )
        feats = _build_in_memory(tables, total_rows, params, n_workers, on_progress)
        if out_dir is not None:
            n_parts = n_partitions or max(
                2 * n_workers, math.ceil(total_rows / EVENTS_PER_PARTITION)
            )
            _write_partitions(feats, Path(out_dir), n_parts)
        return feats
    spill_root = Path(tmp_dir) if tmp_dir is not None else Path(tempfile.gettempdir())
    try:
        spill_root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="cohortlens-features-", dir=spill_root))
    except OSError as exc:
        raise SpillSpaceError(str(spill_root), exc.strerror or str(exc)) from exc
    try:
        return _build_spilled(
            source,
            params,
            n_partitions,
            n_workers,
            work,
            out_dir,
            batch_rows,
            flush_rows,
            on_progress,
            total_rows,
        )
    except OSError as exc:
        if _disk_full(exc):
            raise SpillSpaceError(str(work), exc.strerror or str(exc)) from exc
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (possibly raised in a worker and re-raised here) is a full disk."""
    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (
        "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)
    )


def _build_spilled(
    source: str | Path | pa.RecordBatchReader,
    params: FeatureParams,
    n_partitions: int | None,
    n_workers: int,
    work: Path,
    out_dir: str | Path | None,
    batch_rows: int,
    flush_rows: int,
    on_progress: Progress | None,
    total_events: int | None,
) -> pa.Table:
    """The spill path of :func:`build_features` in the work directory ``work``."""
    pool: Executor = (
        _SerialExecutor()
        if n_workers == 1
        else ProcessPoolExecutor(
            max_workers=n_workers,
            mp_context=mp.get_context("spawn"),
            initializer=_single_threaded_worker,
        )
    )
    with pool:
        if isinstance(source, pa.RecordBatchReader):
            n_parts = n_partitions or 64
            with _Spiller(work, n_parts, 0, flush_rows) as spiller:
                tell(on_progress, _READING, 0, total_events, "events")
                for t in _reader_batches(source):
                    spiller.add(t)
                    tell(on_progress, _READING, spiller.rows, total_events, "events")
                partials = [spiller.close()[0]]
        else:
            files = _parquet_files(Path(source))
            tasks, total_rows = _spill_tasks(files, n_workers)
            n_parts = n_partitions or max(
                2 * n_workers, math.ceil(total_rows / EVENTS_PER_PARTITION)
            )
            tell(on_progress, _READING, 0, total_rows, "events")
            futs = [
                pool.submit(_spill_worker, t, str(work), n_parts, flush_rows, batch_rows)
                for t in tasks
            ]
            read = 0
            for done in as_completed(futs):
                read += done.result()[1]
                tell(on_progress, _READING, read, total_rows, "events")
            partials = [f.result()[0] for f in futs]
        items = _merge_items(partials, params)
        part_files = [
            sorted(str(p) for p in work.glob(f"part-{i:05d}-w*.arrow")) for i in range(n_parts)
        ]
        caches = [str(work / f"partial-{i:05d}.pkl") for i in range(n_parts)]
        # Each partition is read and prepared once (phase A), then finished (phase B).
        tell(on_progress, _PARTITIONS, 0, 2 * n_parts, "partitions")
        samples = _in_order(
            [
                pool.submit(_phase_a_worker, part, items, params, cache)
                for part, cache in zip(part_files, caches, strict=True)
            ],
            on_progress,
            0,
            2 * n_parts,
        )
        stats = global_stats_from(items, [p for p, _ in samples], params, [t for _, t in samples])
        outs: list[str | None] = [None] * n_parts
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            outs = [str(Path(out_dir) / f"features-{i:05d}.parquet") for i in range(n_parts)]
        results = _in_order(
            [
                pool.submit(_phase_b_worker, cache, stats, params, out)
                for cache, out in zip(caches, outs, strict=True)
            ],
            on_progress,
            n_parts,
            2 * n_parts,
        )
    tables = [pq.read_table(r) if isinstance(r, str) else r for r in results]
    feats = pa.concat_tables(tables) if tables else FEATURE_SCHEMA.empty_table()
    feats = feats.take(pc.sort_indices(feats, [("learner_id", "ascending")]))
    return attach_stats(feats, stats)


def _in_order(
    futures: list[Future[T]], on_progress: Progress | None, done_before: int, total: int
) -> list[T]:
    """The futures' results in submission order, telling ``on_progress`` as each finishes."""
    done = done_before
    for fut in as_completed(futures):
        fut.result()  # raises the first failure now
        done += 1
        tell(on_progress, _PARTITIONS, done, total, "partitions")
    return [f.result() for f in futures]


def write_features(
    features: pa.Table,
    path: str | Path,
    params: FeatureParams | None = None,
    run_id: str | None = None,
) -> Path:
    """Write a feature table to Parquet, with the params (JSON) and run id as file metadata."""
    import json

    meta = dict(features.schema.metadata or {})
    if params is not None:
        meta[b"cohortlens.feature_params"] = json.dumps(params.to_dict()).encode()
    if run_id is not None:
        meta[b"cohortlens.run_id"] = run_id.encode()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(features.replace_schema_metadata(meta), out)
    return out


def default_workers() -> int:
    """Worker processes to use by default (the machine's CPU count)."""
    return os.cpu_count() or 1
