"""``simulate``: traits -> item bank -> weekly events -> outcomes, as Arrow tables."""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cohortlens.budget import MemoryBudget, format_bytes
from cohortlens.errors import InputError
from cohortlens.events.schema import EVENT_SCHEMA, OUTCOME_SCHEMA
from cohortlens.progress import Progress, tell
from cohortlens.simulate._events import KIND_NAMES, KIND_VIEW, WeekEvents, generate_weeks
from cohortlens.simulate._traits import (
    F64,
    I64,
    US,
    Traits,
    draw_item_difficulties,
    draw_traits,
    normalized_entropy,
)
from cohortlens.simulate.outcomes import draw_outcomes
from cohortlens.simulate.params import SimulationParams

_TS = pa.timestamp("us", tz="UTC")
#: Rows per Parquet row group (``pq.write_table``'s default).
_ROW_GROUP_ROWS = 1 << 20

#: Per-event ground truth (only with ``keep_event_truth``), aligned row by row with events.
EVENT_TRUTH_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("p_correct", pa.float64(), nullable=True),
        pa.field("gap_days", pa.float64(), nullable=True),
    ]
)

#: The item bank: graded questions and ungraded lesson pages.
ITEMS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("graded", pa.bool_(), nullable=False),
        pa.field("difficulty", pa.float64(), nullable=True),
    ]
)


def truth_schema(domain_names: tuple[str, ...]) -> pa.Schema:
    """Schema of the truth table (one ``pref_<domain>`` column per domain)."""
    return pa.schema(
        [
            pa.field("learner_id", pa.string(), nullable=False),
            pa.field("learner_type", pa.string(), nullable=False),
            pa.field("ability0", pa.float64(), nullable=False),
            pa.field("growth_rate", pa.float64(), nullable=False),
            pa.field("top_domain", pa.string(), nullable=False),
            *[pa.field(f"pref_{d}", pa.float64(), nullable=False) for d in domain_names],
            pa.field("pref_entropy", pa.float64(), nullable=False),
            pa.field("half_life_days", pa.float64(), nullable=False),
            pa.field("guess_floor", pa.float64(), nullable=False),
            pa.field("activity_level", pa.float64(), nullable=False),
            pa.field("dropout_hazard", pa.float64(), nullable=False),
            pa.field("dropout_week", pa.int32(), nullable=True),
            pa.field("dropout_at", _TS, nullable=True),
            pa.field("spend_propensity", pa.float64(), nullable=False),
            pa.field("n_events", pa.int64(), nullable=False),
            pa.field("n_graded", pa.int64(), nullable=False),
            pa.field("observed_until", _TS, nullable=False),
            pa.field("completed", pa.bool_(), nullable=True),
            pa.field("churned", pa.bool_(), nullable=True),
            pa.field("revenue", pa.float64(), nullable=True),
        ]
    )


@dataclass(frozen=True)
class Simulation:
    """A simulated platform and its ground truth.

    Attributes:
        params: what was simulated.
        events: the event log (``EVENT_SCHEMA``; block-major, sorted by ``ts`` in each block).
        outcomes: one row per learner (``OUTCOME_SCHEMA``), as of the window's end.
        truth: one row per learner: latent type and traits (see :func:`truth_schema`).
        items: the item bank with true difficulties (``ITEMS_SCHEMA``).
        event_truth: per-event truth (``EVENT_TRUTH_SCHEMA``) if ``keep_event_truth``.
    """

    params: SimulationParams
    events: pa.Table
    outcomes: pa.Table
    truth: pa.Table
    items: pa.Table
    event_truth: pa.Table | None = None


def simulate(params: SimulationParams, *, on_progress: Progress | None = None) -> Simulation:
    """Simulate a learning platform (deterministic given ``params``; see docs/SIMULATOR.md).

    Learners are simulated in blocks of :data:`BLOCK_LEARNERS`, each from random streams
    derived from (``seed``, block), so the tables are those :func:`simulate_to_parquet` writes
    whatever its memory budget. ``on_progress`` (:mod:`cohortlens.progress`) is told each
    simulated week of each block.
    """
    sink = _TableSink(params.keep_event_truth)
    run = _run(params, sink, on_progress)
    events = pa.Table.from_batches(sink.event_batches, schema=EVENT_SCHEMA)
    event_truth = (
        pa.Table.from_batches(sink.truth_batches, schema=EVENT_TRUTH_SCHEMA)
        if params.keep_event_truth
        else None
    )
    # n_learners >= 1, so there is at least one block.
    truth = pa.concat_tables(sink.truth_tables)
    outcomes = pa.concat_tables(sink.outcome_tables)
    return Simulation(params, events, outcomes, truth, run.items, event_truth)


