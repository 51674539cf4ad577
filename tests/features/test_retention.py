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
    fit_population,
    learner_map,
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
