"""Small calibration runs (the full-size figures come from benchmarks/validity_experiments.py).

Every bound is a binomial tolerance bound at probability 1e-4 per side for the number of
simulated tests, so with the fixed seeds these tests do not flake (a correct method fails
with probability about 2e-4). What each check detects is computed from the same binomial
law and asserted next to it (``_detects``), so the claim cannot drift from the bounds:

* A/A false-positive rate, 4,000 tests per kind: bounds [3.8 %, 6.3 %]; a test whose true
  rate is 7 % (or 3 %) fails with probability >= 0.95.
* Peeking, 400 A/A tests x 14 looks: the always-valid rate must stay under 9.5 %, which
  catches a true rate of 12 % with probability >= 0.9; naive peeking (about 20 %) must
  exceed it.
* CUPED, 1,000 tests: CI coverage inside [92.3 %, 97.4 %] catches standard errors 20 % too
  small (coverage 89.8 %) with probability >= 0.99; the width ratio is compared with
  ``sqrt(1 - ρ²)`` for the *population* ρ, within 4 standard errors.
* Segments, 300 A/A experiments x 8 cohorts: experiments with any false discovery (the FDR
  of an A/A test) at most 10.3 %; analysing without a correction across segments (true rate
  about 34 %) fails with probability ~1.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow.compute as pc
import pytest
from scipy import stats as sps

from cohortlens.experiments import AnalysisConfig, MetricKind, analyze, reduce_to_stats
from cohortlens.experiments.calibration import (
    MetricModel,
    aa_false_positive_rate,
    cuped_narrowing,
    peeking_false_positive_rates,
    segment_false_discoveries,
)
from cohortlens.experiments.simulation import (
    SIMULATED_METRICS,
    ExperimentSimulationParams,
    simulate_experiment,
)

ALPHA = 0.05
TAIL = 1e-4


def _bounds(n: int, p: float = ALPHA) -> tuple[int, int]:
    """Counts outside [low, high] have probability <= TAIL per side when the rate is p."""
    return int(sps.binom.ppf(TAIL, n, p)), int(sps.binom.isf(TAIL, n, p))


def _detects(n: int, p: float, bad: float) -> float:
    """Probability that a method whose true rate is ``bad`` falls outside the bounds."""
    low, high = _bounds(n, p)
    return float(sps.binom.sf(high, n, bad) + sps.binom.cdf(low - 1, n, bad))


@pytest.mark.parametrize("kind", list(MetricKind))
def test_aa_false_positive_rate(kind: MetricKind) -> None:
    n_tests = 4000
    assert _detects(n_tests, ALPHA, 0.07) >= 0.95
    assert _detects(n_tests, ALPHA, 0.03) >= 0.95
    r = aa_false_positive_rate(MetricModel(kind), n_tests=n_tests, n_per_arm=1000, seed=11)
    low, high = _bounds(n_tests)
    assert low <= r["rejections"] <= high, r


@pytest.mark.parametrize("kind", [MetricKind.BINARY, MetricKind.MEAN])
def test_sequential_stays_valid_while_peeking_inflates(kind: MetricKind) -> None:
    n_tests = 400
    low, high = _bounds(n_tests)
    assert sps.binom.sf(high, n_tests, 0.12) >= 0.9
    r = peeking_false_positive_rates(
        MetricModel(kind), n_tests=n_tests, n_looks=14, n_per_arm_per_look=100, seed=12
    )
    assert round(r["always_valid_rate"] * n_tests) <= high, r
    assert round(r["naive_peeking_rate"] * n_tests) > high, r  # significantly above alpha
    assert round(r["final_look_rate"] * n_tests) >= low, r


def test_cuped_narrows_as_the_population_correlation_predicts_and_covers() -> None:
    n_tests = 1000
    assert _detects(n_tests, 0.95, 2 * sps.norm.cdf(1.96 / 1.2) - 1) >= 0.99
    r = cuped_narrowing(n_per_arm=1000, correlation=0.6, n_tests=n_tests, effect=1.0, seed=3)
    assert r["predicted_width_ratio"] == pytest.approx(0.8)  # from ρ = 0.6, not the sample
    assert abs(r["z"]) < 4.0, r
    assert r["achieved_width_ratio"] == pytest.approx(0.8, rel=0.01), r
    low, high = _bounds(n_tests, 0.95)
    assert low <= r["covered"] <= high, r


def test_cuped_check_fails_when_the_prediction_is_wrong() -> None:
    """The population check can fail: with ρ misstated by 0.05 the gap is far beyond 4 SE."""
    r = cuped_narrowing(n_per_arm=1000, correlation=0.6, n_tests=200, effect=1.0, seed=3)
    predicted_wrong = math.sqrt(1 - 0.55**2)
    z_wrong = (r["achieved_width_ratio"] - predicted_wrong) / r["achieved_width_ratio_se"]
    assert abs(z_wrong) > 4.0


def test_segment_false_discovery_rate_across_cohorts() -> None:
    n = 300
    high = _bounds(n)[1]
    assert sps.binom.sf(high, n, 1 - 0.95**8) > 1 - 1e-9
    r = segment_false_discoveries(
        n_experiments=n, segment_sizes=(200, 300, 400, 500, 600, 700, 800, 900), seed=21
    )
    for row in r["rows"]:
        assert row["experiments_with_false_discovery"] <= high, row
        assert row["false_discovery_rate"] == row["experiments_with_false_discovery"] / n
    naive = segment_false_discoveries(
        n_experiments=100,
        segment_sizes=(200, 300, 400, 500, 600, 700, 800, 900),
        correction="none",
        seed=22,
    )
    assert any(
        row["experiments_with_false_discovery"] > _bounds(100)[1] for row in naive["rows"]
    ), naive


def test_simulated_ab_recovers_injected_effect() -> None:
    params = ExperimentSimulationParams(
        n_learners=30_000,
        completion_logit_shift=0.2,
        churn_logit_shift=-0.2,
        revenue_multiplier=1.1,
        n_weeks=1,
        seed=4,
    )
    sim = simulate_experiment(params)
    assert sim.true_effects["completed"] > 0
    assert sim.true_effects["churned"] < 0
    (stats,) = reduce_to_stats(sim.data, variant_col="variant", metrics=SIMULATED_METRICS)
    report = analyze(SIMULATED_METRICS, stats, AnalysisConfig())
    assert not report.srm.flagged
    for e in report.effects:
        truth = sim.true_effects[e.metric]
        assert e.effect_size_ci_lower <= truth <= e.effect_size_ci_upper, (e.metric, truth, e)
    assert report.effect("revenue").cuped_applied
    assert report.effect("revenue").variance_reduction > 0.05


def test_simulated_aa_and_cohort_personalisation() -> None:
    aa = simulate_experiment(
        ExperimentSimulationParams(
            n_learners=5000, revenue_multiplier=2.0, aa=True, n_weeks=1, seed=5
        )
    )
    assert set(aa.true_effects.values()) == {0.0}
    scaled = simulate_experiment(
        ExperimentSimulationParams(
            n_learners=5000,
            completion_logit_shift=3.0,
            cohort_effect_scale={"fast_specialist": 0.0},
            n_weeks=1,
            seed=5,
        )
    )
    po = scaled.potential_outcomes
    fast = pc.equal(scaled.data["cohort"], "fast_specialist").to_numpy(zero_copy_only=False)
    changed = po["completed_0"].to_numpy(zero_copy_only=False) != po["completed_1"].to_numpy(
        zero_copy_only=False
    )
    assert not changed[fast].any()
    assert changed[~fast].any()
    # Same seed, same population and split: the data are reproducible.
    again = simulate_experiment(
        ExperimentSimulationParams(
            n_learners=5000, revenue_multiplier=2.0, aa=True, n_weeks=1, seed=5
        )
    )
    assert again.data.equals(aa.data)
    assert np.isclose(np.mean(aa.data["day"].to_numpy()), 7.5, atol=0.3)
