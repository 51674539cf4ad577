"""compare / analyze against scipy and statsmodels, hand-computed values and degenerate data.

Reference tolerances: scipy/statsmodels agreement is asserted to 1e-9 relative (the
acceptance bar is 1e-6).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats import proportion as smp

from cohortlens.experiments import (
    AnalysisConfig,
    AnalysisStatus,
    ExperimentInputError,
    ExperimentStats,
    MetricKind,
    MetricRole,
    MetricSpec,
    ReportStatus,
    SequentialParams,
    SufficientStats,
    Verdict,
    analyze,
    compare,
)

RTOL = 1e-9


def _binary(successes: int, n: int) -> SufficientStats:
    return SufficientStats(n=n, sum_y=float(successes), sum_yy=float(successes))


# ---------------------------------------------------------------------------- hand-computed


def test_welch_hand_computed() -> None:
    # control [1, 2, 3, 4]: mean 2.5, s² = 5/3; treatment [2, 4, 6, 8]: mean 5, s² = 20/3.
    # se² = (5/3)/4 + (20/3)/4 = 25/12; t = 2.5 / sqrt(25/12) = sqrt(3);
    # df = (25/12)² / ((5/12)²/3 + (5/3)²/3) = (625/144) / (425/432) = 75/17.
    est = compare(
        SufficientStats.from_arrays([1, 2, 3, 4]), SufficientStats.from_arrays([2, 4, 6, 8]), "mean"
    )
    assert est.effect_size == pytest.approx(2.5, rel=1e-12)
    assert est.std_error == pytest.approx(math.sqrt(25 / 12), rel=1e-12)
    assert est.statistic == pytest.approx(math.sqrt(3), rel=1e-12)
    assert est.df == pytest.approx(75 / 17, rel=1e-12)
    assert est.rel_effect_size == pytest.approx(1.0, rel=1e-12)
    assert est.status is AnalysisStatus.OK
    assert est.test == "welch_t"


def test_proportion_hand_computed() -> None:
    # 30/100 vs 45/100: Δ = 0.15, se² = (.3·.7 + .45·.55)/100 = 0.004575.
    est = compare(_binary(30, 100), _binary(45, 100), "binary")
    assert est.effect_size == pytest.approx(0.15, rel=1e-12)
    assert est.std_error == pytest.approx(math.sqrt(0.004575), rel=1e-12)
    assert est.rel_effect_size == pytest.approx(0.5, rel=1e-12)
    assert est.df == math.inf


# ---------------------------------------------------------------------------- references


@given(st.integers(2, 80), st.integers(2, 80), st.integers(0, 10_000))
@settings(max_examples=40, deadline=None)
def test_welch_matches_scipy(n_c: int, n_t: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.lognormal(1.0, 1.0, n_c), rng.lognormal(1.2, 0.7, n_t)
    est = compare(SufficientStats.from_arrays(a), SufficientStats.from_arrays(b), "mean", alpha=0.1)
    ref = sps.ttest_ind(b, a, equal_var=False)
    ci = ref.confidence_interval(0.9)
    assert est.statistic == pytest.approx(ref.statistic, rel=1e-7)
    assert est.pvalue == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-12)
    assert est.df == pytest.approx(ref.df, rel=1e-7)
    assert est.effect_size_ci_lower == pytest.approx(ci.low, rel=1e-7, abs=1e-9)
    assert est.effect_size_ci_upper == pytest.approx(ci.high, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize(
    ("s_c", "n_c", "s_t", "n_t"), [(300, 1000, 360, 1100), (5, 40, 1, 37), (490, 500, 499, 500)]
)
def test_proportions_match_statsmodels(s_c: int, n_c: int, s_t: int, n_t: int) -> None:
    est = compare(_binary(s_c, n_c), _binary(s_t, n_t), "binary", alpha=0.05)
    ref = smp.test_proportions_2indep(s_t, n_t, s_c, n_c, method="wald", compare="diff")
    low, high = smp.confint_proportions_2indep(s_t, n_t, s_c, n_c, method="wald", compare="diff")
    assert est.statistic == pytest.approx(ref.statistic, rel=RTOL)
    assert est.pvalue == pytest.approx(ref.pvalue, rel=RTOL)
    assert est.effect_size_ci_lower == pytest.approx(low, rel=RTOL)
    assert est.effect_size_ci_upper == pytest.approx(high, rel=RTOL)
    pooled = compare(_binary(s_c, n_c), _binary(s_t, n_t), "binary", binary_test="pooled")
    z, p = smp.proportions_ztest([s_t, s_c], [n_t, n_c])
    assert pooled.statistic == pytest.approx(z, rel=RTOL)
    assert pooled.pvalue == pytest.approx(p, rel=RTOL)
    assert pooled.effect_size_ci_lower == est.effect_size_ci_lower  # the CI stays unpooled


def test_ratio_delta_method_matches_linearisation() -> None:
    # Independent reference: the per-unit linearisation (y - R d)/d̄ has the same variance
    # as the delta method, so Var(R̂) = var(lin)/n per arm.
    rng = np.random.default_rng(3)
    arms = []
    for lam in (4.0, 4.5):
        d = 1.0 + rng.poisson(lam, 3000)
        y = d * rng.gamma(2.0, 1.5, 3000)
        arms.append((y, d))
    control, treatment = (SufficientStats.from_arrays(y, d=d) for y, d in arms)
    est = compare(control, treatment, "ratio")
    var = 0.0
    ratios = []
    for y, d in arms:
        r = y.sum() / d.sum()
        ratios.append(r)
        var += np.var((y - r * d) / d.mean(), ddof=1) / y.size
    assert est.effect_size == pytest.approx(ratios[1] - ratios[0], rel=1e-12)
    assert est.std_error == pytest.approx(math.sqrt(var), rel=1e-9)
    assert est.pvalue == pytest.approx(
        2 * sps.norm.sf(abs(est.effect_size) / math.sqrt(var)), rel=1e-9
    )
    assert est.test == "z_delta"


def test_relative_lift_delta_method() -> None:
    # Var(m_t/m_c) ≈ v_t/m_c² + m_t² v_c/m_c⁴ for independent arms.
    rng = np.random.default_rng(4)
    a, b = rng.normal(10, 3, 500), rng.normal(11, 4, 400)
    est = compare(SufficientStats.from_arrays(a), SufficientStats.from_arrays(b), "mean")
    v_c, v_t = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    m_c, m_t = a.mean(), b.mean()
    assert est.rel_effect_size == pytest.approx(m_t / m_c - 1, rel=1e-12)
    assert est.rel_std_error == pytest.approx(
        math.sqrt(v_t / m_c**2 + m_t**2 * v_c / m_c**4), rel=1e-9
    )
    q = sps.t.ppf(0.975, est.df)
    assert est.rel_effect_size_ci_upper - est.rel_effect_size == pytest.approx(
        q * est.rel_std_error, rel=1e-9
    )


def test_cuped_equals_welch_on_adjusted_values() -> None:
    # With θ = pooled cov(y, x)/var(x), CUPED is exactly Welch's t on y - θ·x.
    rng = np.random.default_rng(5)
    xc, xt = rng.gamma(2, 5, 800), rng.gamma(2, 5, 900)
    yc = 3 + 0.8 * xc + rng.normal(0, 4, 800)
    yt = 4 + 0.8 * xt + rng.normal(0, 4, 900)
    est = compare(
        SufficientStats.from_arrays(yc, x=xc), SufficientStats.from_arrays(yt, x=xt), "mean"
    )
    y, x = np.concatenate([yc, yt]), np.concatenate([xc, xt])
    theta = np.cov(y, x, ddof=1)[0, 1] / np.var(x, ddof=1)
    ref = sps.ttest_ind(yt - theta * xt, yc - theta * xc, equal_var=False)
    plain = sps.ttest_ind(yt, yc, equal_var=False)
    assert est.cuped_applied
    assert est.cuped_theta == pytest.approx(theta, rel=1e-9)
    assert est.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert est.pvalue == pytest.approx(ref.pvalue, rel=1e-7)
    assert est.df == pytest.approx(ref.df, rel=1e-9)
    se_plain = (yt.mean() - yc.mean()) / plain.statistic
    assert est.std_error_unadjusted == pytest.approx(se_plain, rel=1e-9)
    assert est.variance_reduction == pytest.approx(1 - (est.std_error / se_plain) ** 2, rel=1e-9)
    # Relative lift divides by the unadjusted control mean.
    assert est.rel_effect_size == pytest.approx(est.effect_size / yc.mean(), rel=1e-12)


def test_cuped_ratio_reduces_variance_and_stays_unbiased_in_form() -> None:
    rng = np.random.default_rng(6)
    arms = []
    for _ in range(2):
        d = 1.0 + rng.poisson(4, 4000)
        x = rng.gamma(2, 5, 4000)
        y = d * (1 + 0.3 * x + rng.normal(0, 1, 4000))
        arms.append(SufficientStats.from_arrays(y, d=d, x=x))
    est = compare(arms[0], arms[1], "ratio")
    assert est.cuped_applied
    assert 0.3 < est.variance_reduction < 1.0
    assert est.std_error < est.std_error_unadjusted


def test_constant_covariate_skips_cuped() -> None:
    c = SufficientStats.from_arrays([1.0, 2.0, 3.0], x=[5.0, 5.0, 5.0])
    t = SufficientStats.from_arrays([2.0, 3.0, 5.0], x=[5.0, 5.0, 5.0])
    est = compare(c, t, "mean")
    plain = compare(
        SufficientStats.from_arrays([1.0, 2.0, 3.0]),
        SufficientStats.from_arrays([2.0, 3.0, 5.0]),
        "mean",
    )
    assert not est.cuped_applied
    assert math.isnan(est.variance_reduction)
    assert est.pvalue == pytest.approx(plain.pvalue, rel=1e-12)


# ---------------------------------------------------------------------------- degenerate data


@pytest.mark.parametrize(
    ("control", "treatment", "kind", "status"),
    [
        (
            SufficientStats(n=0, sum_y=0.0, sum_yy=0.0),
            SufficientStats.from_arrays([1.0, 2.0]),
            "mean",
            AnalysisStatus.EMPTY_ARM,
        ),
        (
            SufficientStats.from_arrays([1.0]),
            SufficientStats.from_arrays([1.0, 2.0]),
            "mean",
            AnalysisStatus.TOO_FEW_UNITS,
        ),
        (
            SufficientStats.from_arrays([2.0, 2.0]),
            SufficientStats.from_arrays([2.0, 2.0, 2.0]),
            "mean",
            AnalysisStatus.ZERO_VARIANCE,
        ),
        (_binary(0, 50), _binary(0, 60), "binary", AnalysisStatus.ZERO_VARIANCE),
        (
            SufficientStats.from_arrays([-1.0, 1.0]),
            SufficientStats.from_arrays([1.0, 3.0]),
            "mean",
            AnalysisStatus.ZERO_BASELINE,
        ),
        (
            SufficientStats.from_arrays([1.0, 2.0], d=[0.0, 0.0]),
            SufficientStats.from_arrays([1.0, 2.0], d=[1.0, 1.0]),
            "ratio",
            AnalysisStatus.ZERO_DENOMINATOR,
        ),
    ],
)
def test_degenerate_data_returns_status(
    control: SufficientStats, treatment: SufficientStats, kind: str, status: AnalysisStatus
) -> None:
    est = compare(control, treatment, kind, sequential=SequentialParams())
    assert est.status is status
    assert math.isnan(est.pvalue) == (status is not AnalysisStatus.ZERO_BASELINE)


def test_degenerate_point_estimates_are_kept() -> None:
    est = compare(
        SufficientStats.from_arrays([2.0, 2.0]), SufficientStats.from_arrays([3.0, 3.0]), "mean"
    )
    assert est.status is AnalysisStatus.ZERO_VARIANCE
    assert est.effect_size == 1.0
    assert est.rel_effect_size == 0.5
    assert math.isnan(est.effect_size_ci_lower)
    zero_base = compare(
        SufficientStats.from_arrays([-1.0, 1.0]), SufficientStats.from_arrays([1.0, 3.0]), "mean"
    )
    assert zero_base.effect_size == 2.0
    assert not math.isnan(zero_base.pvalue)
    assert math.isnan(zero_base.rel_effect_size)


def test_programmer_errors_raise() -> None:
    mean = SufficientStats.from_arrays([1.0, 2.0])
    ratio = SufficientStats.from_arrays([1.0, 2.0], d=[1.0, 1.0])
    with pytest.raises(ValueError, match="columns"):
        compare(mean, ratio, "mean")
    with pytest.raises(ValueError, match="do not fit"):
        compare(mean, mean, "ratio")
    with pytest.raises(ValueError, match="alpha"):
        compare(mean, mean, "mean", alpha=1.5)
    with pytest.raises(ValueError, match="'median' is not a valid MetricKind"):
        compare(mean, mean, "median")


# ---------------------------------------------------------------------------- analyze


def _experiment(
    effects: dict[str, float], n: int = 4000, seed: int = 0, units: dict[str, int] | None = None
) -> ExperimentStats:
    rng = np.random.default_rng(seed)
    metrics: dict[str, dict[str, SufficientStats]] = {"conv": {}, "rev": {}, "churn": {}}
    for variant, lift in effects.items():
        metrics["conv"][variant] = SufficientStats.from_arrays(rng.random(n) < 0.2 + lift)
        metrics["rev"][variant] = SufficientStats.from_arrays(rng.exponential(10 + 100 * lift, n))
        metrics["churn"][variant] = SufficientStats.from_arrays(rng.random(n) < 0.1 + lift)
    return ExperimentStats(units=units or dict.fromkeys(effects, n), metrics=metrics)


SPECS = (
    MetricSpec("conv", MetricKind.BINARY),
    MetricSpec("rev", MetricKind.MEAN),
    MetricSpec("churn", MetricKind.BINARY, role=MetricRole.GUARDRAIL, lower_is_better=True),
)


def test_analyze_multiplicity_and_verdicts() -> None:
    report = analyze(SPECS, _experiment({"control": 0.0, "b": 0.05, "c": 0.0}))
    assert report.status is ReportStatus.GUARDRAIL_FAILED  # b raises churn by 5 points
    assert [(e.metric, e.variant) for e in report.effects] == [
        ("conv", "b"),
        ("conv", "c"),
        ("rev", "b"),
        ("rev", "c"),
        ("churn", "b"),
        ("churn", "c"),
    ]
    b = report.effect("conv", "b")
    assert b.verdict is Verdict.IMPROVEMENT
    assert report.effect("churn", "b").guardrail_failed is True
    assert report.effect("churn", "b").verdict is Verdict.REGRESSION
    assert math.isnan(report.effect("churn", "b").pvalue_holm)  # guardrails are not corrected
    primary = [e for e in report.effects if e.role is MetricRole.PRIMARY]
    from statsmodels.stats.multitest import multipletests

    p = [e.pvalue for e in primary]
    np.testing.assert_allclose(
        [e.pvalue_holm for e in primary], multipletests(p, method="holm")[1], rtol=1e-12
    )
    np.testing.assert_allclose(
        [e.pvalue_bh for e in primary], multipletests(p, method="fdr_bh")[1], rtol=1e-12
    )


def test_srm_withholds_conclusions() -> None:
    data = _experiment(
        {"control": 0.0, "treatment": 0.05}, units={"control": 505_000, "treatment": 495_000}
    )
    report = analyze(SPECS, data)
    assert report.status is ReportStatus.SRM_MISMATCH
    assert report.conclusions_withheld
    assert report.srm.pvalue < 1e-20
    assert all(e.verdict is Verdict.WITHHELD for e in report.effects)
    assert all(e.guardrail_failed is None for e in report.effects)
    assert not math.isnan(report.effect("conv").effect_size)  # estimates are still shown


def test_impact_interval_scales_decision_interval() -> None:
    data = _experiment({"control": 0.0, "treatment": 0.02})
    report = analyze(SPECS, data, AnalysisConfig(impact_units=1_000_000))
    e = report.effect("rev")
    assert e.impact_ci_lower == pytest.approx(e.effect_size_ci_lower * 1e6)
    assert e.impact_ci_upper == pytest.approx(e.effect_size_ci_upper * 1e6)
    assert e.impact_unit == "rev (total)"
    seq = analyze(SPECS, data, AnalysisConfig(sequential=SequentialParams(tuning_n=8000)))
    s = seq.effect("rev")
    assert s.impact_ci_lower == pytest.approx(s.seq_ci_lower * 8000)


def test_sequential_path_is_running_intersection() -> None:
    periods = [_experiment({"control": 0.0, "treatment": 0.01}, n=500, seed=s) for s in range(6)]
    for i, p in enumerate(periods):
        object.__setattr__(p, "label", f"day {i + 1}")
    report = analyze(SPECS, periods, AnalysisConfig(sequential=SequentialParams(tuning_n=6000)))
    looks = [lk for lk in report.looks if lk.metric == "rev"]
    assert [lk.label for lk in looks] == [f"day {i}" for i in range(1, 7)]
    assert [lk.n_units for lk in looks] == [1000 * i for i in range(1, 7)]
    lows, highs = [lk.seq_ci_lower for lk in looks], [lk.seq_ci_upper for lk in looks]
    assert lows == sorted(lows)
    assert highs == sorted(highs, reverse=True)
    assert [lk.seq_pvalue for lk in looks] == sorted((lk.seq_pvalue for lk in looks), reverse=True)
    e = report.effect("rev")
    assert e.seq_ci_lower == lows[-1]
    assert e.seq_pvalue == looks[-1].seq_pvalue
    # The pooled analysis equals the analysis of the summed periods.
    pooled = analyze(SPECS, sum(periods[1:], periods[0]))
    assert pooled.effect("rev").pvalue == pytest.approx(e.pvalue, rel=1e-12)


def test_analyze_input_errors() -> None:
    data = _experiment({"control": 0.0, "treatment": 0.0})
    with pytest.raises(ExperimentInputError, match="control variant 'nope'"):
        analyze(SPECS, data, AnalysisConfig(control="nope"))
    with pytest.raises(ExperimentInputError, match="no statistics for metric 'missing'"):
        analyze([MetricSpec("missing", MetricKind.MEAN)], data)
    with pytest.raises(ExperimentInputError, match="unique"):
        analyze([SPECS[0], SPECS[0]], data)
    with pytest.raises(ExperimentInputError, match="do not fit"):
        analyze([MetricSpec("rev", MetricKind.RATIO, denominator="d")], data)
    with pytest.raises(ExperimentInputError, match="zero periods"):
        analyze(SPECS, [])


def test_missing_arm_counts_as_empty() -> None:
    data = ExperimentStats(
        units={"control": 10, "treatment": 4},
        metrics={"rev": {"control": SufficientStats.from_arrays(np.arange(10.0))}},
    )
    report = analyze([MetricSpec("rev", MetricKind.MEAN)], data)
    assert report.effect("rev").status is AnalysisStatus.EMPTY_ARM
    assert report.effect("rev").verdict is Verdict.NOT_COMPUTED


@pytest.mark.parametrize("units", [{"control": 10}, {"control": 10, "treatment": 0}])
def test_fewer_than_two_arms_with_units_is_an_input_error(units: dict[str, int]) -> None:
    data = ExperimentStats(
        units=units,
        metrics={"rev": {"control": SufficientStats.from_arrays(np.arange(10.0))}},
    )
    with pytest.raises(ExperimentInputError, match=r"at least two arms.*only 'control'"):
        analyze([MetricSpec("rev", MetricKind.MEAN)], data)


def test_to_dict_is_json_ready() -> None:
    import json

    report = analyze(
        SPECS,
        _experiment({"control": 0.0, "treatment": 0.01}),
        AnalysisConfig(sequential=SequentialParams()),
    )
    text = json.dumps(report.to_dict(), allow_nan=False)
    doc = json.loads(text)
    assert doc["effects"][0]["df"] == "inf"
    assert doc["effects"][0]["verdict"] in {v.value for v in Verdict}
