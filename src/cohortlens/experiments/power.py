"""Power, sample size and minimum detectable effect (MDE) for each metric kind.

All three use the normal approximation of the two-sided test the analysis runs:

    power(δ) = Φ(|δ|/se − z_{1−α/2}) + Φ(−|δ|/se − z_{1−α/2}),
    se² = f · (σ_c²/n_c + σ_t²/n_t),   n_t = ratio · n_c,

with ``f`` the CUPED variance factor (``1 − ρ²``; 1 without CUPED) and per-unit variances

* binary: ``σ² = p(1−p)`` at the control rate ``p`` and the treatment rate ``p + δ``
  (unpooled, like the analysis; ``binary_test="pooled"`` uses the pooled rate under H0,
  as ``statsmodels.stats.proportion.power_proportions_2indep`` does);
* mean: ``σ²`` = the metric's per-learner variance (``std**2``), same in both arms;
* ratio: ``σ²`` = the variance of the per-learner linearisation ``(y − R·d)/d̄``, same in
  both arms (:func:`ratio_linearized_std` computes it from historical statistics).

Both tails are counted, so the power matches ``statsmodels``' ``NormalIndPower`` exactly;
sample size and MDE are found by root finding on that function, not by the one-tail
shortcut. For the Welch t-test the normal approximation is accurate once each arm has a few
dozen learners, which every realistic online experiment exceeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import optimize, special

from cohortlens.experiments.kinds import MetricKind, kind_of
from cohortlens.experiments.spec import BinaryTest
from cohortlens.experiments.stats import SufficientStats


@dataclass(frozen=True)
class PowerDesign:
    """A metric's baseline and noise, and the test's settings.

    Attributes:
        kind: binary, mean or ratio.
        baseline: control value of the metric (a rate in (0, 1) for binary metrics).
        std: per-learner standard deviation (mean: of the metric; ratio: of its
            linearisation); ignored for binary metrics (derived from the rate).
        alpha: two-sided significance level.
        power: target probability of detecting the effect.
        ratio: treatment units per control unit (1 = even split).
        variance_factor: CUPED factor ``1 − ρ²`` (1 = no CUPED).
        binary_test: how the binary test estimates the null variance (see module docs).
    """

    kind: MetricKind
    baseline: float
    std: float | None = None
    alpha: float = 0.05
    power: float = 0.8
    ratio: float = 1.0
    variance_factor: float = 1.0
    binary_test: BinaryTest = "unpooled"

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", MetricKind(self.kind))
        problems = kind_of(self.kind).power_problems(self.baseline, self.std)
        if not 0.0 < self.alpha < 1.0:
            problems.append(f"alpha == {self.alpha}, must be in (0, 1)")
        if not 0.0 < self.power < 1.0:
            problems.append(f"power == {self.power}, must be in (0, 1)")
        if not self.ratio > 0.0:
            problems.append(f"ratio == {self.ratio}, must be > 0")
        if not 0.0 < self.variance_factor <= 1.0:
            problems.append(f"variance_factor == {self.variance_factor}, must be in (0, 1]")
        if self.binary_test not in ("unpooled", "pooled"):
            problems.append(f"binary_test == {self.binary_test!r}, must be 'unpooled' or 'pooled'")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class PowerResult:
    """Sample size or MDE answer.

    Attributes:
        design: the inputs.
        n_control, n_treatment: learners per arm (rounded up to whole learners).
        n_total: both arms together.
        effect: the absolute effect (difference in the metric) the numbers refer to.
        rel_effect: ``effect / baseline``.
        achieved_power: the power at the rounded sample size.
        n_control_exact: the control size solving ``power == target`` before rounding up
            (for sample-size questions; equals ``n_control`` for MDE questions).
    """

    design: PowerDesign
    n_control: int
    n_treatment: int
    effect: float
    rel_effect: float
    achieved_power: float
    n_control_exact: float

    @property
    def n_total(self) -> int:
        """Learners in both arms."""
        return self.n_control + self.n_treatment

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        d = self.design
        return {
            "kind": d.kind.value,
            "baseline": d.baseline,
            "std": d.std,
            "alpha": d.alpha,
            "power": d.power,
            "ratio": d.ratio,
            "variance_factor": d.variance_factor,
            "binary_test": d.binary_test,
            "n_control": self.n_control,
            "n_treatment": self.n_treatment,
            "n_total": self.n_total,
            "effect": self.effect,
            "rel_effect": self.rel_effect,
            "achieved_power": self.achieved_power,
            "n_control_exact": self.n_control_exact,
        }


def power(design: PowerDesign, effect: float, n_control: float) -> float:
    """Probability that the two-sided test rejects when the true absolute lift is ``effect``."""
    if not n_control > 0:
        raise ValueError(f"n_control == {n_control}, must be > 0")
    sd_null, sd_alt = _unit_sds(design, effect)
    z_crit = float(special.ndtri(1.0 - design.alpha / 2.0))
    scale = math.sqrt(n_control)
    upper = (abs(effect) * scale - z_crit * sd_null) / sd_alt
    lower = (-abs(effect) * scale - z_crit * sd_null) / sd_alt
    return float(special.ndtr(upper) + special.ndtr(lower))


def sample_size(
    design: PowerDesign, effect: float | None = None, *, rel_effect: float | None = None
) -> PowerResult:
    """Learners per arm needed to detect ``effect`` (absolute) or ``rel_effect`` (× baseline).

    Raises:
        ValueError: neither or both effects given, a zero effect, or a binary effect that
            leaves the treatment rate outside (0, 1).
    """
    delta = _effect(design, effect, rel_effect)
    target = design.power

    def gap(log_n: float) -> float:
        return power(design, delta, math.exp(log_n)) - target

    hi = 1.0
    while gap(hi) < 0.0:
        hi *= 2.0
        if hi > 200.0:
            raise ValueError("effect too small: no finite sample size reaches the power")
    log_n = optimize.brentq(gap, -10.0, hi, xtol=1e-12, rtol=1e-12)
    n_exact = math.exp(log_n)
    return _result(design, delta, max(2, math.ceil(n_exact - 1e-9)), n_exact)


def minimum_detectable_effect(design: PowerDesign, n_control: int) -> PowerResult:
    """Smallest positive absolute lift detected with ``design.power`` at ``n_control`` learners.

    For binary metrics the search is bounded by a treatment rate of 1.

    Raises:
        ValueError: ``n_control`` < 2, or no effect within bounds reaches the power.
    """
    if n_control < 2:
        raise ValueError(f"n_control == {n_control}, must be >= 2")
    target = design.power
    upper = kind_of(design.kind).power_upper(design.baseline, design.std)
    if power(design, upper, n_control) < target:
        raise ValueError(
            f"no effect up to {upper:g} reaches power {target} with {n_control} learners per arm"
        )
    delta = optimize.brentq(
        lambda e: power(design, e, n_control) - target, 1e-15, upper, xtol=1e-15, rtol=1e-12
    )
    return _result(design, float(delta), n_control, float(n_control))


def cohens_h(p1: float, p2: float) -> float:
    """Cohen's effect size for two proportions: ``2·asin(√p1) − 2·asin(√p2)``."""
    for name, p in (("p1", p1), ("p2", p2)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} == {p}, must be in [0, 1]")
    return 2.0 * math.asin(math.sqrt(p1)) - 2.0 * math.asin(math.sqrt(p2))


