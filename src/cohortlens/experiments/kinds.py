"""Metric kinds: each kind is a class that declares the sums it needs and analyses them.

Following tea-tasting's ``metrics/base.py``, everything that differs between metric kinds
lives on one class per kind, so adding a kind touches this module only:

* which per-learner columns the reduction sums (:meth:`Kind.columns`: the value ``y``, a
  ratio's denominator ``d``, the CUPED covariate ``x`` and a ratio covariate's denominator
  ``w``), which extra checks it runs on the values (:meth:`Kind.value_checks`), and how a
  statistics file fills defaults (:meth:`Kind.stats_from_dict`);
* how the arm's metric, its variance (divisor ``n - ddof``) and its test are computed
  (:meth:`Kind.analyze`: the delta method on the moments of ``(y, d, x, w)``, with the
  kind's hooks :meth:`Kind.point`, :meth:`Kind.test_name`, :meth:`Kind.null_statistic`);
* what its business impact is counted in (:meth:`Kind.impact`), and its power
  (:meth:`Kind.power_unit_sds`).

The registry :func:`kind_of` maps a :class:`MetricKind` to its class instance. Formulas:
docs/EXPERIMENTS.md.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from scipy import special

from cohortlens.experiments import _moments
from cohortlens.experiments.errors import AnalysisStatus, ExperimentInputError
from cohortlens.experiments.sequential import multiplier_scalar, pvalue_scalar
from cohortlens.experiments.stats import SufficientStats

if TYPE_CHECKING:
    from cohortlens.experiments.power import PowerDesign
    from cohortlens.experiments.spec import AnalysisConfig, MetricSpec

_NAN = math.nan


class MetricKind(StrEnum):
    """Metric families; each has its own variance and test (docs/EXPERIMENTS.md)."""

    #: 0/1 per learner (completion, churn): z-test, variance ``p(1-p)``.
    BINARY = "binary"
    #: Any number per learner (revenue): Welch t-test.
    MEAN = "mean"
    #: ``Σnumerator / Σdenominator`` (revenue per session): delta method, z-test.
    RATIO = "ratio"


class Kind:
    """One metric kind: the sums it needs and how it analyses them (defaults: a mean)."""

    kind: ClassVar[MetricKind]
    #: Divisor offset of the per-unit variance (``n - ddof``).
    ddof: ClassVar[int] = 1
    #: Student t with Welch df by default (``AnalysisConfig.use_t is None``); else normal.
    t_by_default: ClassVar[bool] = False
    #: The metric is ``Σy / Σd``: a denominator column is required.
    needs_denominator: ClassVar[bool] = False
    #: Values may be capped at a quantile (``MetricSpec.cap_quantile``).
    cappable: ClassVar[bool] = True
    #: Per-learner values must be 0 or 1.
    zero_one: ClassVar[bool] = False

    # ------------------------------------------------------------------ definition
    def spec_problems(self, spec: MetricSpec) -> list[str]:
        """What is wrong with ``spec`` for this kind (empty when it is fine)."""
        problems = []
        if self.needs_denominator != (spec.denominator is not None):
            problems.append("a denominator is required for ratio metrics and only for them")
        if spec.cap_quantile is not None and not self.cappable:
            problems.append(f"{self.kind.value} metrics cannot be capped")
        if spec.covariate_denominator is not None and spec.covariate is None:
            problems.append("covariate_denominator needs a covariate (its numerator)")
        if spec.covariate_denominator is not None and not self.needs_denominator:
            problems.append("a ratio covariate (covariate_denominator) is for ratio metrics")
        return problems

    def columns(self, spec: MetricSpec) -> dict[str, str]:
        """Role (``y``, ``d``, ``x``, ``w``) -> the per-learner column the reduction sums."""
        out = {"y": spec.value_column}
        if self.needs_denominator and spec.denominator is not None:
            out["d"] = spec.denominator
        if spec.covariate is not None:
            out["x"] = spec.covariate
            if spec.covariate_denominator is not None:
                out["w"] = spec.covariate_denominator
        return out

    def fits(self, stats: SufficientStats) -> bool:
        """Whether ``stats`` carries the sums this kind needs (a denominator or not)."""
        return stats.has_ratio == self.needs_denominator

    # ------------------------------------------------------------------ reduction
    def value_checks(self, y_sql: str) -> list[tuple[str, str]]:
        """Extra aggregates (name, SQL over the value expression) checked after reducing."""
        return []

    def check_reduced(self, metric: str, stats: SufficientStats, extra: dict[str, Any]) -> None:
        """Raise :class:`ExperimentInputError` when reduced values break the kind's rules."""

    def stats_from_dict(self, data: dict[str, Any]) -> SufficientStats:
        """One arm's sums from the statistics-file shape."""
        return SufficientStats.from_dict(data)

    # ------------------------------------------------------------------ analysis hooks
    def point(self, stats: SufficientStats) -> float:
        """The arm's metric (NaN when undefined): ``Σy/n`` or ``Σy/Σd``."""
        if stats.n == 0:
            return _NAN
        if stats.sum_d is not None:
            return stats.sum_y / stats.sum_d if stats.sum_d != 0.0 else _NAN
        return stats.sum_y / stats.n

    def test_name(self, cfg: AnalysisConfig, use_t: bool, covariate: bool) -> str:
        """The ``test`` field of the result."""
        return ("student_t" if cfg.equal_var else "welch_t") if use_t else "z"

    def null_statistic(
        self,
        control: SufficientStats,
        treatment: SufficientStats,
        delta: float,
        se: float,
        cfg: AnalysisConfig,
    ) -> float:
        """The test statistic (default ``Δ / se``; a kind may use another null variance)."""
        return delta / se

    def impact(self, spec: MetricSpec, control: SufficientStats) -> tuple[float, str]:
        """Per-learner scale of the absolute lift for the business impact, and its unit."""
        return 1.0, f"{spec.name} (total)"

    # ------------------------------------------------------------------ analysis
    def analyze(
        self, control: SufficientStats, treatment: SufficientStats, cfg: AnalysisConfig
    ) -> dict[str, Any]:
        """The numeric fields of :class:`~cohortlens.experiments.results.EffectEstimate`.

        Raises:
            ValueError: the two records summarise different columns, or do not fit the kind.
        """
        columns = control.columns
        if columns != treatment.columns:
            raise ValueError(f"control has columns {columns}, treatment has {treatment.columns}")
        if not self.fits(control):
            raise ValueError(
                f"{self.kind.value} metric: statistics with columns {columns} do not fit"
            )
        return _delta_method(self, control, treatment, cfg, _layout(columns))

    # ------------------------------------------------------------------ power
    def power_problems(self, baseline: float, std: float | None) -> list[str]:
        """What is wrong with a power design's baseline and std for this kind."""
        if std is None or not std > 0.0:
            return [f"std == {std}, must be > 0 for {self.kind.value} metrics"]
        return []

    def power_effect_problem(self, baseline: float, effect: float) -> str | None:
        """Why an absolute effect is impossible for this baseline, or ``None``."""
        return None

    def power_upper(self, baseline: float, std: float | None) -> float:
        """The largest effect a minimum-detectable-effect search tries."""
        assert std is not None
        return 100.0 * std

    def power_unit_sds(self, design: PowerDesign, effect: float) -> tuple[float, float]:
        """``sqrt(n_c)·se`` of the lift under the null and under the alternative."""
        assert design.std is not None
        k, f = design.ratio, design.variance_factor
        sd = math.sqrt(f * design.std**2 * (1 + 1 / k))
        return sd, sd