def write_simulation(
    sim: Simulation, out_dir: Path | str, *, on_progress: Progress | None = None
) -> dict[str, Path]:
    """Write the tables as Parquet (plus ``params.json``) and return name -> path.

    Keys: ``events``, ``outcomes``, ``truth``, ``items``, ``params`` and, when kept,
    ``event_truth``. ``on_progress`` is told the rows written, one row group at a time.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "events": sim.events,
        "outcomes": sim.outcomes,
        "truth": sim.truth,
        "items": sim.items,
    }
    if sim.event_truth is not None:
        tables["event_truth"] = sim.event_truth
    paths: dict[str, Path] = {}
    total = sum(t.num_rows for t in tables.values())
    written = 0
    tell(on_progress, "writing Parquet", 0, total, "rows")
    for name, table in tables.items():
        path = out / f"{name}.parquet"
        # Row groups of pq.write_table's default size, one at a time: the same file, with
        # progress between groups.
        with _parquet_writer(path, table.schema) as writer:
            for start in range(0, table.num_rows, _ROW_GROUP_ROWS):
                piece = table.slice(start, _ROW_GROUP_ROWS)
                writer.write_table(piece, row_group_size=_ROW_GROUP_ROWS)
                written += piece.num_rows
                tell(on_progress, "writing Parquet", written, total, "rows")
        paths[name] = path
    params_path = out / "params.json"
    params_path.write_text(json.dumps(asdict(sim.params), indent=2, default=str) + "\n")
    paths["params"] = params_path
    return paths


@dataclass(frozen=True)
class SimulationFiles:
    """What :func:`simulate_to_parquet` wrote: counts and name -> path (as ``write_simulation``)."""

    n_learners: int
    n_events: int
    paths: dict[str, Path]


def simulate_to_parquet(
    params: SimulationParams,
    out_dir: Path | str,
    *,
    budget: MemoryBudget | None = None,
    on_progress: Progress | None = None,
) -> SimulationFiles:
    """Simulate and write the tables as Parquet block by block, in memory bounded by ``budget``.

    The files hold exactly what ``write_simulation(simulate(params), out_dir)`` writes (same
    rows, same order); memory stays flat whatever ``n_learners``: one block's state, one
    week of its events and one Parquet row group (sized from the budget) at a time.
    """
    budget = budget if budget is not None else MemoryBudget.default()
    group_rows = simulate_row_group_rows(budget)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sink = _ParquetSink(out, params, group_rows)
    try:
        run = _run(params, sink, on_progress)
        sink.write_items(run.items)
    finally:
        sink.close()
    paths = dict(sink.paths)
    params_path = out / "params.json"
    params_path.write_text(json.dumps(asdict(params), indent=2, default=str) + "\n")
    paths["params"] = params_path
    return SimulationFiles(params.n_learners, run.n_events, paths)


#: Learners per generation block: the unit of the random streams and of the time order.
#: Each block draws its traits, events and outcomes from streams derived from (seed, block),
#: so no output depends on how much memory the run may use.
BLOCK_LEARNERS = 1 << 15
#: Working memory of one block: its state and a week of its events, about 0.3 GB measured
#: with the default parameters (docs/SIMULATOR.md, "Speed and memory"), with headroom.
SIMULATE_MIN_BUDGET_BYTES = 512 << 20
#: Bytes one buffered event row costs in the Parquet writer (Arrow columns and the encoder).
_ROW_BYTES = 400


def simulate_row_group_rows(budget: MemoryBudget) -> int:
    """Events per Parquet row group under ``budget`` (at most ``pq.write_table``'s 1 Mi).

    A budget below :data:`SIMULATE_MIN_BUDGET_BYTES` is an :class:`InputError` naming it.
    """
    if budget.limit_bytes < SIMULATE_MIN_BUDGET_BYTES:
        raise InputError(
            f"--memory-limit {format_bytes(budget.limit_bytes)} is below what one block of "
            f"{BLOCK_LEARNERS:,} simulated learners needs: use at least "
            f"{format_bytes(SIMULATE_MIN_BUDGET_BYTES)}"
        )
    spare = budget.limit_bytes - SIMULATE_MIN_BUDGET_BYTES // 2
    return int(min(_ROW_GROUP_ROWS, max(1 << 16, spare // (4 * _ROW_BYTES))))


def _block_rngs(seed: int, block: int) -> list[np.random.Generator]:
    """The traits, events and outcomes streams of one block of learners.

    Block 0 uses the streams ``SeedSequence(seed).spawn(4)`` gives (0, 2 and 3; 1 draws the
    item bank), so a population of one block is drawn as before blocks existed; block
    b >= 1 uses the spawn keys (stream, b).
    """
    keys = [(i,) if block == 0 else (i, block) for i in (0, 2, 3)]
    return [np.random.default_rng(np.random.SeedSequence(seed, spawn_key=k)) for k in keys]


class _Sink(Protocol):
    """Where :func:`_run` puts each week's batches and each block's learner tables."""

    def events(self, batch: pa.RecordBatch, truth: pa.RecordBatch | None) -> None: ...

    def learners(self, truth: pa.Table, outcomes: pa.Table) -> None: ...


@dataclass
class _TableSink:
    """Keeps everything (for :func:`simulate`)."""

    keep_event_truth: bool
    event_batches: list[pa.RecordBatch] = field(default_factory=list)
    truth_batches: list[pa.RecordBatch] = field(default_factory=list)
    truth_tables: list[pa.Table] = field(default_factory=list)
    outcome_tables: list[pa.Table] = field(default_factory=list)

    def events(self, batch: pa.RecordBatch, truth: pa.RecordBatch | None) -> None:
        self.event_batches.append(batch)
        if truth is not None:
            self.truth_batches.append(truth)

    def learners(self, truth: pa.Table, outcomes: pa.Table) -> None:
        self.truth_tables.append(truth)
        self.outcome_tables.append(outcomes)


class _GroupedWriter:
    """A ParquetWriter fed batches, writing row groups of exactly ``group_rows`` (the last
    one shorter), as ``pq.write_table(table, row_group_size=group_rows)`` would."""

    def __init__(self, path: Path, schema: pa.Schema, group_rows: int) -> None:
        self.writer = _parquet_writer(path, schema)
        self.schema = schema
        self.group_rows = group_rows
        self.pending: list[pa.RecordBatch] = []
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self.pending.append(batch)
        self.rows += batch.num_rows
        if self.rows >= self.group_rows:
            table = pa.Table.from_batches(self.pending, schema=self.schema)
            full = (self.rows // self.group_rows) * self.group_rows
            self.writer.write_table(table.slice(0, full), row_group_size=self.group_rows)
            rest = table.slice(full)
            self.pending, self.rows = rest.to_batches(), rest.num_rows

    def close(self) -> None:
        if self.rows:
            table = pa.Table.from_batches(self.pending, schema=self.schema)
            self.writer.write_table(table, row_group_size=self.group_rows)
        self.pending, self.rows = [], 0
        self.writer.close()


class _ParquetSink:
    """Writes each table to ``<name>.parquet`` as the batches arrive."""

    def __init__(self, out: Path, params: SimulationParams, group_rows: int) -> None:
        self.paths: dict[str, Path] = {}
        self.writers: dict[str, _GroupedWriter] = {}
        schemas = {
            "events": EVENT_SCHEMA,
            "outcomes": OUTCOME_SCHEMA,
            "truth": truth_schema(params.domain_names),
        }
        if params.keep_event_truth:
            schemas["event_truth"] = EVENT_TRUTH_SCHEMA
        for name, schema in schemas.items():
            self.paths[name] = out / f"{name}.parquet"
            # Learner tables: one row group per block, written as the block ends (buffering
            # them up to 1 Mi rows made the peak grow with the population).
            rows = group_rows if name in ("events", "event_truth") else BLOCK_LEARNERS
            self.writers[name] = _GroupedWriter(self.paths[name], schema, rows)
        self.items_path = out / "items.parquet"

    def events(self, batch: pa.RecordBatch, truth: pa.RecordBatch | None) -> None:
        self.writers["events"].write(batch)
        if truth is not None:
            self.writers["event_truth"].write(truth)

    def learners(self, truth: pa.Table, outcomes: pa.Table) -> None:
        for batch in truth.to_batches():
            self.writers["truth"].write(batch)
        for batch in outcomes.to_batches():
            self.writers["outcomes"].write(batch)

    def write_items(self, items: pa.Table) -> None:
        with _parquet_writer(self.items_path, items.schema) as writer:
            writer.write_table(items, row_group_size=_ROW_GROUP_ROWS)
        self.paths["items"] = self.items_path

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


@dataclass(frozen=True)
class _RunResult:
    n_events: int
    items: pa.Table


def _run(params: SimulationParams, sink: _Sink, on_progress: Progress | None) -> _RunResult:
    """Simulate block after block of learners into ``sink`` (events in output order)."""
    item_rng = np.random.default_rng(np.random.SeedSequence(params.seed, spawn_key=(1,)))
    difficulty = draw_item_difficulties(params, item_rng)
    item_ids, item_domains = _item_names(params)
    domains = pa.array(params.domain_names, pa.string())
    start_us = int(params.start.timestamp()) * US
    n_blocks = -(-params.n_learners // BLOCK_LEARNERS)
    step, total, done = "simulating", n_blocks * params.n_weeks, 0
    next_id = 0
    pending: Future[None] | None = None
    # Arrow builds (and the Parquet sink writes) week w's batch in a second thread while numpy
    # draws week w + 1; waiting for week w before submitting w + 1 keeps at most two weeks of
    # raw arrays alive.
    tell(on_progress, step, 0, total, "weeks")
    with ThreadPoolExecutor(max_workers=1) as pool:
        for block in range(n_blocks):
            first = block * BLOCK_LEARNERS
            n = min(BLOCK_LEARNERS, params.n_learners - first)
            trait_rng, event_rng, outcome_rng = _block_rngs(params.seed, block)
            traits = draw_traits(params, trait_rng, n)
            learner_ids = _numbered("u", np.arange(first, first + n), params.n_learners)
            n_events = np.zeros(n, dtype=np.int64)
            n_graded = np.zeros(n, dtype=np.int64)
            for week in generate_weeks(params, traits, difficulty, event_rng):
                if pending is not None:
                    pending.result()
                pending = pool.submit(
                    _emit_week,
                    sink,
                    week,
                    params,
                    next_id,
                    learner_ids,
                    item_ids,
                    item_domains,
                    domains,
                    start_us,
                )
                next_id += week.size
                n_events += np.bincount(week.learner, minlength=n)
                n_graded += np.bincount(week.learner[week.kind != KIND_VIEW], minlength=n)
                done += 1
                tell(on_progress, step, done, total, "weeks")
            latent = _latent_table(
                params, traits, learner_ids, domains, start_us, n_events, n_graded
            )
            outcomes = draw_outcomes(latent, outcome_rng)
            truth = (
                latent.append_column("completed", outcomes.column("completed"))
                .append_column("churned", outcomes.column("churned"))
                .append_column("revenue", outcomes.column("revenue"))
                .cast(truth_schema(params.domain_names))
            )
            if pending is not None:
                pending.result()
            pending = pool.submit(sink.learners, truth, outcomes)
        if pending is not None:
            pending.result()
    items = _items_table(params, difficulty, item_ids, item_domains, domains)
    return _RunResult(next_id, items)


def _emit_week(
    sink: _Sink,
    week: WeekEvents,
    params: SimulationParams,
    first_id: int,
    learner_ids: pa.Array,
    item_ids: pa.Array,
    item_domains: I64,
    domains: pa.Array,
    start_us: int,
) -> None:
    """Build a week's batches (in the worker thread) and hand them to the sink."""
    events, truth = _week_batches(
        week, params, first_id, learner_ids, item_ids, item_domains, domains, start_us
    )
    sink.events(events, truth)


def _parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """zstd; dictionary pages only for string columns that repeat (not the unique event ids,
    times or durations, where trying a dictionary costs time and saves nothing)."""
    repeating = [f.name for f in schema if pa.types.is_string(f.type) and f.name != "event_id"]
    return pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=repeating)


