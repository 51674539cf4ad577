"""The ``cohortlens`` command: a thin shell over the library (exit codes in docs/CLI.md)."""

from __future__ import annotations

import importlib
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table
from rich.text import Text
from typer.core import TyperGroup

from cohortlens.cli._errors import handle_errors
from cohortlens.errors import CohortlensError, InputError
from cohortlens.events.limits import DEFAULT_MAX_REJECT_RATE
from cohortlens.progress import Progress as StepProgress

#: Sub-apps whose modules are heavy to import (SciPy, numba): name -> (module, help). They
#: load when invoked; ``cohortlens --help`` lists them from these lines alone.
_LAZY_APPS = {
    "rollout": ("cohortlens.cli.rollout", "Progressive delivery: canary → ramp → full."),
    "experiment": ("cohortlens.cli.experiment", "A/B experiments: analyze, power, simulate."),
}


class _LazyGroup(TyperGroup):
    """The root command group: :data:`_LAZY_APPS` stand as placeholders (name and help, for
    ``--help`` and suggestions) until invoked, then their module is imported."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._placeholders: dict[str, Any] = {}
        for name, (_, help_text) in _LAZY_APPS.items():
            self._placeholders[name] = TyperGroup(name=name, help=help_text)
            self.commands.setdefault(name, self._placeholders[name])

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name = args[0] if args else None
        if name in _LAZY_APPS and self.commands.get(name) is self._placeholders.get(name):
            module, help_text = _LAZY_APPS[name]
            command = typer.main.get_command(importlib.import_module(module).app)
            command.help = help_text
            self.commands[name] = command
        return super().resolve_command(ctx, args)


app = typer.Typer(
    name="cohortlens",
    cls=_LazyGroup,
    help="Discover learner cohorts from learning-platform event logs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)


DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Store: a DuckDB file or a postgresql:// URL "
        "(default $COHORTLENS_DB or ./cohortlens.duckdb).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
MemoryLimitOption = Annotated[
    str | None,
    typer.Option(
        "--memory-limit",
        help="Memory this command may use, e.g. 2GiB or 512MiB (K/M/G/T are 1024-based; "
        "a bare number is bytes). Default 3GiB, or a third of RAM when smaller. It sizes the "
        "partitions, and DuckDB gets a share of it as its memory_limit (half; an eighth for "
        "features).",
    ),
]
TempDirOption = Annotated[
    Path | None,
    typer.Option(
        "--temp-dir",
        help="Where spill files go (default: <store file>.tmp beside a DuckDB store, "
        "else the system's temporary directory).",
    ),
]


def memory_budget(memory_limit: str | None, temp_dir: Path | None = None) -> Any:
    """The :class:`~cohortlens.budget.MemoryBudget` of ``--memory-limit`` and ``--temp-dir``."""
    from cohortlens.budget import MemoryBudget

    return MemoryBudget.from_option(memory_limit, temp_dir)


_errors = handle_errors()


def _parse_map(pairs: list[str]) -> dict[str, str]:
    from cohortlens.events.schema import CANONICAL_COLUMNS

    mapping: dict[str, str] = {}
    for pair in pairs:
        canonical, sep, column = pair.partition("=")
        canonical, column = canonical.strip(), column.strip()
        if not sep or not canonical or not column:
            raise InputError(f"--map {pair!r}: expected CANONICAL=SOURCE, e.g. learner_id=user_id")
        if canonical not in CANONICAL_COLUMNS:
            raise InputError(
                f"--map {pair!r}: {canonical!r} is not a canonical column "
                f"({', '.join(CANONICAL_COLUMNS)})"
            )
        mapping[canonical] = column
    return mapping


def _print_json(payload: object) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


@app.command()
@_errors
def simulate(
    learners: Annotated[int, typer.Option(min=1, help="Number of learners.")] = 10_000,
    weeks: Annotated[int, typer.Option(min=1, max=520, help="Weeks of activity.")] = 26,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 0,
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("sim"),
    memory_limit: MemoryLimitOption = None,
    as_json: JsonOption = False,
) -> None:
    """Generate a synthetic platform with known ground truth (events, outcomes, truth)."""
    from cohortlens.budget import MemoryBudget
    from cohortlens.simulate import SimulationParams, simulate_to_parquet

    budget = MemoryBudget.from_option(memory_limit)
    params = SimulationParams(n_learners=learners, n_weeks=weeks, seed=seed, start=_start(weeks))
    with _Bars(as_json) as bars:
        files = simulate_to_parquet(params, out_dir, budget=budget, on_progress=bars)
    summary = {
        "learners": learners,
        "events": files.n_events,
        "files": {k: str(v) for k, v in files.paths.items()},
    }
    if as_json:
        _print_json(summary)
    else:
        out.print(f"wrote {files.n_events:,} events for {learners:,} learners to {out_dir}/")


def _start(weeks: int) -> Any:
    """The default start, or an earlier Monday when ``weeks`` would run past today."""
    from datetime import UTC, datetime, timedelta

    from cohortlens.simulate import SimulationParams

    default: datetime = SimulationParams().start
    today = datetime.now(UTC)
    if default + timedelta(weeks=weeks) < today - timedelta(days=1):
        return default
    first = today - timedelta(weeks=weeks, days=8)
    monday = first - timedelta(days=first.weekday())
    return monday.replace(hour=0, minute=0, second=0, microsecond=0)


@app.command()
@_errors
def ingest(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Event files or dataset directories (none with only --outcomes)."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", help="csv|parquet|jsonl|xapi|oulad|ednet|kddcup2015 (default: by name)."
        ),
    ] = None,
    map_: Annotated[
        list[str] | None,
        typer.Option("--map", help="CANONICAL=SOURCE column mapping, repeatable."),
    ] = None,
    ts_unit: Annotated[
        str, typer.Option(help="auto (detect), iso, s, ms or us: how to read timestamps.")
    ] = "auto",
    ts_format: Annotated[
        str | None,
        typer.Option(
            help="strptime pattern of text timestamps, e.g. '%d/%m/%Y %H:%M' (naive = UTC)."
        ),
    ] = None,
    delimiter: Annotated[
        str | None,
        typer.Option(help="CSV delimiter (default , or tab for .tsv; ; tab | detected)."),
    ] = None,
    encoding: Annotated[
        str | None,
        typer.Option(help="Text encoding, e.g. utf-16 or cp1252 (default UTF-8, or a BOM's)."),
    ] = None,
    max_reject_rate: Annotated[
        float,
        typer.Option(
            help="Fail a source (exit 2, nothing written) whose rejected share exceeds this."
        ),
    ] = DEFAULT_MAX_REJECT_RATE,
    max_field_bytes: Annotated[
        str,
        typer.Option(help="Longest CSV record / JSON line accepted: bytes, or 16MiB, 1GiB."),
    ] = "64MiB",
    xapi_domain_path: Annotated[
        str, typer.Option(help="Dotted path to the domain in an xAPI statement.")
    ] = "context.contextActivities.grouping[0].id",
    outcomes: Annotated[
        list[Path] | None,
        typer.Option(
            "--outcomes", help="Learner outcomes table (Parquet/CSV), repeatable; merged by column."
        ),
    ] = None,
    db: DbOption = None,
    memory_limit: MemoryLimitOption = None,
    as_json: JsonOption = False,
) -> None:
    """Validate events (and outcomes) into the store; bad rows are quarantined with a reason."""
    from cohortlens.budget import MemoryBudget
    from cohortlens.cli._store import open_for_command
    from cohortlens.events.ingest import checked_options
    from cohortlens.events.ingest import ingest as run
    from cohortlens.events.readers import FORMATS
    from cohortlens.events.source import ReadOptions

    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if ts_unit not in ("auto", "iso", "s", "ms", "us"):
        raise InputError(f"--ts-unit {ts_unit!r}: expected auto, iso, s, ms or us")
    if delimiter == "\\t":
        delimiter = "\t"
    if not paths and not outcomes:
        raise InputError("nothing to ingest: give event files or --outcomes FILE")
    options = checked_options(
        ReadOptions(
            mapping=_parse_map(map_ or []),
            ts_unit=ts_unit,  # type: ignore[arg-type]
            ts_format=ts_format,
            delimiter=delimiter,
            encoding=encoding,
            max_field_bytes=_parse_bytes(max_field_bytes, "--max-field-bytes"),
            xapi_domain_path=xapi_domain_path,
        )
    )
    budget = MemoryBudget.from_option(memory_limit)
    with open_for_command(db, budget=budget) as store, _Bars(as_json) as bars:
        report = run(
            store,
            paths or [],
            fmt=fmt,
            options=options,
            on_progress=bars,
            outcomes=outcomes or [],
            max_reject_rate=max_reject_rate,
        )
    if as_json:
        _print_json(report.to_dict())
        return
    events = [s for s in report.sources if s.kind == "events"]
    if events:
        counts = ("rows_read", "accepted", "rejected", "duplicates")
        out.print(_counts_table("ingest", ("rows read", *counts[1:]), counts, events))
        for reason, n in report.rejected_by_reason.items():
            out.print(f"  rejected {reason}: {n:,}")
        if report.rejected:
            out.print("  inspect them with: cohortlens quarantine")
    carriers = [s for s in report.sources if s.kind == "outcomes" or s.outcomes]
    if carriers:
        fields = ("outcomes", "outcomes_inserted", "outcomes_updated", "outcomes_unchanged")
        heads = ("rows", "inserted", "updated", "unchanged")
        out.print(_counts_table("outcomes", heads, fields, carriers))


def _counts_table(
    title: str, heads: tuple[str, ...], fields: tuple[str, ...], sources: list[Any]
) -> Table:
    """One row per source: its name, then the integer ``fields`` under ``heads``."""
    table = Table(title=title, show_lines=False)
    table.add_column("source", justify="left")
    for head in heads:
        table.add_column(head, justify="right")
    for s in sources:
        table.add_row(s.source, *(f"{getattr(s, f):,}" for f in fields))
    return table


def _parse_bytes(text: str, option: str) -> int:
    """A positive byte count (``16MiB``); see :func:`cohortlens.budget.parse_bytes`."""
    from cohortlens.budget import parse_bytes

    return parse_bytes(text, option)


@app.command()
@_errors
def features(
    events: Annotated[
        str | None,
        typer.Option(
            "--events",
            help="Read events from this Parquet file/dir instead of the store "
            "(spark: any Hadoop-compatible URI).",
        ),
    ] = None,
    out_path: Annotated[
        str | None,
        typer.Option(
            "--out",
            help="Also write the feature table to this Parquet file (spark: a directory, any URI).",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 2,
    engine: Annotated[
        str,
        typer.Option(
            "--engine", help="local (this machine) or spark (pyspark; needs --events and --out)."
        ),
    ] = "local",
    db: DbOption = None,
    memory_limit: MemoryLimitOption = None,
    temp_dir: TempDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compute per-learner features (velocity, affinity, retention) and save them as a run."""
    from cohortlens.cli._store import open_for_command
    from cohortlens.features import FeatureParams, build_features, write_features

    params = FeatureParams()
    if engine == "spark":
        _features_on_spark(events, out_path, params, db, as_json, memory_limit)
        return
    if engine != "local":
        raise InputError(f"--engine {engine!r}: expected local or spark")
    from dataclasses import replace

    from cohortlens.budget import SCAN_DUCKDB_SHARE

    # DuckDB only streams the events here: most of the budget is the pipeline's
    budget = replace(memory_budget(memory_limit, temp_dir), duckdb_share=SCAN_DUCKDB_SHARE)
    with open_for_command(db, create=events is not None, budget=budget) as store:
        spill = _spill_budget(store, budget)
        if events is not None:
            if not Path(events).exists():
                raise InputError(f"{events}: no such file or directory")
            source = str(events)
            from cohortlens.features.pipeline import check_parquet_budget

            check_parquet_budget(events, spill, workers)
            with _Bars(as_json) as bars:
                table = build_features(
                    events, params, n_workers=workers, on_progress=bars, budget=spill
                )
        else:
            from cohortlens.features.pipeline import (
                KERNEL_COLUMNS,
                check_budget,
                pipeline_bytes,
                plan_for_budget,
            )

            n_events = store.count_events()
            if n_events == 0:
                raise InputError(f"{store.url} holds no events; run `cohortlens ingest` first")
            source = f"store:{store.url}"
            plan = plan_for_budget(pipeline_bytes(spill), n_events, workers)
            if n_events > plan.in_memory_max_events:
                check_budget(spill, n_events, store.max_learner_events(), workers)
            with _Bars(as_json) as bars:
                table = build_features(
                    store.events_reader(
                        sort=False, batch_rows=plan.batch_rows, columns=KERNEL_COLUMNS
                    ),
                    params,
                    n_workers=workers,
                    on_progress=bars,
                    total_events=n_events,
                    budget=spill,
                )
        run_id = store.save_feature_run(table, params.to_dict(), source)
    if out_path is not None:
        write_features(table, out_path, params, run_id=str(run_id))
    summary = {
        "run_id": run_id,
        "learners": table.num_rows,
        "source": source,
        "out": str(out_path) if out_path else None,
        "velocity_status": _counts(table, "velocity_status"),
        "retention_status": _counts(table, "retention_status"),
        "affinity_archetype": _counts(table, "affinity_archetype"),
    }
    if as_json:
        _print_json(summary)
        return
    out.print(f"feature run {run_id}: {table.num_rows:,} learners from {source}")
    for key in ("velocity_status", "retention_status", "affinity_archetype"):
        parts = ", ".join(f"{k} {v:,}" for k, v in summary[key].items())
        out.print(f"  {key}: {parts}")
    if out_path:
        out.print(f"  wrote {out_path}")