def power_standardized(
    effect_size: float,
    n_control: float,
    *,
    ratio: float = 1.0,
    alpha: float = 0.05,
    alternative: str = "two-sided",
    distribution: str = "t",
) -> float:
    """Power of the two-sample test for a standardised effect (Cohen's d, or h).

    ``distribution="t"``: the pooled-variance t test, exactly (noncentral t with
    ``n_c + n_t − 2`` df; R's ``pwr.t2n.test``, statsmodels' ``TTestIndPower``);
    ``"normal"``: the z test (``pwr.2p.test`` with Cohen's h, ``NormalIndPower``).
    ``greater`` tests ``effect > 0``; both tails count for ``two-sided``.
    """
    if not n_control > 1 or not ratio > 0:
        raise ValueError(
            f"n_control == {n_control}, ratio == {ratio}: need n_control > 1, ratio > 0"
        )
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative == {alternative!r}, must be two-sided, greater or less")
    n_t = ratio * n_control
    nc = effect_size * math.sqrt(n_control * n_t / (n_control + n_t))
    two = alternative == "two-sided"
    level = 1.0 - (alpha / 2.0 if two else alpha)
    if distribution == "t":
        df = n_control + n_t - 2.0
        crit = float(special.stdtrit(df, level))
        upper = float(special.nctdtr(df, nc, crit))  # P(T <= crit)
        lower = float(special.nctdtr(df, nc, -crit))  # P(T <= -crit)
        p_up, p_down = 1.0 - upper, lower
    elif distribution == "normal":
        crit = float(special.ndtri(level))
        p_up, p_down = float(special.ndtr(nc - crit)), float(special.ndtr(-nc - crit))
    else:
        raise ValueError(f"distribution == {distribution!r}, must be 't' or 'normal'")
    if two:
        return p_up + p_down
    return p_up if alternative == "greater" else p_down