class Binary(Kind):
    """0/1 per learner: variance ``p(1-p)`` (divisor ``n``), z-test (unpooled by default,
    pooled and Yates-corrected as options); never capped."""

    kind = MetricKind.BINARY
    ddof = 0
    cappable = False
    zero_one = True

    def value_checks(self, y_sql: str) -> list[tuple[str, str]]:
        return [("_min", f"min({y_sql})"), ("_max", f"max({y_sql})")]

    def check_reduced(self, metric: str, stats: SufficientStats, extra: dict[str, Any]) -> None:
        lo, hi = extra.get("_min"), extra.get("_max")
        if stats.n and lo is not None and hi is not None and (lo < 0.0 or hi > 1.0):
            raise ExperimentInputError(
                f"binary metric {metric!r} has values outside [0, 1] (min {lo}, max {hi})"
            )
        if stats.sum_yy != stats.sum_y:
            # Σy² == Σy holds exactly for 0/1 values only (fractions in (0, 1) pass the
            # range check).
            raise ExperimentInputError(f"binary metric {metric!r} has values other than 0 and 1")

    def stats_from_dict(self, data: dict[str, Any]) -> SufficientStats:
        return SufficientStats.from_dict(data, binary=True)

    def test_name(self, cfg: AnalysisConfig, use_t: bool, covariate: bool) -> str:
        pooled = cfg.binary_test == "pooled" and not covariate
        name = ("t" if use_t else "z") + ("_pooled" if pooled else "_unpooled")
        if cfg.yates and not covariate:
            name += "_yates"
        return name

    def null_statistic(
        self,
        control: SufficientStats,
        treatment: SufficientStats,
        delta: float,
        se: float,
        cfg: AnalysisConfig,
    ) -> float:
        if control.has_covariate:
            return delta / se
        se0 = se
        if cfg.binary_test == "pooled":
            pooled_p = (control.sum_y + treatment.sum_y) / (control.n + treatment.n)
            se0 = math.sqrt(pooled_p * (1.0 - pooled_p) * (1.0 / control.n + 1.0 / treatment.n))
        shifted = delta
        if cfg.yates:
            cc = 0.5 * (1.0 / control.n + 1.0 / treatment.n)
            if cfg.alternative == "two-sided":
                shifted = math.copysign(max(abs(delta) - cc, 0.0), delta)
            else:
                shifted = delta - cc if cfg.alternative == "greater" else delta + cc
        return shifted / se0 if se0 > 0.0 else _NAN

    def impact(self, spec: MetricSpec, control: SufficientStats) -> tuple[float, str]:
        return 1.0, f"{spec.name} (count)"

    def power_problems(self, baseline: float, std: float | None) -> list[str]:
        if not 0.0 < baseline < 1.0:
            return [f"baseline == {baseline}, a binary rate must be in (0, 1)"]
        return []

    def power_effect_problem(self, baseline: float, effect: float) -> str | None:
        if not 0.0 < baseline + effect < 1.0:
            return f"treatment rate {baseline + effect} is outside (0, 1)"
        return None

    def power_upper(self, baseline: float, std: float | None) -> float:
        return (1.0 - baseline) * (1.0 - 1e-12)

    def power_unit_sds(self, design: PowerDesign, effect: float) -> tuple[float, float]:
        k, f = design.ratio, design.variance_factor
        p_c = design.baseline
        p_t = p_c + effect
        if not 0.0 <= p_t <= 1.0:
            raise ValueError(f"treatment rate {p_t} is outside [0, 1]")
        alt = math.sqrt(f * (p_c * (1 - p_c) + p_t * (1 - p_t) / k))
        if design.binary_test == "pooled":
            p_pool = (p_c + k * p_t) / (1 + k)
            null = math.sqrt(f * p_pool * (1 - p_pool) * (1 + 1 / k))
        else:
            null = alt
        return null, alt