def _spill_budget(store: Any, budget: Any) -> Any:
    """``budget`` with its spill directory: ``--temp-dir``, else the store's (beside a DuckDB
    file), else the system's temporary directory."""
    from dataclasses import replace

    if budget.temp_dir is None and getattr(store, "temp_directory", None) is not None:
        return replace(budget, temp_dir=store.temp_directory)
    return budget


def _features_on_spark(
    events: str | None,
    out_path: str | None,
    params: Any,
    db: str | None,
    as_json: bool,
    memory_limit: str | None = None,
) -> None:
    """``features --engine spark``: Spark writes --out; a local output is also saved as a run."""
    if events is None or out_path is None:
        raise InputError("--engine spark needs --events (Parquet, any Hadoop URI) and --out")
    from cohortlens.budget import MemoryBudget

    budget = None if memory_limit is None else MemoryBudget.from_option(memory_limit)
    try:
        from cohortlens.features.spark import cli_features
    except ImportError as exc:
        raise InputError(
            f"--engine spark needs pyspark ({exc}); install it: pip install 'cohortlens[spark]'"
        ) from None
    with _Spinner(f"features from {events} on Spark", as_json):
        run = cli_features(events, out_path, params, budget)
    run_id = None
    if run.table is not None:
        from cohortlens.cli._store import open_for_command

        with open_for_command(db) as store:
            run_id = store.save_feature_run(run.table, params.to_dict(), events)
    summary = {"run_id": run_id, "learners": run.learners, "source": events, "out": out_path}
    if as_json:
        _print_json(summary | run.counts)
        return
    saved = f"feature run {run_id}" if run_id is not None else "features (not saved: remote --out)"
    out.print(f"{saved}: {run.learners:,} learners from {events} on Spark")
    for key, counts in run.counts.items():
        out.print(f"  {key}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    out.print(f"  wrote {out_path}")


def _counts(table: Any, column: str) -> dict[str, int]:
    """Value counts of a string column (nulls as "None")."""
    import pyarrow.compute as pc

    pairs = pc.value_counts(table.column(column)).to_pylist()
    return dict(sorted((str(p["values"]), int(p["counts"])) for p in pairs))


@app.command()
@_errors
def discover(
    k: Annotated[str, typer.Option("--k", help="auto, or a number of cohorts.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write the self-contained HTML report here.")
    ] = None,
    revenue_unit: Annotated[
        str | None,
        typer.Option(
            "--revenue-unit",
            help="Unit of the outcomes' revenue column, shown in the report (e.g. EUR).",
        ),
    ] = None,
    candidate: Annotated[
        bool,
        typer.Option(
            "--candidate",
            help="Store the model as a candidate for a rollout instead of activating it.",
        ),
    ] = False,
    db: DbOption = None,
    memory_limit: MemoryLimitOption = None,
    temp_dir: TempDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cluster the latest feature run into cohorts; ids stay stable across runs.

    With --candidate the model is kept for a rollout; a candidate made from the same inputs
    (feature run, parameters and seed, active model, outcomes) is reused, not stored twice.
    """
    from cohortlens.cli import cohorts as cmd
    from cohortlens.cli._store import open_for_command

    n = None if k == "auto" else _positive_int(k, "--k")
    budget = memory_budget(memory_limit, temp_dir)
    with open_for_command(db, create=False, budget=budget) as store, _Bars(as_json) as bars:
        found = cmd.discover_model(
            store,
            k=n,
            seed=seed,
            report=report,
            activate=not candidate,
            on_progress=bars,
            revenue_unit=revenue_unit,
        )
    payload = cmd.cards(found.model, found.model_id)
    status = "candidate" if candidate else "active"
    changed = cmd.changed_summary(found.model)
    if as_json:
        _print_json(
            payload
            | {
                "status": status,
                "reused": found.reused,
                "report": str(report) if report else None,
                "changed": changed,
            }
        )
        return
    _print_cards(payload)
    if changed is not None:
        out.print(cmd.changed_line(changed), soft_wrap=True)
    if found.reused:
        out.print(
            f"reused candidate model {found.model_id}: it was made from the same feature run, "
            "parameters and seed, active model and outcomes; nothing new was stored",
            soft_wrap=True,
        )
    elif candidate:
        out.print(
            f"stored candidate model {found.model_id} (not serving); ship it with: "
            "cohortlens rollout init > rollout.yaml",
            soft_wrap=True,
        )
    else:
        out.print(f"model {found.model_id} is now active")
    if report:
        out.print(f"wrote {report}")


@app.command()
@_errors
def assign(
    features_path: Annotated[
        Path, typer.Option("--features", help="Feature table (Parquet) of the learners to score.")
    ],
    out_path: Annotated[Path, typer.Option("--out", help="Assignments (Parquet).")] = Path(
        "assignments.parquet"
    ),
    db: DbOption = None,
    as_json: JsonOption = False,
    ood_max_share: Annotated[
        float,
        typer.Option(
            "--ood-max-share",
            min=0.0,
            max=1.0,
            help="Warn when more than this share of learners lies beyond the model's "
            "training 99th-percentile distance to the nearest centre.",
        ),
    ] = 0.10,
    memory_limit: MemoryLimitOption = None,
) -> None:
    """Score learners with the active model: learner_id, cohort_id, archetype, distance.

    The feature file is read in batches sized by --memory-limit and the assignments are
    written batch by batch; only the columns the out-of-distribution check needs are kept.
    """
    from cohortlens.cli import cohorts as cmd
    from cohortlens.cli._store import open_for_command

    budget = memory_budget(memory_limit)
    with open_for_command(db, read_only=True, budget=budget) as store:
        model_id, model = cmd.active(store)
    streamed = cmd.assign_file(model, features_path, out_path, budget, ood_max_share)
    counts, ood = streamed.counts, streamed.ood
    if ood.warning:
        err.print(f"warning: {ood.message}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        _print_json(
            {"model_id": model_id, "out": str(out_path), "counts": counts, "ood": ood.to_dict()}
        )
        return
    out.print(f"model {model_id}: assigned {streamed.rows:,} learners -> {out_path}")
    for name, n in counts.items():
        out.print(f"  {name}: {n:,}")


@app.command()
@_errors
def cohorts(db: DbOption = None, as_json: JsonOption = False) -> None:
    """The cohort cards of the active model: size, profile, outcomes with 95 % CIs, quality."""
    from cohortlens.cli import cohorts as cmd
    from cohortlens.cli._store import open_for_command

    with open_for_command(db, read_only=True) as store:
        model_id, model = cmd.active(store)
    payload = cmd.cards(model, model_id)
    if as_json:
        _print_json(payload)
        return
    _print_cards(payload)


@app.command()
@_errors
def models(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Stored cohort models, newest first: id, status, created, k, feature run, routing role."""
    from cohortlens.cli._store import model_rows, open_for_command

    with open_for_command(db, read_only=True) as store:
        url = store.url
        rows = model_rows(store)
    if as_json:
        _print_json([r | {"created_at": r["created_at"].isoformat()} for r in rows])
        return
    if not rows:
        out.print(
            f"no cohort models in {url}; make one with: cohortlens discover "
            "(or cohortlens discover --candidate for a rollout)",
            highlight=False,
            soft_wrap=True,
        )
        return
    table = Table(title=f"cohort models in {url}")
    for col in ("id", "status", "created (UTC)", "k", "learners", "feature run", "routing"):
        table.add_column(col, justify="right" if col in ("id", "k", "learners") else "left")
    for r in rows:
        role = r["role"] or "-"
        if r["role"] is not None:
            role = f"{role}, {r['traffic_share'] * 100:.4g} % of learners"
        table.add_row(
            str(r["model_id"]),
            r["status"],
            f"{r['created_at']:%Y-%m-%d %H:%M:%S}",
            "-" if r["k"] is None else str(r["k"]),
            "-" if r["learners"] is None else f"{r['learners']:,}",
            "-" if r["feature_run_id"] is None else str(r["feature_run_id"]),
            role,
        )
    out.print(table)


def _positive_int(text: str, option: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"{option} {text!r}: expected auto or a whole number") from None
    if value < 1:
        raise InputError(f"{option} {text!r}: expected a number >= 1")
    return value


def _print_cards(payload: dict[str, Any]) -> None:
    table = Table(title=f"cohort model {payload['model_id']} ({payload['n_cohorts']} cohorts)")
    for col in ("id", "archetype", "learners", "share", "completion", "churn"):
        table.add_column(col, justify="left" if col == "archetype" else "right")
    for c in payload["cohorts"]:
        rates = [c["outcomes"].get(k, {}).get("value") for k in ("completed", "churned")]
        table.add_row(
            str(c["cohort_id"]),
            c["name"],
            f"{c['size']:,}",
            f"{c['share']:.1%}",
            *("-" if r is None else f"{r:.1%}" for r in rates),
        )
    out.print(table)
    q = payload["quality"]
    sil, dbi = q.get("silhouette"), q.get("davies_bouldin")
    if sil is not None and dbi is not None:
        out.print(f"silhouette {sil:.3f}, Davies-Bouldin {dbi:.3f}")


@app.command()
@_errors
def quarantine(
    limit: Annotated[int, typer.Option(min=1, help="Rows to show.")] = 20,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Only this reason code (e.g. bad_timestamp).")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option("--source", help="Only this source: its path as ingested, or its file name."),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show quarantined rows, newest ingest first: source, line, reason, detail and raw text."""
    from cohortlens.cli._store import open_for_command
    from cohortlens.events.schema import RejectReason
    from cohortlens.store.base import quarantine_total

    with open_for_command(db, read_only=True) as store:
        found = store.read_quarantine(limit=limit, reason=reason, source=source)
    rows, total = found.to_pylist(), quarantine_total(found)
    if as_json:
        _print_json({"total": total, "shown": len(rows), "rows": rows})
        return
    filters = [f"{k} {v}" for k, v in (("reason", reason), ("source", source)) if v is not None]
    where = f" ({', '.join(filters)})" if filters else ""
    if total == 0:
        out.print(f"no quarantined rows{where}", highlight=False, soft_wrap=True)
        codes = [r.value for r in RejectReason]
        if reason is not None and reason not in codes:
            out.print(f"(reason codes: {', '.join(codes)})", highlight=False, soft_wrap=True)
        return
    table = Table(
        title=f"quarantine{where}: showing {len(rows):,} of {total:,}, newest first",
        title_justify="left",
    )
    for col in ("source", "line", "reason", "detail"):
        table.add_column(col, justify="right" if col == "line" else "left")
    table.add_column("raw", overflow="ellipsis", no_wrap=True, max_width=60)
    for r in rows:
        table.add_row(
            str(r["source"]),
            "-" if r["line"] is None else str(r["line"]),
            str(r["reason"]),
            str(r["detail"] or ""),
            str(r["raw"] or ""),
        )
    out.print(table, highlight=False)
    if len(rows) < total:
        out.print(f"{total - len(rows):,} more: raise --limit, or filter with --reason / --source")


@app.command()
@_errors
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Where results are written.")] = Path(
        "demo_output"
    ),
    learners: Annotated[int, typer.Option(min=10, help="Simulated learners.")] = 5_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
) -> None:
    """Run the whole pipeline on simulated data into a fresh embedded store."""
    from cohortlens.events.ingest import ingest as run_ingest
    from cohortlens.simulate import SimulationParams, write_simulation
    from cohortlens.simulate import simulate as run
    from cohortlens.store import open_store

    out_dir.mkdir(parents=True, exist_ok=True)
    db = out_dir / "cohortlens.duckdb"
    for stale in (db, Path(f"{db}.wal")):
        stale.unlink(missing_ok=True)
    out.rule("1. simulate")
    with _Bars(False) as bars:
        sim = run(SimulationParams(n_learners=learners, seed=seed), on_progress=bars)
        files = write_simulation(sim, out_dir / "sim", on_progress=bars)
    out.print(f"{sim.events.num_rows:,} events, {learners:,} learners -> {out_dir / 'sim'}/")
    out.rule("2. ingest")
    with open_store(db) as store, _Bars(False) as bars:
        report = run_ingest(
            store, [files["events"]], outcomes=[files["outcomes"]], on_progress=bars
        )
    out.print(
        f"rows read {report.rows_read:,}: accepted {report.accepted:,}, rejected "
        f"{report.rejected:,}, duplicates {report.duplicates:,} -> {db}"
    )
    (out_dir / "ingest_report.json").write_text(json.dumps(report.to_dict(), indent=2))

    out.rule("3. features")
    from cohortlens.features import FeatureParams, build_features, write_features

    params = FeatureParams()
    from cohortlens.features.pipeline import KERNEL_COLUMNS

    with open_store(db) as store, _Bars(False) as bars:
        table = build_features(
            store.events_reader(sort=False, columns=KERNEL_COLUMNS),
            params,
            n_workers=2,
            on_progress=bars,
            total_events=store.count_events(),
        )
        run_id = store.save_feature_run(table, params.to_dict(), f"store:{db}")
    write_features(table, out_dir / "features.parquet", params, run_id=str(run_id))
    for key in ("velocity_status", "retention_status", "affinity_archetype"):
        parts = ", ".join(f"{k} {v:,}" for k, v in _counts(table, key).items())
        out.print(f"{key}: {parts}")
    out.print(
        f"feature run {run_id}: {table.num_rows:,} learners -> {out_dir / 'features.parquet'}"
    )

    out.rule("4. cohorts")
    import pyarrow.parquet as pq

    from cohortlens.cli import cohorts as cmd

    report_path = out_dir / "report.html"
    with open_store(db) as store, _Bars(False) as bars:
        found = cmd.discover_model(
            store,
            k=None,
            seed=seed,
            report=report_path,
            on_progress=bars,
            revenue_unit="currency units (simulated)",
        )
    payload = cmd.cards(found.model, found.model_id)
    assigned = found.assigned
    _print_cards(payload)
    (out_dir / "cohorts.json").write_text(json.dumps(payload, indent=2, default=str))
    pq.write_table(assigned, out_dir / "assignments.parquet")
    out.print(f"report -> {report_path}; cards -> {out_dir / 'cohorts.json'}")

    out.rule("5. serve")
    learner = str(assigned.column("learner_id")[0])
    answer = _demo_lookup(db, learner)
    out.print(f"GET /v1/learners/{learner}/cohort -> {answer}")
    (out_dir / "lookup.json").write_text(answer + "\n")
    out.print(f"serve it yourself: cohortlens serve --db {db}  (docs/SERVING.md)")
    out.rule("results")
    out.print(f"everything is under {out_dir}/ (store: {db})")


def _demo_lookup(db: Path, learner_id: str) -> str:
    """Start ``cohortlens serve`` on a free loopback port, look one learner up, stop it."""
    import socket
    import subprocess
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    cmd = [sys.executable, "-m", "cohortlens", "serve", "--db", str(db), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        with _Spinner(f"starting the service on {url}", False):
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    detail = (
                        proc.stderr.read().decode(errors="replace")[-500:] if proc.stderr else ""
                    )
                    raise CohortlensError(f"the service did not start: {detail}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise CohortlensError("the service was not ready within 120 s")
                time.sleep(0.2)
        return httpx.get(f"{url}/v1/learners/{learner_id}/cohort", timeout=5.0).text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


class _Spinner:
    """A transient spinner on stderr for a wait of unknown length (only on a terminal)."""

    def __init__(self, text: str, quiet: bool) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=quiet or not err.is_terminal,
        )
        self._text = text

    def __enter__(self) -> None:
        self._progress.start()
        self._progress.add_task(self._text, total=None)

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def _short(value: float) -> str:
    """1234 -> "1,234"; 12345678 -> "12.3M"; 0.5 -> "0.5"."""
    if value < 10:
        return f"{value:.1f}".removesuffix(".0")
    for threshold, scale, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "K")):
        if value >= threshold:
            return f"{value / scale:.1f}{suffix}"
    return f"{value:,.0f}"


