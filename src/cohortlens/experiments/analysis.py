"""Compare arms from sufficient statistics: lifts, CIs, p-values, CUPED, SRM, verdicts.

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
from scipy import special

from cohortlens.experiments import _moments
from cohortlens.experiments.errors import (
    AnalysisStatus,
    ExperimentInputError,
    ReportStatus,
    Verdict,
)
from cohortlens.experiments.multiplicity import adjust_bh, adjust_holm
from cohortlens.experiments.results import EffectEstimate, ExperimentReport, SequentialLook
from cohortlens.experiments.sequential import (
    SequentialParams,
    multiplier_scalar,
    pvalue_scalar,
    running_interval,
    running_pvalue,
)
from cohortlens.experiments.spec import (
    AnalysisConfig,
    BinaryTest,
    MetricKind,
    MetricRole,
    MetricSpec,
)
from cohortlens.experiments.srm import SrmResult, check_srm
from cohortlens.experiments.stats import ExperimentStats, SufficientStats

#: Divisor offset of the per-unit variance for each metric kind (see module docstring).
_DDOF: dict[MetricKind, int] = {MetricKind.BINARY: 0, MetricKind.MEAN: 1, MetricKind.RATIO: 1}
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
    fields_ = _compare_fields(control, treatment, MetricKind(kind), cfg)
    return EffectEstimate(
        metric=metric, role=role, variant=variant, control=control_name, **fields_
    )


def _test_name(kind: MetricKind, cfg: AnalysisConfig, use_t: bool, covariate: bool) -> str:
    """The ``test`` field: stable names for the defaults, suffixes for the options."""
    if kind is MetricKind.MEAN:
        name = ("student_t" if cfg.equal_var else "welch_t") if use_t else "z"
    elif kind is MetricKind.RATIO:
        name = "t_delta" if use_t else "z_delta"
    else:
        pooled = cfg.binary_test == "pooled" and not covariate
        name = ("t" if use_t else "z") + ("_pooled" if pooled else "_unpooled")
        if cfg.yates and not covariate:
            name += "_yates"
    return name


def _tails(statistic: float, df: float, use_t: bool, alternative: str) -> float:
    """p-value of ``statistic`` under N(0, 1) or t(df) for the alternative."""
    if use_t and math.isfinite(df):
        cdf = float(special.stdtr(df, statistic))
        sf = float(special.stdtr(df, -statistic))
    else:
        cdf, sf = float(special.ndtr(statistic)), float(special.ndtr(-statistic))
    if alternative == "greater":
        return sf
    if alternative == "less":
        return cdf
    return min(1.0, 2.0 * min(cdf, sf))


def _quantile(alpha: float, df: float, use_t: bool, alternative: str) -> float:
    level = 1.0 - (alpha / 2.0 if alternative == "two-sided" else alpha)
    if use_t and math.isfinite(df):
        return float(special.stdtrit(df, level))
    return float(special.ndtri(level))


def _interval(center: float, half: float, alternative: str) -> tuple[float, float]:
    lower = -math.inf if alternative == "less" else center - half
    upper = math.inf if alternative == "greater" else center + half
    return lower, upper


def _compare_fields(
    control: SufficientStats,
    treatment: SufficientStats,
    kind: MetricKind,
    cfg: AnalysisConfig,
) -> dict[str, Any]:
    """The numeric fields of :class:`EffectEstimate` (names and role excluded)."""
    alpha, alt = cfg.alpha, cfg.alternative
    if control.columns != treatment.columns:
        raise ValueError(
            f"control has columns {control.columns}, treatment has {treatment.columns}"
        )
    if (kind is MetricKind.RATIO) != control.has_ratio:
        raise ValueError(
            f"{kind.value} metric: statistics with columns {control.columns} do not fit"
        )
    ratio = control.has_ratio
    use_t = cfg.use_t if cfg.use_t is not None else kind is MetricKind.MEAN
    f_c, f_t = _point(control, ratio), _point(treatment, ratio)
    out: dict[str, Any] = {
        "kind": kind,
        "status": AnalysisStatus.OK,
        "test": _test_name(kind, cfg, use_t, control.has_covariate),
        "n_control": control.n,
        "n_treatment": treatment.n,
        "alpha": alpha,
        "alternative": alt,
        "rel_scale": cfg.rel_scale,
        "mean_control": f_c,
        "mean_treatment": f_t,
    }
    if control.n == 0 or treatment.n == 0:
        return out | {"status": AnalysisStatus.EMPTY_ARM}
    if math.isnan(f_c) or math.isnan(f_t):
        return out | {"status": AnalysisStatus.ZERO_DENOMINATOR}
    if control.n < 2 or treatment.n < 2:
        return out | _points(f_t - f_c, f_c, AnalysisStatus.TOO_FEW_UNITS)

    ddof = _DDOF[kind]
    sums_c, cross_c = _moments.raw_sums(control)
    sums_t, cross_t = _moments.raw_sums(treatment)
    mu_c, cov_c = _moments.moments(control.n, sums_c, cross_c, ddof)
    mu_t, cov_t = _moments.moments(treatment.n, sums_t, cross_t, ddof)
    grad_c, grad_t = _moments.gradient(mu_c, ratio), _moments.gradient(mu_t, ratio)
    var0 = _moments.quad(grad_c, cov_c) / control.n + _moments.quad(grad_t, cov_t) / treatment.n
    theta, delta = 0.0, f_t - f_c
    adj_c, adj_t = grad_c, grad_t
    x_pool = 0.0
    if control.has_covariate:
        # θ from the two arms pooled: sums add.
        width = len(sums_c)
        pooled_sums = [sums_c[i] + sums_t[i] for i in range(width)]
        theta = _moments.theta(
            control.n + treatment.n,
            pooled_sums,
            [[cross_c[i][j] + cross_t[i][j] for j in range(width)] for i in range(width)],
            ddof,
            ratio,
        )
        x_pool = pooled_sums[-1] / (control.n + treatment.n)
        adj_c, adj_t = [*grad_c[:-1], -theta], [*grad_t[:-1], -theta]
        delta -= theta * (mu_t[-1] - mu_c[-1])
    unit_c = _moments.quad(adj_c, cov_c)
    unit_t = _moments.quad(adj_t, cov_t)
    v_c, v_t = unit_c / control.n, unit_t / treatment.n
    raw_v_t = v_t
    if cfg.equal_var:
        pooled_unit = ((control.n - 1) * unit_c + (treatment.n - 1) * unit_t) / (
            control.n + treatment.n - 2
        )
        v_c, v_t = pooled_unit / control.n, pooled_unit / treatment.n
        df = float(control.n + treatment.n - 2)
    var = v_c + v_t
    out |= {
        "cuped_applied": theta != 0.0,
        "cuped_theta": theta,
        "std_error_unadjusted": math.sqrt(max(var0, 0.0)),
        "variance_reduction": (1.0 - var / var0) if (theta != 0.0 and var0 > 0.0) else _NAN,
    }
    if not var > 0.0:
        return out | _points(delta, f_c, AnalysisStatus.ZERO_VARIANCE)
    se = math.sqrt(var)
    if not cfg.equal_var:
        df = var**2 / (v_t**2 / (treatment.n - 1) + v_c**2 / (control.n - 1))
    if not use_t:
        df = math.inf

    statistic = delta / se
    if kind is MetricKind.BINARY and not control.has_covariate:
        se0 = se
        if cfg.binary_test == "pooled":
            pooled_p = (control.sum_y + treatment.sum_y) / (control.n + treatment.n)
            se0 = math.sqrt(pooled_p * (1.0 - pooled_p) * (1.0 / control.n + 1.0 / treatment.n))
        shifted = delta
        if cfg.yates:
            cc = 0.5 * (1.0 / control.n + 1.0 / treatment.n)
            if alt == "two-sided":
                shifted = math.copysign(max(abs(delta) - cc, 0.0), delta)
            else:
                shifted = delta - cc if alt == "greater" else delta + cc
        statistic = shifted / se0 if se0 > 0.0 else _NAN
    quantile = _quantile(alpha, df, use_t, alt)
    lower, upper = _interval(delta, quantile * se, alt)
    out |= {
        "effect_size": delta,
        "effect_size_ci_lower": lower,
        "effect_size_ci_upper": upper,
        "std_error": se,
        "statistic": statistic,
        "df": df,
        "pvalue": _tails(statistic, df, use_t, alt),
    }
    rel = rel_se = rel_stat = _NAN
    log_scale = cfg.rel_scale == "log"
    if f_c == 0.0:
        out["status"] = AnalysisStatus.ZERO_BASELINE
    else:
        adjusted_base = control.has_covariate and cfg.cuped_baseline == "adjusted"
        base = f_c - theta * (mu_c[-1] - x_pool) if adjusted_base else f_c
        rel = delta / base if base != 0.0 else _NAN
        if adjusted_base:
            # R = Δ / g_c, g_c the adjusted control metric: dR/d(control) ∝ (1 + R)·adj_c.
            rel_grad_c = [(1.0 + rel) * a for a in adj_c]
        else:
            # R = Δ / f_c: dR/d(control) ∝ adj_c + k·grad_c, k = R (the delta method) or,
            # GrowthBook's term, f_t/f_c - 1 (the unadjusted lift).
            k = (f_t / f_c - 1.0) if cfg.cuped_rel_variance == "growthbook" else rel
            rel_grad_c = [a + k * g for a, g in zip(adj_c, grad_c, strict=True)]
        rel_v_c = _moments.quad(rel_grad_c, cov_c) / control.n
        rel_df = df
        if math.isfinite(rel) and (not log_scale or 1.0 + rel > 0.0):
            # Per-arm variance terms of the relative lift on the scale of its CI: divided by
            # base² (linear), or by the treatment level² (log: log(1 + R) = log g_t - log g_c).
            scale2 = (base * (1.0 + rel)) ** 2 if log_scale else base**2
            comp_t, comp_c = raw_v_t / scale2, rel_v_c / scale2
            if cfg.equal_var:
                n_all = control.n + treatment.n
                pooled = (
                    (control.n - 1) * comp_c * control.n + (treatment.n - 1) * comp_t * treatment.n
                ) / (n_all - 2)
                scale_var = pooled * (1.0 / control.n + 1.0 / treatment.n)
            else:
                scale_var = comp_t + comp_c
                if log_scale and use_t and scale_var > 0.0:
                    # tea-tasting: Welch df of the log-scale terms (linear: the absolute df,
                    # as GrowthBook).
                    rel_df = scale_var**2 / (
                        comp_t**2 / (treatment.n - 1) + comp_c**2 / (control.n - 1)
                    )
            if scale_var > 0.0:
                scale_se = math.sqrt(scale_var)
                rel_q = _quantile(alpha, rel_df, use_t, alt)
                rel_stat = (math.log1p(rel) if log_scale else rel) / scale_se
                if log_scale:
                    rel_se = scale_se * (1.0 + rel)
                    lo, hi = _interval(math.log1p(rel), rel_q * scale_se, alt)
                    lo, hi = math.expm1(lo), math.expm1(hi)
                else:
                    rel_se = scale_se
                    lo, hi = _interval(rel, rel_q * scale_se, alt)
                out |= {"rel_effect_size_ci_lower": lo, "rel_effect_size_ci_upper": hi}
        out |= {
            "rel_effect_size": rel,
            "rel_std_error": rel_se,
            "rel_statistic": rel_stat,
            "rel_pvalue": _tails(rel_stat, rel_df, use_t, alt) if math.isfinite(rel_stat) else _NAN,
        }
        if not math.isfinite(rel_stat):
            out["status"] = AnalysisStatus.ZERO_BASELINE
    if cfg.sequential is not None:
        n_units = control.n + treatment.n
        r2 = cfg.sequential.rho_squared(alpha, alt)
        mult = multiplier_scalar(n_units, r2, alpha, alt)
        lo, hi = _interval(delta, mult * se, alt)
        out |= {
            "seq_ci_lower": lo,
            "seq_ci_upper": hi,
            "seq_pvalue": pvalue_scalar(delta / se, n_units, r2, alt),
        }
        if math.isfinite(rel_stat):
            if log_scale:
                log_rel = math.log1p(rel)
                log_se = rel_se / (1.0 + rel)
                lo, hi = _interval(log_rel, mult * log_se, alt)
                lo, hi = math.expm1(lo), math.expm1(hi)
            else:
                lo, hi = _interval(rel, mult * rel_se, alt)
            out |= {
                "seq_rel_ci_lower": lo,
                "seq_rel_ci_upper": hi,
                "seq_rel_pvalue": pvalue_scalar(rel_stat, n_units, r2, alt),
            }
    return out


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


def _point(stats: SufficientStats, ratio: bool) -> float:
    """The arm's metric: mean of y, or Σy/Σd for ratios (NaN when undefined)."""
    if stats.n == 0:
        return _NAN
    if ratio:
        assert stats.sum_d is not None
        return stats.sum_y / stats.sum_d if stats.sum_d != 0.0 else _NAN
    return stats.sum_y / stats.n


def _points(delta: float, f_c: float, status: AnalysisStatus) -> dict[str, Any]:
    """Point estimates only (no inference), for degenerate data."""
    rel = delta / f_c if f_c != 0.0 else _NAN
    return {"effect_size": delta, "rel_effect_size": rel, "status": status}


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
        row = _compare_fields(c, t, spec.kind, config)
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
    scale = float(population)
    if spec.kind is MetricKind.RATIO:
        c = _arm(pooled, spec, control)
        scale *= (c.sum_d or 0.0) / c.n if c.n else _NAN
    row |= {
        "impact_ci_lower": lo * scale,
        "impact_ci_upper": hi * scale,
        "impact_units": population,
        "impact_unit": {
            MetricKind.BINARY: f"{spec.name} (count)",
            MetricKind.MEAN: f"{spec.name} (total)",
            MetricKind.RATIO: f"{spec.value_column} (total)",
        }[spec.kind],
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
