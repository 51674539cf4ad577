"""``cohortlens experiment ...``: analyse, size, simulate and assign A/B experiments.

Human output goes through rich; ``--json`` prints one JSON document on stdout. Unusable
input exits with code 2 and a one-line message (no traceback); see docs/EXPERIMENTS.md.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cohortlens.cli._errors import handle_errors
from cohortlens.experiments.errors import ExperimentInputError, ReportStatus
from cohortlens.experiments.kinds import MetricKind, kind_of
from cohortlens.experiments.spec import MetricRole, MetricSpec

app = typer.Typer(
    help="A/B experiments: analyze, power, simulate, reduce, assign.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)


JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
MetricOption = Annotated[
    list[str] | None,
    typer.Option(
        "--metric",
        help="NAME:binary|mean|ratio[:NUM/DEN], repeatable. For binary and mean metrics NAME "
        "is the column; for ratio metrics NUM/DEN are the columns.",
    ),
]
GuardrailOption = Annotated[
    list[str] | None,
    typer.Option(
        "--guardrail",
        help="Guardrail metric, same syntax as --metric; fails on a significant regression.",
    ),
]
CovariateOption = Annotated[
    list[str] | None,
    typer.Option(
        "--covariate",
        help="METRIC=COLUMN: pre-period covariate for CUPED; for a ratio metric also "
        "METRIC=NUM/DEN, a pre-period ratio.",
    ),
]
CapOption = Annotated[
    list[str] | None,
    typer.Option(
        "--cap", help="METRIC=QUANTILE: cap values at a quantile of all arms (e.g. 0.99)."
    ),
]
LowerOption = Annotated[
    list[str] | None,
    typer.Option("--lower-is-better", help="Metric where a decrease is good (e.g. churn)."),
]
VariantColOption = Annotated[
    str, typer.Option("--variant-col", help="Column holding each learner's variant.")
]
TimeColOption = Annotated[
    str | None,
    typer.Option("--time-col", help="Period column (e.g. day) for sequential looks over time."),
]
DropOption = Annotated[
    bool,
    typer.Option(
        "--drop-nonfinite",
        help="Leave learners with a NaN/inf value out of that metric (and say how many) "
        "instead of failing.",
    ),
]


_errors = handle_errors(ValueError, OSError)
_KIND_NAMES = tuple(k.value for k in MetricKind)


# ---------------------------------------------------------------------------- analyze


@app.command()
@_errors
def analyze(
    data: Annotated[
        Path,
        typer.Argument(
            help="Per-learner CSV/Parquet, a JSON file of sufficient statistics, or "
            "store:EXPERIMENT (exposures joined with outcomes in --db)."
        ),
    ],
    variant_col: VariantColOption = "variant",
    metric: MetricOption = None,
    guardrail: GuardrailOption = None,
    covariate: CovariateOption = None,
    cap: CapOption = None,
    lower_is_better: LowerOption = None,
    control: Annotated[
        str | None, typer.Option(help="Control variant (default: 'control' or the first).")
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            help="Design split for the SRM check, e.g. control=1,treatment=1 (default equal)."
        ),
    ] = None,
    alpha: Annotated[float, typer.Option(help="Two-sided significance level.")] = 0.05,
    srm_alpha: Annotated[
        float, typer.Option(help="Flag a sample ratio mismatch below this p-value.")
    ] = 0.001,
    correction: Annotated[str, typer.Option(help="holm | bh | none (primary metrics).")] = "holm",
    binary_test: Annotated[
        str, typer.Option(help="unpooled | pooled p-values for binary metrics.")
    ] = "unpooled",
    sequential: Annotated[
        bool, typer.Option("--sequential", help="Add always-valid (mSPRT) results.")
    ] = False,
    tune_n: Annotated[
        int,
        typer.Option(
            help="Units at which the always-valid boundary is tuned (set before looking)."
        ),
    ] = 10_000,
    time_col: TimeColOption = None,
    drop_nonfinite: DropOption = False,
    alternative: Annotated[
        str, typer.Option(help="two-sided | greater | less (tests, CIs, sequential).")
    ] = "two-sided",
    rel_scale: Annotated[
        str, typer.Option(help="linear | log: scale of the relative CI and its test.")
    ] = "linear",
    decision: Annotated[
        str, typer.Option(help="absolute | relative: which test decides verdicts.")
    ] = "absolute",
    quantile: Annotated[
        str, typer.Option(help="auto (t for means, normal otherwise) | t | normal.")
    ] = "auto",
    equal_var: Annotated[
        bool, typer.Option("--equal-var", help="Pooled-variance (Student) t instead of Welch.")
    ] = False,
    yates: Annotated[
        bool, typer.Option("--yates", help="Continuity correction of the binary z-test.")
    ] = False,
    cuped_baseline: Annotated[
        str, typer.Option(help="unadjusted | adjusted control mean for CUPED relative lifts.")
    ] = "unadjusted",
    cuped_rel_variance: Annotated[
        str, typer.Option(help="delta | growthbook: control term of the CUPED relative variance.")
    ] = "delta",
    population: Annotated[
        int | None,
        typer.Option(
            help="Learners to project the business impact onto (default: the experiment's)."
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write a self-contained HTML report here.")
    ] = None,
    unit: Annotated[
        list[str] | None,
        typer.Option(
            "--unit",
            help="METRIC=UNIT: the unit of a mean or ratio metric in the report (e.g. "
            "revenue=EUR); repeatable.",
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option("--db", help="Store for store:EXPERIMENT (default $COHORTLENS_DB)."),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(
            "--by",
            help="Analyse per segment of this pre-exposure column (store:EXPERIMENT: 'cohort' "
            "= the cohort under the model active at exposure time).",
        ),
    ] = None,
    segment_correction: Annotated[
        str, typer.Option(help="Correction across segments: bh | by | holm | bonferroni | none.")
    ] = "bh",
    segments_preregistered: Annotated[
        bool,
        typer.Option(
            "--segments-preregistered",
            help="The segmentation was declared before the experiment (no post-hoc warning).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Analyse an experiment: lifts with CIs, p-values, CUPED, SRM, guardrails, verdicts."""
    from cohortlens.experiments.analysis import analyze as run
    from cohortlens.experiments.report import render_html
    from cohortlens.experiments.sequential import SequentialParams
    from cohortlens.experiments.spec import AnalysisConfig

    segments: dict[str, Any] = {}
    specs, periods, file_control, file_weights = _load(
        data,
        variant_col,
        metric,
        guardrail,
        covariate,
        cap,
        lower_is_better,
        time_col,
        db,
        drop_nonfinite=drop_nonfinite,
        quiet=as_json,
        by=by,
        segments_out=segments,
    )
    if correction not in ("holm", "bh", "none"):
        raise ExperimentInputError(f"--correction {correction!r}: expected holm, bh or none")
    if binary_test not in ("unpooled", "pooled"):
        raise ExperimentInputError(f"--binary-test {binary_test!r}: expected unpooled or pooled")
    config = AnalysisConfig(
        control=control or file_control,
        alpha=alpha,
        expected_weights=_parse_weights(weights) if weights else file_weights,
        srm_alpha=srm_alpha,
        correction=correction,  # type: ignore[arg-type]
        binary_test=binary_test,  # type: ignore[arg-type]
        sequential=SequentialParams(tuning_n=tune_n) if sequential else None,
        impact_units=population,
        alternative=_choice(alternative, "--alternative", ("two-sided", "greater", "less")),  # type: ignore[arg-type]
        rel_scale=_choice(rel_scale, "--rel-scale", ("linear", "log")),  # type: ignore[arg-type]
        decision=_choice(decision, "--decision", ("absolute", "relative")),  # type: ignore[arg-type]
        use_t={"auto": None, "t": True, "normal": False}[
            _choice(quantile, "--quantile", ("auto", "t", "normal"))
        ],
        equal_var=equal_var,
        yates=yates,
        cuped_baseline=_choice(cuped_baseline, "--cuped-baseline", ("unadjusted", "adjusted")),  # type: ignore[arg-type]
        cuped_rel_variance=_choice(  # type: ignore[arg-type]
            cuped_rel_variance, "--cuped-rel-variance", ("delta", "growthbook")
        ),
    )
    units = _parse_pairs(unit or [], "--unit")
    _check_known(set(units), specs, "--unit")
    meta = _report_meta(periods, time_col)
    if by is not None:
        from cohortlens.experiments.report import render_segments_html
        from cohortlens.experiments.segments import analyze_segments

        seg = analyze_segments(
            specs,
            segments,
            config,
            by=by,
            segment_correction=segment_correction,
            preregistered=segments_preregistered,
        )
        if report is not None:
            report.write_text(
                render_segments_html(
                    seg, title=f"Experiment report by {by}: {data.name}", meta=meta, units=units
                ),
                encoding="utf-8",
            )
        if as_json:
            _print_json(seg.to_dict() | ({"report": str(report)} if report else {}))
            return
        _print_segments(seg)
        if report is not None:
            out.print(f"wrote {report}")
        return
    result = run(specs, periods, config)
    if report is not None:
        report.write_text(
            render_html(result, title=f"Experiment report: {data.name}", meta=meta, units=units),
            encoding="utf-8",
        )
    if as_json:
        _print_json(result.to_dict() | ({"report": str(report)} if report else {}))
        return
    _print_report(result)
    if report is not None:
        out.print(f"wrote {report}")