class Mean(Kind):
    """Any number per learner: sample variance (divisor ``n - 1``), Welch t-test."""

    kind = MetricKind.MEAN
    t_by_default = True


class Ratio(Kind):
    """``Σy / Σd``: the delta method with the covariance of ``y`` and ``d``, z-test; CUPED
    by a plain covariate or by a pre-period ratio ``Σx / Σw``."""

    kind = MetricKind.RATIO
    needs_denominator = True

    def test_name(self, cfg: AnalysisConfig, use_t: bool, covariate: bool) -> str:
        return "t_delta" if use_t else "z_delta"

    def impact(self, spec: MetricSpec, control: SufficientStats) -> tuple[float, str]:
        scale = (control.sum_d or 0.0) / control.n if control.n else _NAN
        return scale, f"{spec.value_column} (total)"


_KINDS: dict[MetricKind, Kind] = {k.kind: k for k in (Binary(), Mean(), Ratio())}


def kind_of(kind: MetricKind | str) -> Kind:
    """The :class:`Kind` of a metric kind (or its name).

    Raises:
        ValueError: an unknown kind name.
    """
    return _KINDS[MetricKind(kind)]


# ---------------------------------------------------------------------------- the engine


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


def _points(delta: float, f_c: float, status: AnalysisStatus) -> dict[str, Any]:
    """Point estimates only (no inference), for degenerate data."""
    rel = delta / f_c if f_c != 0.0 else _NAN
    return {"effect_size": delta, "rel_effect_size": rel, "status": status}


