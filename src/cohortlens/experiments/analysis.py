"""Compare arms from sufficient statistics: lifts, CIs, p-values, CUPED, SRM, verdicts.

Each comparison is computed by its metric kind (:mod:`~cohortlens.experiments.kinds`);
this module assembles reports: every metric × treatment, the sequential path over periods,
business impact, multiplicity corrections, SRM and verdicts.

Conventions (the full list with formulas is in docs/EXPERIMENTS.md):

* **Absolute lift** ``Δ = f_t - f_c`` where ``f`` is the arm's mean (binary, mean) or
  ``Σy/Σd`` (ratio); with CUPED, ``f - θ·x̄`` per arm.
* **Variance** by the delta method on each arm's moments of ``(y, d, x)``, arms independent.
  Binary metrics use ``p(1-p)/n`` (divisor ``n``, as the z-test does); mean and ratio metrics
  use the sample covariance (divisor ``n - 1``).
* **Tests**: Welch t with Welch–Satterthwaite df for means (as ``scipy.stats.ttest_ind(...,
  equal_var=False)``); z for binary (unpooled by default, no continuity correction) and
  ratio metrics. All two-sided.
* **Relative lift** ``Δ / f_c`` (``f_c`` the *unadjusted* control metric) with a symmetric,
  linear-scale delta-method CI using the same quantile as the absolute CI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cohortlens.experiments.errors import (
    ExperimentInputError,
    ReportStatus,
    Verdict,
)
from cohortlens.experiments.kinds import MetricKind, kind_of
from cohortlens.experiments.multiplicity import adjust_bh, adjust_holm
from cohortlens.experiments.results import EffectEstimate, ExperimentReport, SequentialLook
from cohortlens.experiments.sequential import (
    SequentialParams,
    running_interval,
    running_pvalue,
)
from cohortlens.experiments.spec import (
    AnalysisConfig,
    BinaryTest,
    MetricRole,
    MetricSpec,
)
from cohortlens.experiments.srm import SrmResult, check_srm
from cohortlens.experiments.stats import ExperimentStats, SufficientStats

_NAN = math.nan


def compare(
    control: SufficientStats,
    treatment: SufficientStats,
    kind: MetricKind | str,
    *,
    alpha: float = 0.05,
    binary_test: BinaryTest = "unpooled",
    sequential: SequentialParams | None = None,
    metric: str = "metric",
    variant: str = "treatment",
    control_name: str = "control",
    role: MetricRole = MetricRole.PRIMARY,
    config: AnalysisConfig | None = None,
) -> EffectEstimate:
    """Compare one treatment arm with the control arm for one metric.

    ``config`` carries every convention (alternative, relative scale, quantile, pooled
    variance, Yates, CUPED baseline); without it, ``alpha``, ``binary_test`` and
    ``sequential`` build the default configuration.

    Degenerate data (an empty arm, one unit, zero variance, zero baseline or denominator)
    returns an estimate whose :attr:`~EffectEstimate.status` says what is missing.

    Raises:
        ValueError: the two records summarise different columns, the columns do not fit
            ``kind`` (a ratio needs ``d``; binary and mean metrics must not have it), or
            ``alpha`` is outside (0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha == {alpha}, must be in (0, 1)")
    cfg = config or AnalysisConfig(alpha=alpha, binary_test=binary_test, sequential=sequential)
    fields_ = kind_of(kind).analyze(control, treatment, cfg)
    return EffectEstimate(
        metric=metric, role=role, variant=variant, control=control_name, **fields_
    )


def analyze(
    metrics: Sequence[MetricSpec],
    data: ExperimentStats | Sequence[ExperimentStats],
    config: AnalysisConfig | None = None,
) -> ExperimentReport:
    """Analyse every metric for every treatment against control.

    Args:
        metrics: the metrics, in report order (names must be unique).
        data: pooled statistics, or one record per period (day) in time order; periods are
            summed for the analysis and, with ``config.sequential``, accumulated look by
            look for the always-valid path.
        config: analysis settings (defaults: alpha 0.05, Holm, unpooled binary, equal split).

    Raises:
        ExperimentInputError: no periods, an unknown control, a metric without statistics,
            or statistics that do not fit their metric's kind.
    """
    config = config or AnalysisConfig()
    return finish(analyze_rows(metrics, data, config), config)


@dataclass
class Analysis:
    """An analysis before the verdicts: one dict of :class:`EffectEstimate` fields per
    comparison (internal; :mod:`~cohortlens.experiments.segments` re-judges them)."""

    specs: dict[str, MetricSpec]
    rows: list[dict[str, Any]]
    looks: list[SequentialLook]
    control: str
    variants: tuple[str, ...]
    units: dict[str, int]
    srm: SrmResult


def analyze_rows(
    metrics: Sequence[MetricSpec],
    data: ExperimentStats | Sequence[ExperimentStats],
    config: AnalysisConfig,
) -> Analysis:
    """Every comparison's numbers and the within-report Holm/BH p-values; no verdicts yet."""
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise ExperimentInputError(f"metric names must be unique, got {', '.join(names)}")
    periods = [data] if isinstance(data, ExperimentStats) else list(data)
    if not periods:
        raise ExperimentInputError("no statistics to analyse (zero periods)")
    cumulative = _accumulate(periods)
    pooled = cumulative[-1]
    variants = pooled.variants
    with_units = [v for v in variants if pooled.units.get(v, 0) > 0]
    if len(with_units) < 2:
        raise ExperimentInputError(
            "an experiment needs at least two arms with units; "
            + (
                f"only {', '.join(repr(v) for v in with_units)} has units"
                if with_units
                else "no variant has units"
            )
            + (f" (variants listed: {', '.join(variants)})" if variants else "")
        )
    control = _pick_control(variants, config.control)
    treatments = [v for v in variants if v != control]
    srm = check_srm(pooled.units, config.expected_weights, alpha=config.srm_alpha)
    population = (
        config.impact_units if config.impact_units is not None else sum(pooled.units.values())
    )
    with_path = config.sequential is not None and len(cumulative) > 1

    rows: list[dict[str, Any]] = []
    looks: list[SequentialLook] = []
    for spec in metrics:
        for variant in treatments:
            row = _compare_in(pooled, spec, control, variant, config)
            if with_path:
                path = [_compare_in(snap, spec, control, variant, config) for snap in cumulative]
                looks.extend(_sequential_path(row, path, cumulative, spec, variant))
            _add_impact(row, pooled, spec, control, population, config.sequential is not None)
            rows.append(row)
    _adjust(rows)
    return Analysis(
        specs=dict(zip(names, metrics, strict=True)),
        rows=rows,
        looks=looks,
        control=control,
        variants=variants,
        units=dict(pooled.units),
        srm=srm,
    )


def finish(
    analysis: Analysis,
    config: AnalysisConfig,
    *,
    pvalue_key: str | None = None,
    srm_flagged: bool | None = None,
) -> ExperimentReport:
    """Judge every comparison and build the report.

    ``pvalue_key`` overrides the field that decides verdicts (segments: the p-value
    corrected across segments); ``srm_flagged`` overrides the SRM flag.
    """
    srm = analysis.srm
    if srm_flagged is not None and srm_flagged != srm.flagged:
        srm = replace(srm, flagged=srm_flagged)
    for row in analysis.rows:
        _judge(row, analysis.specs[row["metric"]], config, srm.flagged, pvalue_key)
    effects = tuple(EffectEstimate(**row) for row in analysis.rows)
    if srm.flagged:
        status = ReportStatus.SRM_MISMATCH
    elif any(e.guardrail_failed for e in effects):
        status = ReportStatus.GUARDRAIL_FAILED
    else:
        status = ReportStatus.OK
    return ExperimentReport(
        status=status,
        control=analysis.control,
        variants=analysis.variants,
        units=analysis.units,
        alpha=config.alpha,
        correction=config.correction,
        srm=srm,
        effects=effects,
        sequential=config.sequential,
        looks=tuple(analysis.looks),
        decision=config.decision,
    )


def decision_key(config: AnalysisConfig) -> str:
    """The uncorrected p-value field that decides verdicts under ``config``."""
    key = "seq_pvalue" if config.sequential is not None else "pvalue"
    if config.decision == "relative":
        key = key.replace("pvalue", "rel_pvalue")
    return key


# ---------------------------------------------------------------------------- helpers


def _pick_control(variants: tuple[str, ...], wanted: str | None) -> str:
    if wanted is not None:
        if wanted not in variants:
            raise ExperimentInputError(
                f"control variant {wanted!r} not found; variants are {', '.join(variants)}"
            )
        return wanted
    if not variants:
        raise ExperimentInputError("the statistics list no variants")
    return "control" if "control" in variants else variants[0]


def _accumulate(periods: Sequence[ExperimentStats]) -> list[ExperimentStats]:
    out: list[ExperimentStats] = []
    for p in periods:
        out.append(p if not out else replace(out[-1] + p, label=p.label))
    return out


def _arm(snapshot: ExperimentStats, spec: MetricSpec, variant: str) -> SufficientStats:
    arms = snapshot.metrics.get(spec.name)
    if not arms:
        raise ExperimentInputError(f"no statistics for metric {spec.name!r}")
    if variant in arms:
        return arms[variant]
    return SufficientStats.empty_like(next(iter(arms.values())))


def _compare_in(
    snapshot: ExperimentStats, spec: MetricSpec, control: str, variant: str, config: AnalysisConfig
) -> dict[str, Any]:
    """Fields of one comparison in one snapshot; misfit statistics become input errors."""
    c, t = _arm(snapshot, spec, control), _arm(snapshot, spec, variant)
    try:
        row = kind_of(spec.kind).analyze(c, t, config)
    except ValueError as exc:
        raise ExperimentInputError(f"metric {spec.name!r}: {exc}") from exc
    return row | {"metric": spec.name, "role": spec.role, "variant": variant, "control": control}


def _sequential_path(
    row: dict[str, Any],
    path: list[dict[str, Any]],
    cumulative: list[ExperimentStats],
    spec: MetricSpec,
    variant: str,
) -> list[SequentialLook]:
    """Running intersection / minimum of the always-valid results over the looks.

    Updates ``row`` (the pooled comparison, the same as the last look) in place and returns
    the per-look records.
    """

    def col(key: str) -> list[float]:
        return [r.get(key, _NAN) for r in path]

    lo, hi = running_interval(col("seq_ci_lower"), col("seq_ci_upper"))
    rlo, rhi = running_interval(col("seq_rel_ci_lower"), col("seq_rel_ci_upper"))
    p = running_pvalue(col("seq_pvalue"))
    rel_p = running_pvalue(col("seq_rel_pvalue"))
    looks = [
        SequentialLook(
            label=snap.label or str(i + 1),
            metric=spec.name,
            variant=variant,
            n_units=r["n_control"] + r["n_treatment"],
            effect_size=r.get("effect_size", _NAN),
            ci_lower=r.get("effect_size_ci_lower", _NAN),
            ci_upper=r.get("effect_size_ci_upper", _NAN),
            seq_ci_lower=float(lo[i]),
            seq_ci_upper=float(hi[i]),
            pvalue=r.get("pvalue", _NAN),
            seq_pvalue=float(p[i]),
        )
        for i, (r, snap) in enumerate(zip(path, cumulative, strict=True))
    ]
    if "seq_pvalue" in row:
        row |= {
            "seq_ci_lower": float(lo[-1]),
            "seq_ci_upper": float(hi[-1]),
            "seq_rel_ci_lower": float(rlo[-1]),
            "seq_rel_ci_upper": float(rhi[-1]),
            "seq_pvalue": float(p[-1]),
            "seq_rel_pvalue": float(rel_p[-1]),
        }
    return looks


def _add_impact(
    row: dict[str, Any],
    pooled: ExperimentStats,
    spec: MetricSpec,
    control: str,
    population: int,
    sequential: bool,
) -> None:
    """Project the decision interval of the absolute lift onto ``population`` learners."""
    keys = (
        ("seq_ci_lower", "seq_ci_upper")
        if sequential
        else ("effect_size_ci_lower", "effect_size_ci_upper")
    )
    lo, hi = row.get(keys[0], _NAN), row.get(keys[1], _NAN)
    per_learner, unit = kind_of(spec.kind).impact(spec, _arm(pooled, spec, control))
    scale = float(population) * per_learner
    row |= {
        "impact_ci_lower": lo * scale,
        "impact_ci_upper": hi * scale,
        "impact_units": population,
        "impact_unit": unit,
    }


def _adjust(rows: list[dict[str, Any]]) -> None:
    """Holm and BH over the primary comparisons, for fixed and always-valid p-values."""
    primary = [r for r in rows if r["role"] is MetricRole.PRIMARY]
    if not primary:
        return
    for key in ("pvalue", "seq_pvalue", "rel_pvalue", "seq_rel_pvalue"):
        p = np.array([r.get(key, _NAN) for r in primary])
        holm, bh = adjust_holm(p), adjust_bh(p)
        for j, r in enumerate(primary):
            r[f"{key}_holm"] = float(holm[j])
            r[f"{key}_bh"] = float(bh[j])


def _judge(
    row: dict[str, Any],
    spec: MetricSpec,
    config: AnalysisConfig,
    srm_flagged: bool,
    pvalue_key: str | None = None,
) -> None:
    """Verdict from the decision p-value (always-valid when sequential, corrected if primary)."""
    key = decision_key(config)
    if pvalue_key is not None:
        key = pvalue_key
    elif spec.role is MetricRole.PRIMARY and config.correction != "none":
        key = f"{key}_{config.correction}"
    p = row.get(key, _NAN)
    if math.isnan(p):
        verdict = Verdict.NOT_COMPUTED
    elif srm_flagged:
        verdict = Verdict.WITHHELD
    elif p < config.alpha:
        good = (row["effect_size"] > 0) != spec.lower_is_better
        verdict = Verdict.IMPROVEMENT if good else Verdict.REGRESSION
    else:
        verdict = Verdict.NO_SIGNIFICANT_CHANGE
    failed: bool | None = None
    if spec.role is MetricRole.GUARDRAIL and verdict not in (
        Verdict.WITHHELD,
        Verdict.NOT_COMPUTED,
    ):
        failed = verdict is Verdict.REGRESSION
    row |= {"verdict": verdict, "guardrail_failed": failed}


__all__ = ["analyze", "compare"]