@app.command()
@_errors
def reduce(
    data: Annotated[
        Path, typer.Argument(help="Per-learner CSV or Parquet, or store:EXPERIMENT (with --db).")
    ],
    out_path: Annotated[Path, typer.Option("--out", help="The JSON statistics file to write.")],
    variant_col: VariantColOption = "variant",
    metric: MetricOption = None,
    guardrail: GuardrailOption = None,
    covariate: CovariateOption = None,
    cap: CapOption = None,
    lower_is_better: LowerOption = None,
    time_col: TimeColOption = None,
    drop_nonfinite: DropOption = False,
    control: Annotated[
        str | None, typer.Option(help="Control variant to record in the file.")
    ] = None,
    weights: Annotated[
        str | None, typer.Option(help="Design split to record, e.g. control=1,treatment=1.")
    ] = None,
    db: Annotated[
        str | None,
        typer.Option("--db", help="Store for store:EXPERIMENT (default $COHORTLENS_DB)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Reduce per-learner rows to a JSON file of sufficient statistics (shards merge by adding)."""
    from cohortlens.experiments.serialize import StatsFile, write_stats_json

    if data.suffix.lower() == ".json":
        raise ExperimentInputError(
            f"{data}: already a statistics file; reduce reads per-learner CSV/Parquet"
        )
    with _reduce_progress(enabled=not as_json and err.is_terminal) as progress:
        specs, periods, _, _ = _load(
            data,
            variant_col,
            metric,
            guardrail,
            covariate,
            cap,
            lower_is_better,
            time_col,
            db,
            drop_nonfinite=drop_nonfinite,
            quiet=as_json,
            progress=progress,
        )
    content = StatsFile(
        metrics=tuple(specs),
        periods=tuple(periods),
        control=control,
        expected_weights=_parse_weights(weights) if weights else None,
    )
    write_stats_json(content, out_path)
    summary = {
        "out": str(out_path),
        "metrics": [m.name for m in specs],
        "periods": len(periods),
        "units": dict(sum(periods[1:], periods[0]).units),
    }
    if as_json:
        _print_json(summary)
    else:
        out.print(
            f"wrote sufficient statistics of {len(specs)} metric(s), {len(periods)} "
            f"period(s) to {out_path}"
        )


# ---------------------------------------------------------------------------- power


@app.command()
@_errors
def power(
    metric_type: Annotated[str, typer.Option("--type", help="binary | mean | ratio.")],
    baseline: Annotated[
        float, typer.Option(help="Control value of the metric (a rate for binary).")
    ],
    std: Annotated[
        float | None, typer.Option(help="Per-learner std (mean; ratio: of the linearised metric).")
    ] = None,
    mde: Annotated[float | None, typer.Option(help="Absolute effect to detect.")] = None,
    mde_rel: Annotated[
        float | None, typer.Option(help="Relative effect to detect (0.02 = +2 %).")
    ] = None,
    n_per_arm: Annotated[
        int | None,
        typer.Option(help="Control learners available: report the MDE instead of a sample size."),
    ] = None,
    alpha: Annotated[float, typer.Option(help="Two-sided significance level.")] = 0.05,
    target_power: Annotated[float, typer.Option("--power", help="Target power.")] = 0.8,
    ratio: Annotated[float, typer.Option(help="Treatment learners per control learner.")] = 1.0,
    cuped_correlation: Annotated[
        float | None, typer.Option(help="Correlation of the metric with its CUPED covariate.")
    ] = None,
    binary_test: Annotated[
        str, typer.Option(help="unpooled | pooled (binary metrics).")
    ] = "unpooled",
    as_json: JsonOption = False,
) -> None:
    """Sample size for an effect, or the minimum detectable effect for a sample size."""
    from cohortlens.experiments.cuped import predicted_variance_factor
    from cohortlens.experiments.power import PowerDesign, minimum_detectable_effect, sample_size

    factor = 1.0 if cuped_correlation is None else predicted_variance_factor(cuped_correlation)
    if factor <= 0.0:
        raise ExperimentInputError("--cuped-correlation must be strictly between -1 and 1")
    design = PowerDesign(
        kind=MetricKind(_choice(metric_type, "--type", _KIND_NAMES)),
        baseline=baseline,
        std=std,
        alpha=alpha,
        power=target_power,
        ratio=ratio,
        variance_factor=factor,
        binary_test=_choice(binary_test, "--binary-test", ("unpooled", "pooled")),  # type: ignore[arg-type]
    )
    given = [x is not None for x in (mde, mde_rel, n_per_arm)]
    if sum(given) != 1:
        raise ExperimentInputError(
            "give exactly one of --mde, --mde-rel (sample size) and --n-per-arm (MDE)"
        )
    if n_per_arm is not None:
        result = minimum_detectable_effect(design, n_per_arm)
    else:
        result = sample_size(design, mde, rel_effect=mde_rel)
    if as_json:
        _print_json(result.to_dict())
        return
    table = Table(
        title=f"power: {design.kind.value} metric, baseline {baseline:g}", show_header=False
    )
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    table.add_row(
        "learners per arm (control / treatment)", f"{result.n_control:,} / {result.n_treatment:,}"
    )
    table.add_row("learners in total", f"{result.n_total:,}")
    table.add_row("absolute effect", f"{result.effect:.6g}")
    table.add_row("relative effect", f"{result.rel_effect:+.3%}")
    table.add_row("power at these sizes", f"{result.achieved_power:.4f}")
    table.add_row("alpha (two-sided)", f"{alpha:g}")
    if cuped_correlation is not None:
        table.add_row("CUPED variance factor 1-rho^2", f"{factor:.4f}")
    out.print(table)


# ---------------------------------------------------------------------------- group sequential


@app.command("group-sequential")
@_errors
def group_sequential(
    looks: Annotated[
        str,
        typer.Option(
            help="Information fractions of the looks, e.g. 0.25,0.5,0.75,1 (share of the "
            "planned learners)."
        ),
    ],
    alpha: Annotated[
        float, typer.Option(help="Level (one-sided, or two-sided with --sides 2).")
    ] = 0.025,
    spending: Annotated[
        str, typer.Option(help="obrien-fleming | pocock | power | hsd (Lan-DeMets spending).")
    ] = "obrien-fleming",
    sides: Annotated[int, typer.Option(help="1 (one-sided) or 2 (symmetric two-sided).")] = 1,
    param: Annotated[
        float | None, typer.Option(help="rho of power spending, gamma of hsd spending.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Boundaries per look of a group-sequential design (alpha spending)."""
    from cohortlens.experiments.group_sequential import group_sequential_design

    fractions = [_float(x.strip(), "--looks") for x in looks.split(",") if x.strip()]
    design = group_sequential_design(fractions, alpha, spending, sides=sides, param=param)
    if as_json:
        _print_json(design.to_dict())
        return
    table = Table(
        title=f"{spending} spending, alpha {alpha:g}, {'two' if sides == 2 else 'one'}-sided"
    )
    for col in ("look", "information", "alpha spent", "bound (z)", "nominal p"):
        table.add_column(col, justify="right")
    for row in design.to_dict()["looks"]:
        table.add_row(
            str(row["look"]),
            f"{row['information_fraction']:.4g}",
            f"{row['alpha_spent']:.6g}",
            f"{row['bound']:.4f}",
            f"{row['stage_level']:.6g}",
        )
    out.print(table)


# ---------------------------------------------------------------------------- simulate


@app.command()
@_errors
def simulate(
    learners: Annotated[int, typer.Option(min=2, help="Learners in the experiment.")] = 100_000,
    completion_effect: Annotated[
        float, typer.Option(help="Treatment shift of the completion logit.")
    ] = 0.0,
    churn_effect: Annotated[float, typer.Option(help="Treatment shift of the churn logit.")] = 0.0,
    revenue_effect: Annotated[
        float, typer.Option(help="Treatment revenue multiplier (1 = none).")
    ] = 1.0,
    effect: Annotated[
        float | None,
        typer.Option(help="Shortcut: completion logit +E, churn logit -E, revenue x(1+E)."),
    ] = None,
    cohort_scale: Annotated[
        list[str] | None,
        typer.Option(help="COHORT=SCALE: personalise the effect per cohort, repeatable."),
    ] = None,
    only_cohort: Annotated[
        list[str] | None,
        typer.Option(
            "--only-cohort",
            help="Plant the effect in this cohort only (others get none), repeatable.",
        ),
    ] = None,
    aa: Annotated[bool, typer.Option("--aa", help="A/A mode: no treatment effect at all.")] = False,
    treatment_share: Annotated[float, typer.Option(help="Share of learners in treatment.")] = 0.5,
    days: Annotated[int, typer.Option(min=1, help="Enrolment days (the 'day' column).")] = 14,
    weeks: Annotated[int, typer.Option(min=1, max=52, help="Simulated weeks of activity.")] = 2,
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 0,
    out_path: Annotated[
        Path, typer.Option("--out", help="Per-learner output (.parquet or .csv).")
    ] = Path("experiment.parquet"),
    as_json: JsonOption = False,
) -> None:
    """Simulate an A/B (or A/A) test of a cohort-personalised treatment on the learner simulator."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from cohortlens.experiments.simulation import ExperimentSimulationParams, simulate_experiment

    if effect is not None:
        completion_effect, churn_effect, revenue_effect = effect, -effect, 1.0 + effect
    params = ExperimentSimulationParams(
        n_learners=learners,
        completion_logit_shift=completion_effect,
        churn_logit_shift=churn_effect,
        revenue_multiplier=revenue_effect,
        cohort_effect_scale=dict.fromkeys(only_cohort or [], 1.0)
        | {
            k: _float(v, f"--cohort-scale {k}")
            for k, v in _parse_pairs(cohort_scale or [], "--cohort-scale").items()
        },
        default_cohort_scale=0.0 if only_cohort else 1.0,
        treatment_share=treatment_share,
        aa=aa,
        n_days=days,
        n_weeks=weeks,
        seed=seed,
    )
    suffix = out_path.name.lower()
    if not suffix.endswith((".parquet", ".csv")):
        raise ExperimentInputError(f"--out {out_path}: expected a .parquet or .csv file name")
    with (
        err.status(f"simulating {learners:,} learners", spinner="dots")
        if not as_json
        else _NullContext()
    ):
        sim = simulate_experiment(params)
    if suffix.endswith(".csv"):
        pacsv.write_csv(sim.data, out_path)
    else:
        pq.write_table(sim.data, out_path)
    truth_path = out_path.with_name(out_path.name.split(".")[0] + ".truth.json")
    truth = {
        "params": _params_dict(params),
        "true_effects": dict(sim.true_effects),
        "cohort_true_effects": {k: dict(v) for k, v in sim.cohort_true_effects.items()},
    }
    truth_path.write_text(json.dumps(_finite(truth), indent=2) + "\n", encoding="utf-8")
    summary = {
        "out": str(out_path),
        "truth": str(truth_path),
        "learners": sim.data.num_rows,
        "true_effects": dict(sim.true_effects),
        "cohort_true_effects": {k: dict(v) for k, v in sim.cohort_true_effects.items()},
    }
    if as_json:
        _print_json(summary)
        return
    out.print(f"wrote {sim.data.num_rows:,} learners to {out_path} (true effects in {truth_path})")
    for name, value in sim.true_effects.items():
        out.print(f"  true effect on {name}: {value:+.6g}")
    out.print(
        "analyse with: cohortlens experiment analyze "
        f"{out_path} --variant-col variant --metric completed:binary --guardrail churned:binary "
        "--lower-is-better churned --metric revenue:mean --covariate revenue=pre_revenue "
        "--metric revenue_per_event:ratio:revenue/events "
        + (
            "--by cohort"
            if params.cohort_effect_scale or params.default_cohort_scale != 1.0
            else f"--time-col day --sequential --tune-n {learners}"
        )
    )


# ---------------------------------------------------------------------------- assign


@app.command()
@_errors
def assign(
    learners: Annotated[
        Path, typer.Argument(help="CSV/Parquet with a learner id column (and cohorts).")
    ],
    experiment: Annotated[str, typer.Option(help="Experiment name (the default salt).")],
    variants: Annotated[
        str, typer.Option(help="NAME=WEIGHT list, e.g. control=50,treatment=50.")
    ] = ("control=1,treatment=1"),
    id_col: Annotated[str, typer.Option(help="Learner id column.")] = "learner_id",
    salt: Annotated[str, typer.Option(help="Hash salt (default: the experiment name).")] = "",
    traffic: Annotated[
        float, typer.Option(help="Share of eligible learners in the experiment.")
    ] = 1.0,
    cohort_col: Annotated[str | None, typer.Option(help="Cohort column, for --target.")] = None,
    target: Annotated[list[str] | None, typer.Option(help="Cohort to include, repeatable.")] = None,
    out_path: Annotated[Path, typer.Option("--out", help="Assignments (.parquet or .csv).")] = Path(
        "assignments.parquet"
    ),
    exposures: Annotated[
        Path | None, typer.Option(help="Also write exposure records (Parquet).")
    ] = None,
    log_exposures: Annotated[
        bool, typer.Option("--log-exposures", help="Append exposure records to the store (--db).")
    ] = False,
    db: Annotated[
        str | None, typer.Option("--db", help="Store for --log-exposures (default $COHORTLENS_DB).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Assign learners to variants with the deterministic salted hash (docs/EXPERIMENTS.md)."""
    import duckdb
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from cohortlens.experiments.assignment import (
        ExperimentDesign,
        Variant,
        exposure_records,
    )
    from cohortlens.experiments.assignment import (
        assign as run,
    )

    weights = _parse_weights(variants)
    design = ExperimentDesign(
        name=experiment,
        variants=tuple(Variant(k, v) for k, v in weights.items()),
        salt=salt,
        traffic_fraction=traffic,
        target_cohorts=frozenset(target) if target else None,
    )
    if target and not cohort_col:
        raise ExperimentInputError("--target needs --cohort-col")
    if not learners.exists():
        raise ExperimentInputError(f"{learners}: no such file")
    reader = "read_parquet" if learners.suffix.lower() in (".parquet", ".pq") else "read_csv_auto"
    cols = [id_col] + ([cohort_col] if cohort_col else [])
    select = ", ".join(f"CAST({_ident(c)} AS VARCHAR) AS {_ident(c)}" for c in cols)
    path_literal = "'" + str(learners).replace("'", "''") + "'"
    try:
        with duckdb.connect() as con:
            table = con.sql(f"SELECT {select} FROM {reader}({path_literal})").to_arrow_table()
    except duckdb.Error as exc:
        raise ExperimentInputError(f"{learners}: {exc}") from exc
    if table.column(id_col).null_count:
        raise ExperimentInputError(
            f"{learners}: {table.column(id_col).null_count} row(s) have no {id_col}"
        )
    result = run(table.column(id_col), design, table.column(cohort_col) if cohort_col else None)
    if out_path.name.lower().endswith(".csv"):
        pacsv.write_csv(result, out_path)
    else:
        pq.write_table(result, out_path)
    records = exposure_records(result, datetime.now(UTC), design)
    if exposures is not None:
        pq.write_table(records, exposures)
    logged = 0
    if log_exposures:
        from cohortlens.cli._store import open_for_command

        with open_for_command(db) as store:
            logged = store.log_exposures(records)
    counts = {
        str(k): int(v)
        for k, v in zip(
            *_value_counts(pc.fill_null(result.column("variant"), "(none)")), strict=True
        )
    }
    if as_json:
        _print_json({"out": str(out_path), "counts": counts, "exposures_logged": logged})
        return
    out.print(f"assigned {result.num_rows:,} learners -> {out_path}")
    if log_exposures:
        out.print(f"  logged {logged:,} exposures to the store")
    for k, v in sorted(counts.items()):
        out.print(f"  {k}: {v:,}")


# ---------------------------------------------------------------------------- helpers


def _load(
    data: Path,
    variant_col: str,
    metric: list[str] | None,
    guardrail: list[str] | None,
    covariate: list[str] | None,
    cap: list[str] | None,
    lower_is_better: list[str] | None,
    time_col: str | None,
    db: str | None = None,
    *,
    drop_nonfinite: bool = False,
    quiet: bool = False,
    by: str | None = None,
    segments_out: dict[str, Any] | None = None,
    progress: _ReduceProgress | None = None,
) -> tuple[list[MetricSpec], list[Any], str | None, dict[str, float] | None]:
    """Metrics and statistics from a JSON statistics file or per-learner data."""
    from cohortlens.experiments.reduce import reduce_data
    from cohortlens.experiments.serialize import read_stats_json

    lower = set(lower_is_better or [])
    if data.suffix.lower() == ".json":
        if by is not None:
            raise ExperimentInputError(
                f"{data}: --by needs per-learner data (a statistics file has no segments)"
            )
        if metric or guardrail or covariate or cap or time_col:
            raise ExperimentInputError(
                f"{data}: a statistics file defines its metrics; --metric, --guardrail, "
                "--covariate, --cap and --time-col apply to per-learner data only"
            )
        content = read_stats_json(data)
        specs = [_replace_lower(m, m.name in lower or m.lower_is_better) for m in content.metrics]
        _check_known(lower, specs, "--lower-is-better")
        weights = dict(content.expected_weights) if content.expected_weights else None
        return specs, list(content.periods), content.control, weights
    if not metric and not guardrail:
        raise ExperimentInputError("name at least one --metric (or --guardrail)")
    covariates = _parse_pairs(covariate or [], "--covariate")
    caps = {k: _float(v, f"--cap {k}") for k, v in _parse_pairs(cap or [], "--cap").items()}
    specs = [
        _parse_metric(text, role, covariates, caps, lower)
        for role, texts in (
            (MetricRole.PRIMARY, metric or []),
            (MetricRole.GUARDRAIL, guardrail or []),
        )
        for text in texts
    ]
    for option, names in (
        ("--covariate", set(covariates)),
        ("--cap", set(caps)),
        ("--lower-is-better", lower),
    ):
        _check_known(names, specs, option)
    source: Any = data
    if str(data).startswith("store:"):
        from cohortlens.cli._store import open_for_command

        name = str(data).removeprefix("store:")
        with open_for_command(db, read_only=True) as store:
            source = store.experiment_outcomes(name)
            if source.num_rows == 0:
                raise ExperimentInputError(f"the store has no exposures of experiment {name!r}")
            if by == "cohort" and "cohort" not in source.column_names:
                from cohortlens.experiments.segments import cohort_at_exposure

                history = store.routing_history()
                model_ids = {
                    h["routing"].get(key)
                    for h in history
                    for key in ("stable_model_id", "candidate_model_id")
                }
                active = store.active_model()
                fallback = active[0] if active else None
                model_ids |= {fallback}
                assignments = {
                    int(m): store.read_assignments(int(m)) for m in model_ids if m is not None
                }
                source = cohort_at_exposure(source, history, assignments, fallback)
    if progress is not None:
        from cohortlens.experiments.reduce import source_rows

        progress.rows = source_rows(source)
    reduction = reduce_data(
        source,
        variant_col=variant_col,
        metrics=specs,
        period_col=time_col,
        segment_col=by,
        drop_nonfinite=drop_nonfinite,
        progress=progress.update if progress is not None else None,
    )
    if segments_out is not None:
        segments_out.update(reduction.segments)
    if reduction.nonfinite_dropped:
        err.print(
            "dropped non-finite values (learners left out of that metric): "
            + ", ".join(f"{c} {n:,}" for c, n in reduction.nonfinite_dropped.items())
        )
    return specs, reduction.periods, None, None


def _parse_metric(
    text: str, role: MetricRole, covariates: dict[str, str], caps: dict[str, float], lower: set[str]
) -> MetricSpec:
    parts = text.split(":")
    usage = (
        "expected NAME:binary|mean|ratio[:NUM/DEN], "
        "e.g. completed:binary or rpe:ratio:revenue/events"
    )
    if len(parts) not in (2, 3) or not parts[0]:
        raise ExperimentInputError(f"--metric {text!r}: {usage}")
    name, kind_text = parts[0], parts[1]
    if kind_text not in _KIND_NAMES:
        raise ExperimentInputError(f"--metric {text!r}: unknown type {kind_text!r}; {usage}")
    kind = MetricKind(kind_text)
    numerator = denominator = None
    if kind_of(kind).needs_denominator:
        num, sep, den = (parts[2] if len(parts) == 3 else "").partition("/")
        if not sep or not num or not den:
            raise ExperimentInputError(f"--metric {text!r}: a ratio needs NUM/DEN columns; {usage}")
        numerator, denominator = num, den
    elif len(parts) == 3:
        raise ExperimentInputError(f"--metric {text!r}: only ratio metrics take NUM/DEN; {usage}")
    covariate, covariate_denominator = covariates.get(name), None
    if covariate is not None and "/" in covariate:
        covariate, _, covariate_denominator = covariate.partition("/")
        if not covariate or not covariate_denominator:
            raise ExperimentInputError(
                f"--covariate {name}={covariates[name]}: expected COLUMN or NUM/DEN"
            )
    try:
        return MetricSpec(
            name=name,
            kind=kind,
            numerator=numerator,
            denominator=denominator,
            covariate=covariate,
            covariate_denominator=covariate_denominator,
            cap_quantile=caps.get(name),
            role=role,
            lower_is_better=name in lower,
        )
    except ValueError as exc:
        raise ExperimentInputError(f"--metric {text!r}: {exc}") from exc


def _replace_lower(m: MetricSpec, lower: bool) -> MetricSpec:
    from dataclasses import replace

    return replace(m, lower_is_better=lower)


def _check_known(names: set[str], specs: list[MetricSpec], option: str) -> None:
    unknown = sorted(names - {m.name for m in specs})
    if unknown:
        raise ExperimentInputError(f"{option}: unknown metric(s) {', '.join(unknown)}")


def _parse_pairs(texts: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for text in texts:
        for item in text.split(","):
            key, sep, value = item.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ExperimentInputError(f"{option} {text!r}: expected KEY=VALUE")
            out[key.strip()] = value.strip()
    return out


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _report_meta(periods: list[Any], time_col: str | None) -> Any:
    """The report header: the command line and the first and last period of the data."""
    from cohortlens.cli._report import command_line
    from cohortlens.reports import ReportMeta

    labels = [str(p.label) for p in periods if str(p.label)]
    if labels:
        return ReportMeta(
            command=command_line(),
            data_range=(labels[0], labels[-1]),
            data_basis=f"first and last {time_col or 'period'}",
        )
    return ReportMeta(
        command=command_line(), data_basis="one period (no --time-col): dates not known"
    )


def _parse_weights(text: str) -> dict[str, float]:
    weights = {k: _float(v, f"weight of {k}") for k, v in _parse_pairs([text], "--weights").items()}
    if any(w < 0 or not math.isfinite(w) for w in weights.values()):
        raise ExperimentInputError(f"weights must be finite and >= 0, got {text!r}")
    return weights


def _float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ExperimentInputError(f"{what}: {text!r} is not a number") from None


def _choice(value: str, option: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ExperimentInputError(f"{option} {value!r}: expected one of {', '.join(allowed)}")
    return value


def _value_counts(arr: Any) -> tuple[list[Any], list[Any]]:
    import pyarrow.compute as pc

    vc = pc.value_counts(arr)
    return vc.field("values").to_pylist(), vc.field("counts").to_pylist()


def _params_dict(params: Any) -> dict[str, Any]:
    from dataclasses import asdict

    d = asdict(params)
    d["cohort_effect_scale"] = dict(d["cohort_effect_scale"])
    return d


class _ReduceProgress:
    """A rich progress bar for a reduction: percent, rows/s and ETA, on stderr."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            ProgressColumn,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        owner = self

        class RowsPerSecond(ProgressColumn):
            def render(self, task: Any) -> Text:
                elapsed = task.elapsed or 0.0
                if owner.rows is None or elapsed <= 0.0:
                    return Text("? rows/s")
                rate = owner.rows * (task.completed / 100.0) / elapsed
                return Text(f"{rate:,.0f} rows/s")

        self.rows: int | None = None
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            RowsPerSecond(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err,
        )
        self._tasks: dict[str, Any] = {}

    def update(self, stage: str, percent: float) -> None:
        """The reduction's callback: ``stage`` is ``caps`` or ``sums``."""
        if stage not in self._tasks:
            label = {"caps": "reduce: cap quantiles", "sums": "reduce: sums"}.get(stage, stage)
            self._tasks[stage] = self._progress.add_task(label, total=100.0)
        self._progress.update(self._tasks[stage], completed=percent)

    def __enter__(self) -> _ReduceProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


@contextlib.contextmanager
def _reduce_progress(enabled: bool) -> Iterator[_ReduceProgress | None]:
    """A progress bar on a terminal (percent, rows/s, ETA); nothing otherwise."""
    if not enabled:
        yield None
        return
    with _ReduceProgress() as bar:
        yield bar


class _NullContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _print_json(payload: object) -> None:
    sys.stdout.write(json.dumps(_finite(payload), indent=2, allow_nan=False) + "\n")


def _finite(value: object) -> object:
    """NaN -> None and ±inf -> "inf"/"-inf", recursively (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _fmt(v: float, pct: bool = False) -> str:
    if not math.isfinite(v):
        return "—"
    if pct:
        return f"{v:+.2%}"
    if abs(v) >= 1e4:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def _print_segments(seg: Any) -> None:
    if seg.warning:
        out.print(f"[yellow]warning:[/] {seg.warning}")
    out.print(f"[bold]total[/] (sum of {len(seg.segments)} segments by {seg.by})")
    _print_report(seg.total)
    for name, rep in seg.segments.items():
        out.print(
            f"\n[bold]segment {seg.by}={name}[/] "
            f"(SRM p Holm-adjusted across segments {_fmt(seg.srm_pvalues_holm[name])})"
        )
        for e in rep.effects:
            out.print(
                f"  {e.metric} · {e.variant}: lift {_fmt(e.effect_size)} "
                f"[{_fmt(e.effect_size_ci_lower)}, {_fmt(e.effect_size_ci_upper)}] "
                f"p {_fmt(e.pvalue)} ({seg.segment_correction} across segments "
                f"{_fmt(e.segment_pvalue)}) {e.verdict.value}"
            )
    for h in seg.heterogeneity:
        out.print(
            f"heterogeneity {h.metric} · {h.variant}: Cochran's Q {_fmt(h.q)} "
            f"(df {h.df}), p {_fmt(h.pvalue)}, I² {_fmt(h.i_squared, True)}"
        )


def _print_report(result: Any) -> None:
    srm = result.srm
    if result.status is ReportStatus.SRM_MISMATCH:
        out.print(
            f"[bold red]SAMPLE RATIO MISMATCH[/] (p = {srm.pvalue:.2g} < {srm.alpha}): "
            "conclusions withheld"
        )
    elif result.status is ReportStatus.GUARDRAIL_FAILED:
        out.print("[bold red]GUARDRAIL FAILED[/]")
    elif math.isfinite(srm.pvalue):
        out.print(f"[green]trust checks passed[/] (SRM p = {_fmt(srm.pvalue)})")
    else:
        out.print("[yellow]SRM not testable[/] (fewer than two arms with a design weight)")
    out.print("units: " + ", ".join(f"{k} {v:,}" for k, v in result.units.items()))
    seq = result.sequential is not None
    colors = {"improvement": "green", "regression": "red", "withheld": "yellow"}
    for e in result.effects:
        verdict = e.verdict.value
        role = " (guardrail)" if e.role is MetricRole.GUARDRAIL else ""
        status = "" if e.status.value == "ok" else f" [yellow]status {e.status.value}[/]"
        color = colors.get(verdict, "white")
        out.print(
            f"\n[bold]{e.metric}[/]{role} · {e.variant} vs {e.control}: "
            f"[bold {color}]{verdict.replace('_', ' ')}[/]{status}"
        )
        out.print(
            f"  {e.control} {_fmt(e.mean_control)}  {e.variant} {_fmt(e.mean_treatment)}  "
            f"(n {e.n_control:,} / {e.n_treatment:,}; {e.test})"
        )
        out.print(
            f"  abs lift {_fmt(e.effect_size)} [{_fmt(e.effect_size_ci_lower)}, "
            f"{_fmt(e.effect_size_ci_upper)}]   rel {_fmt(e.rel_effect_size, True)} "
            f"[{_fmt(e.rel_effect_size_ci_lower, True)}, {_fmt(e.rel_effect_size_ci_upper, True)}]"
        )
        adj = {"holm": e.pvalue_holm, "bh": e.pvalue_bh}.get(result.correction, e.pvalue)
        p_line = f"  p {_fmt(e.pvalue)} (rel p {_fmt(e.rel_pvalue)})"
        if e.role is MetricRole.PRIMARY and result.correction != "none":
            p_line += f" ({result.correction} {_fmt(adj)})"
        if seq:
            p_line += (
                f"   always-valid p {_fmt(e.seq_pvalue)} "
                f"CI [{_fmt(e.seq_ci_lower)}, {_fmt(e.seq_ci_upper)}]"
            )
        out.print(p_line)
        if e.cuped_applied:
            out.print(
                f"  CUPED variance reduction {_fmt(e.variance_reduction, True)} "
                f"(theta {_fmt(e.cuped_theta)})"
            )
        out.print(
            f"  impact [{_fmt(e.impact_ci_lower)}, {_fmt(e.impact_ci_upper)}] "
            f"{e.impact_unit} over {e.impact_units:,} learners"
        )