def _week_batches(
    week: WeekEvents,
    params: SimulationParams,
    first_id: int,
    learner_ids: pa.Array,
    item_ids: pa.Array,
    item_domains: I64,
    domains: pa.Array,
    start_us: int,
) -> tuple[pa.RecordBatch, pa.RecordBatch | None]:
    """A week's event batch and, if kept, its per-event truth batch."""
    event_ids = _event_ids(params.seed, first_id, week.size)
    events = _event_batch(week, event_ids, learner_ids, item_ids, item_domains, domains, start_us)
    truth = _event_truth_batch(week, event_ids) if params.keep_event_truth else None
    return events, truth


def _event_batch(
    week: WeekEvents,
    event_ids: pa.Array,
    learner_ids: pa.Array,
    item_ids: pa.Array,
    item_domains: I64,
    domains: pa.Array,
    start_us: int,
) -> pa.RecordBatch:
    """One week's events as an ``EVENT_SCHEMA`` record batch (strings built by Arrow)."""
    return pa.RecordBatch.from_arrays(
        [
            event_ids,
            _take_fixed_width(learner_ids, week.learner),
            pa.array(week.ts_us + start_us, _TS),
            domains.take(pa.array(item_domains[week.code])),
            item_ids.take(pa.array(week.code)),
            pa.array(week.outcome, pa.float64(), mask=np.isnan(week.outcome)),
            pa.array(week.duration_s, pa.float64()),
        ],
        schema=EVENT_SCHEMA,
    )


