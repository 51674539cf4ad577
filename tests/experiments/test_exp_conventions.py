"""Conventions as options (issue 14 §1) and the defects they fix: each test fails on the old code."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from typer.testing import CliRunner

from cohortlens.cli.experiment import app
from cohortlens.experiments import (
    AnalysisConfig,
    ExperimentStats,
    MetricKind,
    MetricSpec,
    SufficientStats,
    Verdict,
    analyze,
    compare,
)

runner = CliRunner()


def _mean_stats(n: int, mean: float, sd: float) -> SufficientStats:
    return SufficientStats(n=n, sum_y=n * mean, sum_yy=(n - 1) * sd**2 + n * mean**2)


# GrowthBook packages/stats/tests/frequentist/test_tests.py (the case quoted in the issue).
CONTROL = _mean_stats(3407, 0.41, 3.9)
TREATMENT = _mean_stats(3461, 0.70, 6.2)


def test_relative_pvalue_agrees_with_relative_ci_on_the_issue_case() -> None:
    e = compare(CONTROL, TREATMENT, MetricKind.MEAN)
    assert e.pvalue == pytest.approx(0.02016, abs=5e-6)  # absolute test: significant
    assert e.rel_effect_size_ci_lower < 0 < e.rel_effect_size_ci_upper
    assert e.rel_pvalue == pytest.approx(0.06191, abs=5e-6)  # GrowthBook's relative p
    assert e.rel_pvalue > 0.05


def test_decision_scale_relative_uses_the_relative_test() -> None:
    data = ExperimentStats(
        units={"control": 3407, "treatment": 3461},
        metrics={"m": {"control": CONTROL, "treatment": TREATMENT}},
    )
    spec = [MetricSpec("m", MetricKind.MEAN)]
    assert analyze(spec, data).effect("m").verdict is Verdict.IMPROVEMENT
    rel = analyze(spec, data, AnalysisConfig(decision="relative")).effect("m")
    assert rel.verdict is Verdict.NO_SIGNIFICANT_CHANGE


def _arm(draw: st.DrawFn, kind: MetricKind) -> SufficientStats:
    n = draw(st.integers(5, 400))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind is MetricKind.BINARY:
        y = (rng.random(n) < draw(st.floats(0.05, 0.95))).astype(float)
        return SufficientStats.from_arrays(y)
    y = rng.lognormal(draw(st.floats(-1, 2)), draw(st.floats(0.1, 1.5)), n)
    if kind is MetricKind.RATIO:
        return SufficientStats.from_arrays(y, d=1.0 + rng.poisson(3, n))
    return SufficientStats.from_arrays(y, x=y * draw(st.floats(0, 1)) + rng.normal(size=n))


@st.composite
def _pairs(draw: st.DrawFn) -> tuple[MetricKind, SufficientStats, SufficientStats]:
    kind = draw(st.sampled_from(list(MetricKind)))
    return kind, _arm(draw, kind), _arm(draw, kind)


@settings(max_examples=150, deadline=None)
@given(
    _pairs(),
    st.sampled_from(["linear", "log"]),
    st.sampled_from(["two-sided", "greater", "less"]),
    st.sampled_from([0.01, 0.05, 0.2]),
)
def test_relative_p_below_alpha_iff_relative_ci_excludes_zero(
    pair: tuple[MetricKind, SufficientStats, SufficientStats],
    scale: str,
    alternative: str,
    alpha: float,
) -> None:
    kind, c, t = pair
    cfg = AnalysisConfig(alpha=alpha, rel_scale=scale, alternative=alternative)  # type: ignore[arg-type]
    e = compare(c, t, kind, config=cfg)
    if math.isnan(e.rel_pvalue):
        return
    lo, hi = e.rel_effect_size_ci_lower, e.rel_effect_size_ci_upper
    excludes = lo > 0 or hi < 0
    if min(abs(lo), abs(hi)) > 1e-9 * max(1.0, abs(e.rel_effect_size)):
        assert (e.rel_pvalue < alpha) == excludes, e


def test_log_scale_matches_log_ratio_delta_method() -> None:
    e = compare(CONTROL, TREATMENT, MetricKind.MEAN, config=AnalysisConfig(rel_scale="log"))
    m_c, m_t = 0.41, 0.70
    a, b = 6.2**2 / 3461 / m_t**2, 3.9**2 / 3407 / m_c**2
    se_log = math.sqrt(a + b)
    # tea-tasting: the Welch df of the log-scale terms.
    q = sps.t.ppf(0.975, (a + b) ** 2 / (a**2 / 3460 + b**2 / 3406))
    assert e.rel_effect_size_ci_lower == pytest.approx(
        math.exp(math.log(m_t / m_c) - q * se_log) - 1
    )
    assert e.rel_effect_size_ci_upper == pytest.approx(
        math.exp(math.log(m_t / m_c) + q * se_log) - 1
    )


def test_equal_var_matches_student_t() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(1, 2, 40), rng.normal(1.5, 3, 55)
    e = compare(
        SufficientStats.from_arrays(a),
        SufficientStats.from_arrays(b),
        MetricKind.MEAN,
        config=AnalysisConfig(equal_var=True),
    )
    ref = sps.ttest_ind(b, a, equal_var=True)
    assert e.test == "student_t"
    assert e.pvalue == pytest.approx(ref.pvalue, rel=1e-10)
    assert e.df == 93


def test_one_sided_and_normal_quantile() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(1, 2, 40), rng.normal(1.5, 3, 55)
    sa, sb = SufficientStats.from_arrays(a), SufficientStats.from_arrays(b)
    e = compare(sa, sb, MetricKind.MEAN, config=AnalysisConfig(alternative="greater"))
    ref = sps.ttest_ind(b, a, equal_var=False, alternative="greater")
    assert e.pvalue == pytest.approx(ref.pvalue, rel=1e-10)
    assert e.effect_size_ci_upper == math.inf
    z = compare(sa, sb, MetricKind.MEAN, config=AnalysisConfig(use_t=False))
    assert z.df == math.inf
    assert z.test == "z"


def test_yates_correction_shrinks_the_statistic() -> None:
    c = SufficientStats(n=100, sum_y=30.0, sum_yy=30.0)
    t = SufficientStats(n=100, sum_y=42.0, sum_yy=42.0)
    plain = compare(c, t, MetricKind.BINARY, config=AnalysisConfig(binary_test="pooled"))
    yates = compare(
        c, t, MetricKind.BINARY, config=AnalysisConfig(binary_test="pooled", yates=True)
    )
    # Pearson chi-square with Yates' correction on the 2x2 table equals the corrected z².
    chi2 = sps.chi2_contingency([[42, 58], [30, 70]], correction=True)[0]
    assert yates.statistic**2 == pytest.approx(chi2, rel=1e-10)
    assert plain.statistic > yates.statistic
    assert yates.test == "z_pooled_yates"


# ---------------------------------------------------------------------------- bad input


def test_impossible_sums_are_rejected() -> None:
    # Σy² < (Σy)²/n: a negative variance (was silently clamped to 0, giving p = 0.022).
    with pytest.raises(ValueError, match="variance of y would be negative"):
        SufficientStats(n=100, sum_y=500.0, sum_yy=2000.0)
    with pytest.raises(ValueError, match=r"sum_xy.*Cauchy-Schwarz"):
        SufficientStats(n=10, sum_y=0.0, sum_yy=10.0, sum_x=0.0, sum_xx=10.0, sum_xy=20.0)


def _stats_doc(control: dict[str, float], treatment: dict[str, float] | None) -> dict[str, object]:
    units = {"control": int(control["n"])}
    stats = {"revenue": {"control": control}}
    if treatment is not None:
        units["treatment"] = int(treatment["n"])
        stats["revenue"]["treatment"] = treatment
    return {"metrics": [{"name": "revenue", "type": "mean"}], "units": units, "stats": stats}


def test_cli_impossible_sums_exit_2_naming_arm_and_metric(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(
        json.dumps(
            _stats_doc(
                {"n": 100, "sum_y": 500.0, "sum_yy": 3000.0},
                {"n": 100, "sum_y": 520.0, "sum_yy": 2000.0},
            )
        )
    )
    report = tmp_path / "r.html"
    result = runner.invoke(app, ["analyze", str(path), "--report", str(report)])
    assert result.exit_code == 2, result.output
    assert "stats.revenue.treatment" in result.output
    assert "negative" in result.output
    assert not report.exists()


def test_cli_single_arm_exit_2_and_no_report(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(_stats_doc({"n": 100, "sum_y": 500.0, "sum_yy": 3000.0}, None)))
    report = tmp_path / "r.html"
    result = runner.invoke(app, ["analyze", str(path), "--report", str(report)])
    assert result.exit_code == 2, result.output
    assert "at least two arms" in result.output
    assert "trust checks passed" not in result.output
    assert not report.exists()


def test_cli_nonfinite_reports_count_and_rows_then_drops(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    rows = ["variant,revenue"] + [
        f"{'control' if i % 2 else 'treatment'},{'nan' if i in (4, 9) else i}" for i in range(1, 21)
    ]
    path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "s.json"
    args = ["reduce", str(path), "--metric", "revenue:mean", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "'revenue' has 2 non-finite value(s)" in result.output
    assert "row(s) 4, 9" in result.output
    assert "--drop-nonfinite" in result.output
    assert not out.exists()
    result = runner.invoke(app, [*args, "--drop-nonfinite", "--json"])
    assert result.exit_code == 0, result.output
    assert "revenue 2" in result.stderr
    doc = json.loads(out.read_text())
    arms = doc["periods"][0]["stats"]["revenue"]
    assert arms["control"]["n"] + arms["treatment"]["n"] == 18
    assert doc["periods"][0]["units"] == {"control": 10, "treatment": 10}
