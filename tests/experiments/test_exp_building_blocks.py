"""SRM, multiplicity, sequential boundaries, CUPED helpers and power against references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower, normal_power_het
from statsmodels.stats.proportion import power_proportions_2indep

from cohortlens.experiments import (
    MetricKind,
    PowerDesign,
    SufficientStats,
    adjust_bh,
    adjust_holm,
    check_srm,
    minimum_detectable_effect,
    power,
    sample_size,
)
from cohortlens.experiments.cuped import (
    covariate_correlation,
    cuped_theta,
    predicted_variance_factor,
)
from cohortlens.experiments.multiplicity import adjust
from cohortlens.experiments.power import ratio_linearized_std
from cohortlens.experiments.sequential import (
    always_valid,
    always_valid_pvalue,
    always_valid_pvalue_scalar,
    boundary_multiplier,
    boundary_multiplier_scalar,
    multiplier_scalar,
    pvalue_scalar,
    rho_for,
    running_interval,
    running_pvalue,
)

# ---------------------------------------------------------------------------- SRM


def test_srm_acceptance_case() -> None:
    # 50/50 design observed at 50.5/49.5 over 1M learners: chi² = 2·5000²/500000 = 100.
    r = check_srm({"control": 505_000, "treatment": 495_000}, {"control": 1, "treatment": 1})
    assert r.statistic == pytest.approx(100.0, rel=1e-12)
    assert r.pvalue < 0.001
    assert r.flagged
    assert r.pvalue == pytest.approx(sps.chisquare([505_000, 495_000]).pvalue, rel=1e-9)


@given(st.lists(st.integers(1, 10_000), min_size=2, max_size=6), st.integers(0, 100))
@settings(max_examples=50, deadline=None)
def test_srm_matches_scipy(counts: list[int], seed: int) -> None:
    w = np.random.default_rng(seed).uniform(0.5, 2.0, len(counts))
    names = [f"v{i}" for i in range(len(counts))]
    r = check_srm(dict(zip(names, counts, strict=True)), dict(zip(names, w, strict=True)))
    ref = sps.chisquare(counts, np.sum(counts) * w / w.sum())
    assert r.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert r.pvalue == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-300)
    assert r.df == len(counts) - 1


def test_srm_edge_cases() -> None:
    assert check_srm({"a": 10, "b": 3}, {"a": 1, "b": 0}).flagged  # units in a zero-weight arm
    empty = check_srm({"a": 0, "b": 0})
    assert math.isnan(empty.pvalue)
    assert not empty.flagged
    assert check_srm({"a": 10}, {"a": 1, "b": 1}).observed == {"a": 10, "b": 0}
    with pytest.raises(ValueError, match="no expected weight"):
        check_srm({"a": 1, "c": 2}, {"a": 1, "b": 1})


# ---------------------------------------------------------------------------- multiplicity


def _naive_holm(p: list[float]) -> list[float]:
    """Holm by definition, O(m²): p̃_(i) = max_{j<=i} min(1, (m - j + 1) p_(j))."""
    m = len(p)
    order = sorted(range(m), key=lambda i: (p[i], i))
    out = [0.0] * m
    for rank, i in enumerate(order):
        out[i] = max(min(1.0, (m - j) * p[order[j]]) for j in range(rank + 1))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_holm_and_bh_match_statsmodels(seed: int) -> None:
    # statsmodels' Holm costs ~0.1 s a call, so a few fixed cases here; hypothesis below.
    p = np.random.default_rng(seed).uniform(0, 0.2, 12)
    np.testing.assert_allclose(adjust_holm(p), multipletests(p, method="holm")[1], rtol=1e-12)
    np.testing.assert_allclose(adjust_bh(p), multipletests(p, method="fdr_bh")[1], rtol=1e-12)


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30))
@settings(max_examples=100, deadline=None)
def test_holm_matches_definition_and_bh_matches_statsmodels(p: list[float]) -> None:
    np.testing.assert_allclose(adjust_holm(p), _naive_holm(p), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        adjust_bh(p), multipletests(p, method="fdr_bh")[1], rtol=1e-12, atol=1e-15
    )


def test_multiplicity_hand_computed_and_nan() -> None:
    # Holm on [0.01, 0.04, 0.03]: sorted 0.01·3, 0.03·2, 0.04·1 -> 0.03, 0.06, 0.06.
    np.testing.assert_allclose(adjust_holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    # BH: 0.01·3/1, 0.03·3/2, 0.04·3/3 -> min from the top: 0.03, 0.04, 0.04.
    np.testing.assert_allclose(adjust_bh([0.01, 0.04, 0.03]), [0.03, 0.04, 0.04])
    out = adjust_holm([0.01, math.nan, 0.02])
    assert math.isnan(out[1])
    assert out[0] == pytest.approx(0.02)
    assert adjust([0.2], "none").tolist() == [0.2]
    with pytest.raises(ValueError, match="method"):
        adjust([0.1], "tukey")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_bh([1.5])


# ---------------------------------------------------------------------------- sequential


def _mixture_ratio(z: float, n: float, rho2: float) -> float:
    """Λ by numerical integration of N(δ; 0, τ²) likelihood ratios, with se = 1."""
    tau2 = n * rho2

    def integrand(delta: float) -> float:
        return math.exp(delta * z - delta**2 / 2) * sps.norm.pdf(delta, scale=math.sqrt(tau2))

    value, _ = integrate.quad(integrand, -50, 50, limit=200)
    return value


@pytest.mark.parametrize(
    ("z", "n", "tune"), [(0.0, 1000, 1000), (2.5, 5000, 1000), (-3.1, 200, 10_000)]
)
def test_mixture_pvalue_matches_numerical_integral(z: float, n: float, tune: float) -> None:
    rho2 = rho_for(tune, 0.05) ** 2
    assert always_valid_pvalue(z, n, tune, 0.05) == pytest.approx(
        min(1.0, 1 / _mixture_ratio(z, n, rho2)), rel=1e-6
    )


@given(st.floats(-6, 6), st.floats(10, 1e6), st.floats(10, 1e6), st.floats(0.001, 0.2))
def test_pvalue_and_boundary_are_dual(z: float, n: float, tune: float, alpha: float) -> None:
    # p < alpha exactly when 0 is outside the confidence sequence, i.e. |z| > multiplier.
    p = float(always_valid_pvalue(z, n, tune, alpha))
    m = float(boundary_multiplier(n, tune, alpha))
    if abs(abs(z) - m) > 1e-9:
        assert (p < alpha) == (abs(z) > m)


@given(st.floats(-6, 6), st.floats(10, 1e6), st.floats(10, 1e6), st.floats(0.001, 0.2))
def test_one_sided_pvalue_and_boundary_are_dual(
    z: float, n: float, tune: float, alpha: float
) -> None:
    r2 = rho_for(tune, alpha, "greater") ** 2
    p = pvalue_scalar(z, n, r2, "greater")
    m = multiplier_scalar(n, r2, alpha, "greater")
    if abs(z - m) > 1e-7:
        assert (p < alpha) == (z > m)


@given(st.floats(-8, 8), st.integers(2, 10**7), st.integers(1, 10**7), st.floats(0.001, 0.5))
def test_scalar_forms_equal_vector_forms(z: float, n: int, tune: int, alpha: float) -> None:
    assert boundary_multiplier_scalar(n, tune, alpha) == pytest.approx(
        float(boundary_multiplier(n, tune, alpha)), rel=1e-12
    )
    assert always_valid_pvalue_scalar(z, n, tune, alpha) == pytest.approx(
        float(always_valid_pvalue(z, n, tune, alpha)), rel=1e-12, abs=1e-300
    )


def test_boundary_is_tightest_at_tuning_n() -> None:
    # docs/EXPERIMENTS.md: the sequence is tightest, relative to the fixed horizon, at N_tune.
    # Of all mixing parameters, the one derived from tuning_n gives the narrowest sequence
    # at N = tuning_n (the old rho^2 = 1/tuning_n was tightest near 8x tuning_n).
    tune, alpha = 10_000, 0.05
    rhos = np.geomspace(rho_for(tune, alpha) / 5, rho_for(tune, alpha) * 5, 4001)
    widths = [multiplier_scalar(tune, r * r, alpha) for r in rhos]
    # GrowthBook's closed form approximates the optimum: within 2 % in rho, 1e-4 in width.
    assert rhos[int(np.argmin(widths))] == pytest.approx(rho_for(tune, alpha), rel=0.02)
    assert multiplier_scalar(tune, rho_for(tune, alpha) ** 2, alpha) == pytest.approx(
        min(widths), rel=1e-4
    )
    # The old parametrisation (rho^2 = 1/tuning_n) is clearly wider at N = tuning_n.
    assert multiplier_scalar(tune, 1.0 / tune, alpha) > 1.15 * min(widths)
    m = boundary_multiplier([100, 1e4, 1e6], 1e4, 0.05)
    assert np.all(m > sps.norm.ppf(0.975))


def test_always_valid_from_estimate_and_se() -> None:
    lo, hi, p = always_valid(0.3, 0.1, 5000, tuning_n=5000)
    m = boundary_multiplier_scalar(5000, 5000, 0.05)
    assert (lo, hi) == pytest.approx((0.3 - m * 0.1, 0.3 + m * 0.1), rel=1e-12)
    assert p == pytest.approx(always_valid_pvalue_scalar(3.0, 5000, 5000, 0.05), rel=1e-12)
    lo, hi, _ = always_valid(0.3, 0.1, 5000, tuning_n=5000, alternative="greater")
    assert hi == math.inf
    assert lo > 0.3 - m * 0.1


def test_running_interval_and_pvalue() -> None:
    lo, hi = running_interval([-3, -1, np.nan, -2], [5, 4, np.nan, 4.5])
    assert lo.tolist() == [-3, -1, -1, -1]
    assert hi.tolist() == [5, 4, 4, 4]
    assert running_pvalue([0.5, 0.2, np.nan, 0.3]).tolist() == [0.5, 0.2, 0.2, 0.2]


# ---------------------------------------------------------------------------- CUPED helpers


def test_cuped_theta_and_correlation() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, 5000)
    y = 2 * x + rng.normal(0, 1, 5000)
    s = SufficientStats.from_arrays(y, x=x)
    assert cuped_theta(s, 1) == pytest.approx(np.cov(y, x)[0, 1] / np.var(x, ddof=1), rel=1e-9)
    assert covariate_correlation(s) == pytest.approx(np.corrcoef(y, x)[0, 1], rel=1e-9)
    assert predicted_variance_factor(0.6) == pytest.approx(0.64)
    with pytest.raises(ValueError, match="covariate"):
        cuped_theta(SufficientStats.from_arrays(y), 1)


# ---------------------------------------------------------------------------- power


def test_power_mean_matches_statsmodels() -> None:
    d = PowerDesign(MetricKind.MEAN, baseline=10.0, std=4.0, ratio=2.0)
    assert power(d, 0.3, 1000) == pytest.approx(
        NormalIndPower().power(0.3 / 4, 1000, 0.05, ratio=2), rel=1e-12
    )
    r = sample_size(d, 0.3)
    ref = NormalIndPower().solve_power(0.3 / 4, nobs1=None, alpha=0.05, power=0.8, ratio=2)
    assert r.n_control_exact == pytest.approx(ref, rel=1e-6)
    assert r.n_control == math.ceil(r.n_control_exact)
    assert r.n_treatment == math.ceil(2 * r.n_control)
    assert r.achieved_power >= 0.8


def test_power_binary_matches_statsmodels() -> None:
    # statsmodels: nobs1 and prop1 = prop2 + diff are the treatment arm; ratio = nobs2/nobs1.
    n_c, k = 800, 1.5
    pooled = PowerDesign(MetricKind.BINARY, baseline=0.3, ratio=k, binary_test="pooled")
    ref = power_proportions_2indep(0.04, 0.3, n_c * k, ratio=1 / k).power
    assert power(pooled, 0.04, n_c) == pytest.approx(ref, rel=1e-12)
    unpooled = PowerDesign(MetricKind.BINARY, baseline=0.3, ratio=k)
    sd = math.sqrt(0.34 * 0.66 + 0.3 * 0.7 * k)
    assert power(unpooled, 0.04, n_c) == pytest.approx(
        normal_power_het(0.04, n_c * k, 0.05, std_null=sd, std_alternative=sd), rel=1e-12
    )


def test_sample_size_and_mde_are_inverse() -> None:
    d = PowerDesign(MetricKind.BINARY, baseline=0.2)
    n = sample_size(d, rel_effect=0.05)
    mde = minimum_detectable_effect(d, n.n_control)
    assert mde.effect <= 0.01
    assert mde.effect == pytest.approx(0.01, rel=1e-3)
    assert mde.achieved_power == pytest.approx(0.8, abs=1e-9)


def test_cuped_factor_shrinks_sample_size() -> None:
    plain = sample_size(PowerDesign(MetricKind.MEAN, baseline=30, std=60), rel_effect=0.02)
    cuped = sample_size(
        PowerDesign(MetricKind.MEAN, baseline=30, std=60, variance_factor=0.64), rel_effect=0.02
    )
    assert cuped.n_control_exact == pytest.approx(0.64 * plain.n_control_exact, rel=1e-9)


def test_ratio_linearized_std_and_errors() -> None:
    rng = np.random.default_rng(2)
    d = 1.0 + rng.poisson(3, 2000)
    y = d * rng.gamma(2, 2, 2000)
    s = SufficientStats.from_arrays(y, d=d)
    r = y.sum() / d.sum()
    assert ratio_linearized_std(s) == pytest.approx(
        np.std((y - r * d) / d.mean(), ddof=1), rel=1e-9
    )
    with pytest.raises(ValueError, match="exactly one"):
        sample_size(PowerDesign(MetricKind.MEAN, baseline=1, std=1))
    with pytest.raises(ValueError, match="outside"):
        sample_size(PowerDesign(MetricKind.BINARY, baseline=0.9), 0.2)
    with pytest.raises(ValueError, match="std"):
        PowerDesign(MetricKind.MEAN, baseline=1)