def _event_truth_batch(week: WeekEvents, event_ids: pa.Array) -> pa.RecordBatch:
    """One week's per-event truth, row-aligned with its event batch."""
    kinds = pa.array(KIND_NAMES, pa.string())
    return pa.RecordBatch.from_arrays(
        [
            event_ids,
            kinds.take(pa.array(week.kind.astype(np.int32))),
            pa.array(week.p_correct, pa.float64(), mask=np.isnan(week.p_correct)),
            pa.array(week.gap_days, pa.float64(), mask=np.isnan(week.gap_days)),
        ],
        schema=EVENT_TRUTH_SCHEMA,
    )


def _latent_table(
    params: SimulationParams,
    traits: Traits,
    learner_ids: pa.Array,
    domains: pa.Array,
    start_us: int,
    n_events: I64,
    n_graded: I64,
) -> pa.Table:
    """The truth table without the outcome columns."""
    n = traits.n
    type_names = pa.array(params.type_names, pa.string())
    drops = traits.dropout_week >= 0
    cols: dict[str, pa.Array] = {
        "learner_id": learner_ids,
        "learner_type": type_names.take(pa.array(traits.type_idx)),
        "ability0": pa.array(traits.ability0),
        "growth_rate": pa.array(traits.growth_rate),
        "top_domain": domains.take(pa.array(np.argmax(traits.pref, axis=1))),
    }
    for d, name in enumerate(params.domain_names):
        cols[f"pref_{name}"] = pa.array(np.ascontiguousarray(traits.pref[:, d]))
    cols |= {
        "pref_entropy": pa.array(normalized_entropy(traits.pref)),
        "half_life_days": pa.array(traits.half_life_days),
        "guess_floor": pa.array(traits.guess_floor),
        "activity_level": pa.array(traits.activity_level),
        "dropout_hazard": pa.array(traits.dropout_hazard),
        "dropout_week": pa.array(traits.dropout_week.astype(np.int32), mask=~drops),
        "dropout_at": pa.array(traits.dropout_at_us + start_us, _TS, mask=~drops),
        "spend_propensity": pa.array(traits.spend_propensity),
        "n_events": pa.array(n_events),
        "n_graded": pa.array(n_graded),
        "observed_until": pa.array(
            np.full(n, start_us + params.n_weeks * 7 * 86_400 * US, dtype=np.int64), _TS
        ),
    }
    return pa.table(cols)