class _Layout:
    """Positions of ``d``, ``x``, ``w`` in a record's columns (``None`` when absent)."""

    __slots__ = ("d", "k", "w", "x")

    def __init__(self, columns: tuple[str, ...]) -> None:
        self.k = len(columns)
        self.d = columns.index("d") if "d" in columns else None
        self.x = columns.index("x") if "x" in columns else None
        self.w = columns.index("w") if "w" in columns else None

    def metric_grad(self, mean: list[float]) -> list[float]:
        return _moments.ratio_gradient(mean, self.k, 0, self.d)

    def covariate_grad(self, mean: list[float]) -> list[float]:
        assert self.x is not None
        return _moments.ratio_gradient(mean, self.k, self.x, self.w)

    def covariate_point(self, sums: list[float], n: int) -> float:
        assert self.x is not None
        return sums[self.x] / (sums[self.w] if self.w is not None else n)


_LAYOUTS: dict[tuple[str, ...], _Layout] = {}


def _layout(columns: tuple[str, ...]) -> _Layout:
    """The (cached) layout of a record's columns."""
    found = _LAYOUTS.get(columns)
    if found is None:
        found = _LAYOUTS[columns] = _Layout(columns)
    return found


def cuped_theta_of(
    kind: Kind,
    arms: list[tuple[int, list[float], list[list[float]]]],
    layout: _Layout,
    method: str = "pooled",
) -> float:
    """The CUPED coefficient ``Cov(f_lin, g_lin) / Var(g_lin)``; 0 when undefined.

    ``pooled`` (default; GrowthBook for plain covariates, tea-tasting): moments of the arms
    pooled, gradients at the pooled means. ``arms`` (GrowthBook's regression-adjusted ratio
    statistic): per-arm moments and gradients, covariances and variances summed over arms.
    """
    ddof = kind.ddof
    if method == "arms":
        num = den = 0.0
        for n, sums, cross in arms:
            if n <= ddof:
                continue
            mean, cov = _moments.moments(n, sums, cross, ddof)
            if _undefined(mean, layout):
                return 0.0
            gg = layout.covariate_grad(mean)
            num += _moments.bilinear(layout.metric_grad(mean), cov, gg)
            den += _moments.quad(gg, cov)
        return num / den if den > 0.0 else 0.0
    n = sum(a[0] for a in arms)
    if n <= ddof:
        return 0.0
    width = len(arms[0][1])
    sums = [sum(a[1][i] for a in arms) for i in range(width)]
    cross = [[sum(a[2][i][j] for a in arms) for j in range(width)] for i in range(width)]
    mean, cov = _moments.moments(n, sums, cross, ddof)
    if _undefined(mean, layout):
        return 0.0
    gg = layout.covariate_grad(mean)
    var_g = _moments.quad(gg, cov)
    if var_g <= 0.0:
        return 0.0
    return _moments.bilinear(layout.metric_grad(mean), cov, gg) / var_g


