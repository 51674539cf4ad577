"""``simulate``: traits -> item bank -> weekly events -> outcomes, as Arrow tables."""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cohortlens.events.schema import EVENT_SCHEMA
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
        events: the event log (``EVENT_SCHEMA``, sorted by ``ts``).
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

    Independent generator streams (spawned from ``seed``) feed traits, items, events and
    outcomes, so e.g. changing ``n_weeks`` leaves every learner's traits unchanged.
    ``on_progress`` (:mod:`cohortlens.progress`) is told each simulated week.
    """
    trait_rng, item_rng, event_rng, outcome_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(params.seed).spawn(4)
    )
    traits = draw_traits(params, trait_rng)
    difficulty = draw_item_difficulties(params, item_rng)
    learner_ids = _numbered("u", np.arange(params.n_learners), params.n_learners)
    item_ids, item_domains = _item_names(params)
    domains = pa.array(params.domain_names, pa.string())
    start_us = int(params.start.timestamp()) * US

    n_events = np.zeros(params.n_learners, dtype=np.int64)
    n_graded = np.zeros(params.n_learners, dtype=np.int64)
    next_id = 0
    futures: list[Future[tuple[pa.RecordBatch, pa.RecordBatch | None]]] = []
    # Arrow builds week w's strings in a second thread while numpy draws week w + 1; waiting
    # for week w before submitting w + 1 keeps at most two weeks of raw arrays alive.
    step = "simulating"
    tell(on_progress, step, 0, params.n_weeks, "weeks")
    with ThreadPoolExecutor(max_workers=1) as pool:
        for w, week in enumerate(generate_weeks(params, traits, difficulty, event_rng)):
            if futures:
                futures[-1].result()
            futures.append(
                pool.submit(
                    _week_batches,
                    week,
                    params,
                    next_id,
                    learner_ids,
                    item_ids,
                    item_domains,
                    domains,
                    start_us,
                )
            )
            next_id += week.size
            n_events += np.bincount(week.learner, minlength=params.n_learners)
            graded = week.kind != KIND_VIEW
            n_graded += np.bincount(week.learner[graded], minlength=params.n_learners)
            tell(on_progress, step, w + 1, params.n_weeks, "weeks")
        results = [f.result() for f in futures]
    batches = [r[0] for r in results]
    truth_batches = [r[1] for r in results if r[1] is not None]

    events = pa.Table.from_batches(batches, schema=EVENT_SCHEMA)
    event_truth = (
        pa.Table.from_batches(truth_batches, schema=EVENT_TRUTH_SCHEMA)
        if params.keep_event_truth
        else None
    )
    latent = _latent_table(params, traits, learner_ids, domains, start_us, n_events, n_graded)
    outcomes = draw_outcomes(latent, outcome_rng)
    truth = (
        latent.append_column("completed", outcomes.column("completed"))
        .append_column("churned", outcomes.column("churned"))
        .append_column("revenue", outcomes.column("revenue"))
        .cast(truth_schema(params.domain_names))
    )
    items = _items_table(params, difficulty, item_ids, item_domains, domains)
    return Simulation(params, events, outcomes, truth, items, event_truth)


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
        with pq.ParquetWriter(path, table.schema, compression="zstd") as writer:
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
    """Deterministic event ids ``sim<seed>-<k>``, k = position in the sorted log."""
    numbers = pc.cast(pa.array(np.arange(first, first + count, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(f"sim{seed}-", numbers, "")