class _CountColumn(ProgressColumn):
    """ "12.3M/23.7M rows" (or "12.3M rows" while the total is unknown)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        if task.total is None:
            return Text(f"{_short(task.completed)} {unit}")
        return Text(f"{_short(task.completed)}/{_short(task.total)} {unit}")


class _RateColumn(ProgressColumn):
    """ "1.2M rows/s": units per second over the last seconds."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("")
        return Text(f"{_short(speed)} {task.fields.get('unit', '')}/s")


class _EtaColumn(ProgressColumn):
    """ "ETA 0:01:05" from the recent rate; the elapsed time while the total is unknown."""

    max_refresh = 0.5

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text(f"{timedelta(seconds=int(task.elapsed or 0))} elapsed")
        if task.finished:
            return Text(f"in {timedelta(seconds=int(task.finished_time or 0))}")
        left = task.time_remaining
        return Text("ETA -:--:--" if left is None else f"ETA {timedelta(seconds=int(left))}")


#: Width of a progress bar's label (a step name, or the end of a source's path).
_LABEL = 24


class _Bars:
    """Progress bars on stderr, one per step the library reports (:mod:`cohortlens.progress`):
    percent, count, rate and ETA. Only on a terminal and never with ``--json``; then the
    library gets no callback at all (and skips what it would only do for one, like counting
    the lines of a CSV file)."""

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet and err.is_terminal
        self._progress = Progress(
            TextColumn(
                "{task.description}",
                table_column=Column(max_width=_LABEL, no_wrap=True, overflow="ellipsis"),
            ),
            BarColumn(bar_width=None),
            TaskProgressColumn(),
            _CountColumn(table_column=Column(no_wrap=True)),
            _RateColumn(table_column=Column(no_wrap=True)),
            _EtaColumn(table_column=Column(no_wrap=True)),
            console=err,
            transient=True,
            expand=True,
            disable=not self.enabled,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> StepProgress | None:
        if not self.enabled:
            return None
        self._progress.start()
        return self.update

    def update(self, step: str, done: int, total: int | None, unit: str) -> None:
        """The :class:`cohortlens.progress.Progress` callback."""
        task = self._tasks.get(step)
        if task is None:
            label = step if len(step) <= _LABEL else "…" + step[1 - _LABEL :]  # a path's end
            task = self._tasks[step] = self._progress.add_task(label, total=total, unit=unit)
        self._progress.update(task, completed=done, total=total, unit=unit)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._progress.stop()


def _mount_subcommands() -> None:
    """Attach the commands of stages that ship their own (``rollout`` and ``experiment``
    load when invoked: :data:`_LAZY_APPS`)."""
    from cohortlens.cli.serve import serve

    app.command()(_errors(serve))


_mount_subcommands()


def main() -> None:
    """Console-script entry point."""
    app()