def sample_size_multi_arm(
    design: PowerDesign,
    n_treatments: int,
    effect: float | None = None,
    *,
    rel_effect: float | None = None,
) -> PowerResult:
    """Learners per arm for ``n_treatments`` arms each compared with control, with the
    level split Bonferroni-style (``α / n_treatments`` per comparison) so the
    family-wise error stays at ``design.alpha``; ``n_total`` of the result counts one
    treatment arm (multiply ``n_treatment`` by ``n_treatments`` for the experiment)."""
    if n_treatments < 1:
        raise ValueError(f"n_treatments == {n_treatments}, must be >= 1")
    from dataclasses import replace

    return sample_size(
        replace(design, alpha=design.alpha / n_treatments), effect, rel_effect=rel_effect
    )


def ratio_linearized_std(stats: SufficientStats) -> float:
    """Per-learner std of a ratio metric's linearisation ``(y − R·d)/d̄`` (for :class:`PowerDesign`).

    Raises:
        ValueError: ``stats`` has no denominator, fewer than 2 units, or ``d̄ == 0``.
    """
    if not stats.has_ratio:
        raise ValueError("ratio_linearized_std needs ratio statistics (sum_d, sum_dd, sum_yd)")
    mean, cov = stats.moments(1)
    if mean[1] == 0.0:
        raise ValueError("the denominator averages 0")
    r = mean[0] / mean[1]
    var = (cov[0, 0] - 2.0 * r * cov[0, 1] + r * r * cov[1, 1]) / mean[1] ** 2
    return math.sqrt(max(float(var), 0.0))


# ---------------------------------------------------------------------------- helpers


def _effect(design: PowerDesign, effect: float | None, rel_effect: float | None) -> float:
    if (effect is None) == (rel_effect is None):
        raise ValueError("give exactly one of effect (absolute) and rel_effect")
    delta = effect if effect is not None else design.baseline * float(rel_effect or 0.0)
    if delta == 0.0 or not math.isfinite(delta):
        raise ValueError(f"effect == {delta}, must be finite and non-zero")
    problem = kind_of(design.kind).power_effect_problem(design.baseline, delta)
    if problem:
        raise ValueError(problem)
    return float(delta)


def _unit_sds(design: PowerDesign, effect: float) -> tuple[float, float]:
    """sqrt(n_c)·se under the null and under the alternative (the kind's variances)."""
    return kind_of(design.kind).power_unit_sds(design, effect)


def _result(design: PowerDesign, delta: float, n_c: int, n_exact: float) -> PowerResult:
    n_t = math.ceil(design.ratio * n_c - 1e-9)
    return PowerResult(
        design=design,
        n_control=n_c,
        n_treatment=n_t,
        effect=delta,
        rel_effect=delta / design.baseline if design.baseline != 0.0 else math.nan,
        achieved_power=power(design, delta, n_c),
        n_control_exact=n_exact,
    )


__all__ = [
    "PowerDesign",
    "PowerResult",
    "cohens_h",
    "minimum_detectable_effect",
    "power",
    "power_standardized",
    "ratio_linearized_std",
    "sample_size",
    "sample_size_multi_arm",
]