def _undefined(mean: list[float], layout: _Layout) -> bool:
    """A zero denominator (of the metric or of the covariate ratio) in these means."""
    return (layout.d is not None and mean[layout.d] == 0.0) or (
        layout.w is not None and mean[layout.w] == 0.0
    )


def _delta_method(
    kind: Kind,
    control: SufficientStats,
    treatment: SufficientStats,
    cfg: AnalysisConfig,
    layout: _Layout,
) -> dict[str, Any]:
    """Lifts, CIs and tests by the delta method on each arm's moments (arms independent)."""
    alpha, alt = cfg.alpha, cfg.alternative
    covariate = layout.x is not None
    use_t = cfg.use_t if cfg.use_t is not None else kind.t_by_default
    f_c, f_t = kind.point(control), kind.point(treatment)
    out: dict[str, Any] = {
        "kind": kind.kind,
        "status": AnalysisStatus.OK,
        "test": kind.test_name(cfg, use_t, covariate),
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

    ddof = kind.ddof
    sums_c, cross_c = _moments.raw_sums(control)
    sums_t, cross_t = _moments.raw_sums(treatment)
    mu_c, cov_c = _moments.moments(control.n, sums_c, cross_c, ddof)
    mu_t, cov_t = _moments.moments(treatment.n, sums_t, cross_t, ddof)
    grad_c, grad_t = layout.metric_grad(mu_c), layout.metric_grad(mu_t)
    var0 = _moments.quad(grad_c, cov_c) / control.n + _moments.quad(grad_t, cov_t) / treatment.n
    theta, delta = 0.0, f_t - f_c
    adj_c, adj_t = grad_c, grad_t
    g_c = g_pool = 0.0
    if covariate and not (_undefined(mu_c, layout) or _undefined(mu_t, layout)):
        arms = [(control.n, sums_c, cross_c), (treatment.n, sums_t, cross_t)]
        theta = cuped_theta_of(kind, arms, layout, cfg.cuped_theta)
        g_c = layout.covariate_point(sums_c, control.n)
        g_t = layout.covariate_point(sums_t, treatment.n)
        pooled_sums = [a + b for a, b in zip(sums_c, sums_t, strict=True)]
        g_pool = layout.covariate_point(pooled_sums, control.n + treatment.n)
        gg_c, gg_t = layout.covariate_grad(mu_c), layout.covariate_grad(mu_t)
        adj_c = [a - theta * b for a, b in zip(grad_c, gg_c, strict=True)]
        adj_t = [a - theta * b for a, b in zip(grad_t, gg_t, strict=True)]
        delta -= theta * (g_t - g_c)
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

    statistic = kind.null_statistic(control, treatment, delta, se, cfg)
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
        adjusted_base = theta != 0.0 and cfg.cuped_baseline == "adjusted"
        base = f_c - theta * (g_c - g_pool) if adjusted_base else f_c
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
        out |= _sequential(cfg, control.n + treatment.n, delta, se, rel, rel_se, rel_stat)
    return out


def _sequential(
    cfg: AnalysisConfig,
    n_units: int,
    delta: float,
    se: float,
    rel: float,
    rel_se: float,
    rel_stat: float,
) -> dict[str, Any]:
    """Always-valid CIs and p-values at ``n_units`` (one look)."""
    assert cfg.sequential is not None
    alpha, alt = cfg.alpha, cfg.alternative
    r2 = cfg.sequential.rho_squared(alpha, alt)
    mult = multiplier_scalar(n_units, r2, alpha, alt)
    lo, hi = _interval(delta, mult * se, alt)
    out: dict[str, Any] = {
        "seq_ci_lower": lo,
        "seq_ci_upper": hi,
        "seq_pvalue": pvalue_scalar(delta / se, n_units, r2, alt),
    }
    if math.isfinite(rel_stat):
        if cfg.rel_scale == "log":
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


__all__ = ["Binary", "Kind", "Mean", "MetricKind", "Ratio", "cuped_theta_of", "kind_of"]