def _items_table(
    params: SimulationParams,
    difficulty: F64,
    item_ids: pa.Array,
    item_domains: I64,
    domains: pa.Array,
) -> pa.Table:
    """The item bank: questions (graded, with difficulty) then pages (ungraded)."""
    n_pages = params.n_domains * params.n_pages_per_domain
    graded = np.arange(len(item_ids)) < difficulty.size
    diff = np.concatenate([difficulty.reshape(-1), np.full(n_pages, np.nan)])
    return pa.table(
        {
            "item_id": item_ids,
            "domain": domains.take(pa.array(item_domains)),
            "graded": pa.array(graded),
            "difficulty": pa.array(diff, pa.float64(), mask=np.isnan(diff)),
        },
        schema=ITEMS_SCHEMA,
    )


def _item_names(params: SimulationParams) -> tuple[pa.Array, I64]:
    """Item id per item code and the domain index per code.

    Codes 0 .. K*Q-1 are questions ``<domain>-q<j>``, then pages ``<domain>-p<j>``.
    """
    k, q, p = params.n_domains, params.n_items_per_domain, params.n_pages_per_domain
    q_dom = np.repeat(np.arange(k, dtype=np.int64), q)
    p_dom = np.repeat(np.arange(k, dtype=np.int64), p)
    domains = pa.array(params.domain_names, pa.string())
    pages = pc.binary_join_element_wise(
        domains.take(pa.array(p_dom)), _numbered("p", np.tile(np.arange(p), k), p), "-"
    )
    questions = pc.binary_join_element_wise(
        domains.take(pa.array(q_dom)), _numbered("q", np.tile(np.arange(q), k), q), "-"
    )
    ids = pa.concat_arrays([questions, pages])
    return ids, np.concatenate([q_dom, p_dom])


