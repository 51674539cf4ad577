"""Retention: review pairs, MAP half-life, credible interval, reuse, population fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize
from tests.features.featsynth import events_table

from cohortlens.features import FeatureParams, RetentionParams, RetentionPopulation
from cohortlens.features._prep import prepare
from cohortlens.features.engine import compute_features
from cohortlens.features.retention import (
    ReviewPairs,
    _shared_nll,
    fit_population,
    learner_map,
    predict_recall,
    reuse_stats,
    review_pairs,
)
from cohortlens.features.stats import GlobalStats, item_stats


def _pairs(learner: np.ndarray, gap: np.ndarray, y: np.ndarray, n_learners: int) -> ReviewPairs:
    return ReviewPairs(
        learner,
        np.searchsorted(learner, np.arange(n_learners + 1)),
        gap,
        y,
        np.zeros((len(gap), 3)),
        np.zeros(len(gap), np.int64),
    )


def test_review_pairs_skip_same_session_and_track_history() -> None:
    t = events_table(
        ["a"] * 6,
        [0.0, 10 / 1440, 2.0, 0.5, 3.5, 1.0],
        ["i", "i", "i", "j", "j", "k"],
        [1.0, 0.0, 1.0, 0.0, 1.0, None],
    )
    prep = prepare(t, item_stats(t))
    pairs = review_pairs(prep, RetentionParams())
    assert len(pairs) == 2
    order = np.argsort(pairs.gap_days)
    gap = pairs.gap_days[order]
    assert gap[0] == pytest.approx(2.0 - 10 / 1440)
    assert gap[1] == pytest.approx(3.0)
    assert pairs.recalled[order].tolist() == [1.0, 1.0]
    # i: before = 1 correct, 1 wrong, previous wrong; j: 0 correct, 1 wrong, previous wrong
    np.testing.assert_allclose(pairs.x[order], [[0.0, 1.0, 1.0], [-1.0, 1.0, 1.0]])
    reuse = reuse_stats(prep, RetentionParams())
    assert reuse.distinct_items.tolist() == [3]
    assert reuse.reused_items.tolist() == [2]  # i (2 days), j (3 days); k once


def test_map_symmetric_case_by_hand() -> None:
    # two pairs at gap 5 days, one recalled: likelihood and prior both centred on h = 5 days
    pairs = _pairs(np.array([0, 0]), np.array([5.0, 5.0]), np.array([1.0, 0.0]), 1)
    pop = RetentionPopulation(guess_floor=0.0, mu_ln_h=math.log(5.0), sigma_ln_h=0.7)
    a, sd = learner_map(pairs, pop, RetentionParams())
    assert a[0] == pytest.approx(math.log(5.0), abs=1e-10)
    # Fisher information at p = 1/2: sum ((ln 2)/2)^2 / (1/4) = 2 (ln 2)^2, plus 1/sigma^2
    assert sd[0] == pytest.approx(1 / math.sqrt(2 * math.log(2) ** 2 + 1 / 0.49), rel=1e-10)


def test_map_matches_scipy_on_random_pairs() -> None:
    rng = np.random.default_rng(3)
    gap = rng.uniform(1, 30, 40)
    y = (rng.random(40) < 0.6).astype(float)
    pop = RetentionPopulation(guess_floor=0.3, mu_ln_h=math.log(4.0), sigma_ln_h=1.2)
    a, _ = learner_map(_pairs(np.zeros(40, np.int64), gap, y, 1), pop, RetentionParams())

    def neg_post(v: float) -> float:
        p = 0.3 + 0.7 * 2.0 ** (-gap / math.exp(v))
        return -float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))) + (v - pop.mu_ln_h) ** 2 / (
            2 * 1.2**2
        )

    ref = optimize.minimize_scalar(
        neg_post, bounds=(-3, 6), method="bounded", options={"xatol": 1e-10}
    )
    assert a[0] == pytest.approx(ref.x, abs=1e-6)


def test_no_pairs_gives_prior_free_nulls() -> None:
    t = events_table(
        ["a", "a", "b", "b", "b", "b"],
        [0.0, 0.01, 0.0, 2.0, 4.0, 6.0],
        ["i", "i", "j", "j", "j", "j"],
        [1.0, 1.0, 1.0, 0.0, 1.0, 1.0],
    )
    rows = {r["learner_id"]: r for r in compute_features(t).to_pylist()}
    assert rows["a"]["retention_status"] == "no_review_pairs"
    assert rows["a"]["half_life_days"] is None
    assert rows["a"]["reuse_rate"] == 0.0
    assert rows["b"]["review_pairs"] == 3
    assert rows["b"]["retention_status"] == "ok"
    b = rows["b"]
    assert b["half_life_lo_days"] < b["half_life_days"] < b["half_life_hi_days"]
    assert 0 < b["p_recall_30d"] < b["p_recall_7d"] < 1


def test_population_fit_recovers_guess_floor_and_spread() -> None:
    rng = np.random.default_rng(5)
    n_l, per = 300, 40
    true_a = rng.normal(math.log(6.0), 0.8, n_l)
    learner = np.repeat(np.arange(n_l), per)
    gap = rng.exponential(8.0, n_l * per) + 1.0
    p = 0.3 + 0.7 * 2.0 ** (-gap / np.exp(true_a[learner]))
    y = (rng.random(n_l * per) < p).astype(float)
    pop = fit_population(_pairs(learner, gap, y, n_l), RetentionParams())
    assert pop.guess_floor == pytest.approx(0.3, abs=0.05)
    assert pop.mu_ln_h == pytest.approx(math.log(6.0), abs=0.2)
    assert pop.sigma_ln_h == pytest.approx(0.8, abs=0.25)
    a, _ = learner_map(_pairs(learner, gap, y, n_l), pop, RetentionParams())
    assert np.corrcoef(a, true_a)[0, 1] > 0.7


def test_p_recall_uses_population_floor() -> None:
    t = events_table(["a"] * 4, [0.0, 2.0, 4.0, 8.0], ["i"] * 4, [1.0, 1.0, 0.0, 1.0])
    stats = GlobalStats(
        item_stats(t), RetentionPopulation(guess_floor=0.2, mu_ln_h=1.0, sigma_ln_h=1.0)
    )
    r = compute_features(t, FeatureParams(), stats).to_pylist()[0]
    h = r["half_life_days"]
    assert r["p_recall_7d"] == pytest.approx(0.2 + 0.8 * 2 ** (-7 / h))
    assert r["p_recall_30d"] == pytest.approx(0.2 + 0.8 * 2 ** (-30 / h))


def test_stretched_curve_by_hand() -> None:
    # h = 4 days, kappa = 0.5: at t = 16 days (t/h)^kappa = 2, so p = g + (1 - g) / 4
    p = predict_recall(np.array([16.0, 4.0]), np.log(np.array([4.0, 4.0])), 0.2, 0.5)
    np.testing.assert_allclose(p, [0.2 + 0.8 / 4, 0.2 + 0.8 / 2], rtol=0, atol=1e-15)
    # kappa = 1 is the exponential curve
    p1 = predict_recall(np.array([6.0]), np.array([math.log(3.0)]), 0.1)
    assert p1[0] == pytest.approx(0.1 + 0.9 * 0.25, abs=1e-15)


def test_map_symmetric_case_with_curve_shape() -> None:
    # at gap = h, p = 1/2 for any kappa; Fisher information per pair (kappa ln2 / 2)^2 / (1/4)
    pairs = _pairs(np.array([0, 0]), np.array([5.0, 5.0]), np.array([1.0, 0.0]), 1)
    pop = RetentionPopulation(
        guess_floor=0.0, mu_ln_h=math.log(5.0), sigma_ln_h=0.7, curve_shape=0.5
    )
    a, sd = learner_map(pairs, pop, RetentionParams())
    assert a[0] == pytest.approx(math.log(5.0), abs=1e-10)
    info = 2 * (0.5 * math.log(2) / 2) ** 2 / 0.25
    assert sd[0] == pytest.approx(1 / math.sqrt(info + 1 / 0.49), rel=1e-10)


def test_map_with_curve_shape_matches_scipy() -> None:
    rng = np.random.default_rng(8)
    gap = rng.uniform(1, 60, 50)
    y = (rng.random(50) < 0.7).astype(float)
    pop = RetentionPopulation(
        guess_floor=0.4, mu_ln_h=math.log(10.0), sigma_ln_h=1.0, curve_shape=0.4
    )
    a, _ = learner_map(_pairs(np.zeros(50, np.int64), gap, y, 1), pop, RetentionParams())

    def neg_post(v: float) -> float:
        p = 0.4 + 0.6 * 2.0 ** (-((gap / math.exp(v)) ** 0.4))
        return -float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))) + (v - pop.mu_ln_h) ** 2 / 2

    ref = optimize.minimize_scalar(
        neg_post, bounds=(-3, 5.6), method="bounded", options={"xatol": 1e-10}
    )
    assert a[0] == pytest.approx(ref.x, abs=1e-6)


def test_shared_nll_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(2)
    n = 200
    gap = rng.uniform(0.05, 90, n)
    y = (rng.random(n) < 0.7).astype(float)
    x = rng.normal(0, 0.5, (n, 3))
    a = rng.normal(2.0, 0.7, n)
    lo, hi = math.log(15 / 1440), math.log(274.0)
    theta = np.array([-0.3, math.log(0.6), 0.2, -0.4, 0.1])
    _, grad = _shared_nll(theta, np.log(gap), y, x, a, lo, hi)
    eps = 1e-6
    num = np.array(
        [
            (
                _shared_nll(theta + eps * e, np.log(gap), y, x, a, lo, hi)[0]
                - _shared_nll(theta - eps * e, np.log(gap), y, x, a, lo, hi)[0]
            )
            / (2 * eps)
            for e in np.eye(len(theta))
        ]
    )
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-5)


def _naive_shared_nll(
    theta: np.ndarray, gap: np.ndarray, y: np.ndarray, x: np.ndarray, a: np.ndarray
) -> float:
    """The pooled negative log-likelihood written out pair by pair (reference)."""
    lo, hi = math.log(15 / 1440), math.log(274.0)
    g, kappa = 1.0 / (1.0 + math.exp(-theta[0])), math.exp(theta[1])
    total = 0.0
    for j in range(len(gap)):
        lnh = min(max(a[j] + sum(x[j, k] * theta[2 + k] for k in range(3)), lo), hi)
        p = g + (1.0 - g) * 2.0 ** (-((gap[j] / math.exp(lnh)) ** kappa))
        p = min(max(p, 1e-6), 1.0 - 1e-6)
        total -= math.log(p) if y[j] == 1.0 else math.log(1.0 - p)
    return total


def test_shared_nll_matches_a_pair_by_pair_reference() -> None:
    """The fused kernel sums the same likelihood, including pairs where the clips bind."""
    rng = np.random.default_rng(8)
    n = 500
    gap = np.exp(rng.uniform(math.log(1 / 24), math.log(400.0), n))
    y = (rng.random(n) < 0.6).astype(float)
    x = rng.normal(0, 1.5, (n, 3))
    a = rng.normal(1.0, 3.0, n)  # wide: some ln h beyond both bounds
    for theta in ([-1.2, 0.0, 0.3, -0.2, 0.1], [0.5, math.log(0.4), -1.0, 2.0, 0.0]):
        th = np.array(theta)
        nll, _ = _shared_nll(th, np.log(gap), y, x, a, math.log(15 / 1440), math.log(274.0))
        assert nll == pytest.approx(_naive_shared_nll(th, gap, y, x, a), rel=1e-12)


def test_learner_map_from_a_warm_start_reaches_the_same_estimate() -> None:
    rng = np.random.default_rng(9)
    n_l, per = 50, 20
    learner = np.repeat(np.arange(n_l), per)
    gap = rng.exponential(8.0, n_l * per) + 1.0
    true_a = rng.normal(math.log(6.0), 0.8, n_l)
    y = (rng.random(n_l * per) < 0.25 + 0.75 * 2.0 ** (-gap / np.exp(true_a[learner]))).astype(
        float
    )
    pairs = _pairs(learner, gap, y, n_l)
    pop = RetentionPopulation(guess_floor=0.25, mu_ln_h=1.8, sigma_ln_h=0.8)
    cold, sd_cold = learner_map(pairs, pop, RetentionParams())
    warm, sd_warm = learner_map(pairs, pop, RetentionParams(), start=cold + 0.3)
    np.testing.assert_allclose(warm, cold, atol=1e-9)
    np.testing.assert_allclose(sd_warm, sd_cold, rtol=1e-9)


def test_population_fit_recovers_curve_shape() -> None:
    rng = np.random.default_rng(6)
    n_l, per = 300, 60
    true_a = rng.normal(math.log(10.0), 0.6, n_l)
    learner = np.repeat(np.arange(n_l), per)
    gap = np.exp(rng.uniform(math.log(0.1), math.log(200.0), n_l * per))
    p = 0.3 + 0.7 * 2.0 ** (-((gap / np.exp(true_a[learner])) ** 0.5))
    y = (rng.random(n_l * per) < p).astype(float)
    pairs = _pairs(learner, gap, y, n_l)
    pop = fit_population(pairs, RetentionParams(fit_curve_shape=True))
    assert pop.curve_shape == pytest.approx(0.5, abs=0.08)
    assert pop.guess_floor == pytest.approx(0.3, abs=0.05)
    assert pop.mu_ln_h == pytest.approx(math.log(10.0), abs=0.3)
    # by default the shape is not fitted: the exponential model, kappa = 1
    assert fit_population(pairs, RetentionParams()).curve_shape == 1.0


def test_population_fit_on_exponential_data_keeps_shape_near_one() -> None:
    rng = np.random.default_rng(5)
    n_l, per = 300, 40
    true_a = rng.normal(math.log(6.0), 0.8, n_l)
    learner = np.repeat(np.arange(n_l), per)
    gap = rng.exponential(8.0, n_l * per) + 1.0
    y = (rng.random(n_l * per) < 0.3 + 0.7 * 2.0 ** (-gap / np.exp(true_a[learner]))).astype(float)
    pop = fit_population(_pairs(learner, gap, y, n_l), RetentionParams(fit_curve_shape=True))
    assert pop.curve_shape > 0.85


def test_p_recall_uses_population_curve_shape() -> None:
    t = events_table(["a"] * 4, [0.0, 2.0, 4.0, 8.0], ["i"] * 4, [1.0, 1.0, 0.0, 1.0])
    pop = RetentionPopulation(guess_floor=0.2, mu_ln_h=1.0, sigma_ln_h=1.0, curve_shape=0.5)
    r = compute_features(t, FeatureParams(), GlobalStats(item_stats(t), pop)).to_pylist()[0]
    h = r["half_life_days"]
    assert r["p_recall_7d"] == pytest.approx(0.2 + 0.8 * 2 ** (-((7 / h) ** 0.5)))
    assert r["p_recall_30d"] == pytest.approx(0.2 + 0.8 * 2 ** (-((30 / h) ** 0.5)))


def test_population_fit_iterates_to_its_tolerance() -> None:
    """The default fit stops within its tolerance of a tightly converged one; a single
    alternation does not get there (the EM is slow), so the check can fail."""
    import dataclasses

    rng = np.random.default_rng(3)
    n_l, per = 400, 30
    learner = np.repeat(np.arange(n_l), per)
    true_a = rng.normal(math.log(6.0), 0.8, n_l)
    gap = rng.exponential(8.0, n_l * per) + 1.0
    y = (rng.random(n_l * per) < 0.3 + 0.7 * 2.0 ** (-gap / np.exp(true_a[learner]))).astype(float)
    pairs = _pairs(learner, gap, y, n_l)

    def vector(pop: RetentionPopulation) -> np.ndarray:
        return np.array([pop.guess_floor, *pop.coef, pop.mu_ln_h, pop.sigma_ln_h])

    params = RetentionParams()
    tight = vector(
        fit_population(pairs, dataclasses.replace(params, em_iterations=500, em_tolerance=1e-7))
    )
    default = vector(fit_population(pairs, params))
    once = vector(fit_population(pairs, dataclasses.replace(params, em_iterations=1)))
    assert np.abs(default - tight).max() < 10 * params.em_tolerance
    assert np.abs(once - tight).max() > 10 * params.em_tolerance