def _numbered(prefix: str, numbers: I64, count: int) -> pa.Array:
    """``prefix`` + zero-padded ``numbers`` (width of ``count - 1``, at least 3 digits)."""
    width = max(3, len(str(max(count - 1, 0))))
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, pa.int64()), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _take_fixed_width(strings: pa.Array, index: I64) -> pa.Array:
    """``strings.take(index)``, gathered by numpy when all strings have one byte width."""
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)[
        strings.offset : strings.offset + len(strings) + 1
    ]
    widths = np.diff(offsets)
    if widths.size == 0 or widths[0] == 0 or not bool((widths == widths[0]).all()):
        return strings.take(pa.array(index))
    width = int(widths[0])
    data = np.frombuffer(strings.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    rows = data.view(f"V{width}")[index]
    new_offsets = np.arange(0, (index.shape[0] + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(
        index.shape[0], pa.py_buffer(new_offsets), pa.py_buffer(rows.view(np.uint8))
    )


def _event_ids(seed: int, first: int, count: int) -> pa.Array:
    """Deterministic event ids ``sim<seed>-<k>``, k = position in the sorted log.

    Built by numpy: the numbers are consecutive, so each run of equal digit count is a
    fixed-width byte matrix (prefix, then one column per decimal digit).
    """
    prefix = np.frombuffer(f"sim{seed}-".encode(), dtype=np.uint8)
    pieces: list[npt.NDArray[np.uint8]] = []
    lengths: list[npt.NDArray[np.int64]] = []
    lo, end = first, first + count
    while lo < end:
        width = len(str(lo))
        hi = min(end, 10**width)
        numbers = np.arange(lo, hi, dtype=np.int64)
        matrix = np.empty((hi - lo, prefix.size + width), dtype=np.uint8)
        matrix[:, : prefix.size] = prefix
        for j in range(width):
            place = 10 ** (width - 1 - j)
            matrix[:, prefix.size + j] = 48 + (numbers // place) % 10
        pieces.append(matrix.reshape(-1))
        lengths.append(np.full(hi - lo, prefix.size + width, dtype=np.int64))
        lo = hi
    data = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint8)
    offsets = np.zeros(count + 1, dtype=np.int64)
    if count:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    return pa.StringArray.from_buffers(
        count, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)
    )
