"""Learning velocity: the hierarchical trend model (MAP, interval, statuses, population fit)
checked against independent references, and the next-attempt predictor by hand."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pyarrow as pa
import pytest
from scipy import optimize
from tests.features.featsynth import DAY_US, T0_US, events_table

from cohortlens.events.schema import EVENT_SCHEMA
from cohortlens.features import FeatureParams, GlobalStats, VelocityParams, compute_features
from cohortlens.features._prep import prepare
from cohortlens.features.stats import VelocityPopulation, item_stats
from cohortlens.features.velocity import (
    fit_velocity_population,
    predict_next_attempts,
    trend_map,
    trend_observations,
)


def _sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _zero_difficulty_stats(table, velocity: VelocityPopulation | None = None):  # type: ignore[no-untyped-def]
    items = item_stats(table)
    items = dataclasses.replace(
        items, difficulty=np.zeros(len(items.difficulty)), default_difficulty=0.0
    )
    return GlobalStats(items=items, velocity=velocity or VelocityPopulation())


def _params(**kw: float) -> FeatureParams:
    base = {
        "elo_alpha": 1.0,
        "elo_beta": 0.0,
        "elo_k_min": 1.0,
        "domain_weight": 0.0,
        "half_life_weeks": 1.0,
        "min_graded_events": 1,
        "min_active_weeks": 2,
    }
    base.update(kw)
    return FeatureParams(velocity=VelocityParams(**base))  # type: ignore[arg-type]


def _model_world(
    n: int, seed: int, pop: VelocityPopulation, n_items: int = 400, weeks: float = 10.0
) -> tuple[pa.Table, np.ndarray, np.ndarray, GlobalStats]:
    """Learners drawn from the trend model itself, and stats whose difficulties are exact."""
    rng = np.random.default_rng(seed)
    b = rng.normal(0.0, 1.2, n_items)
    a = rng.normal(pop.mu_start_logit, pop.sigma_start_logit, n)
    v = rng.normal(pop.mu_velocity, pop.sigma_velocity, n)
    per = rng.integers(30, 90, n)
    lid = np.repeat(np.arange(n), per)
    t_days = rng.uniform(0.0, weeks * 7.0, len(lid))
    t_days[np.r_[0, np.cumsum(per)[:-1]]] = 0.0  # every learner starts at day 0
    item = np.concatenate([rng.choice(n_items, k, replace=False) for k in per])
    z = a[lid] + v[lid] * t_days / 7.0 - pop.kappa * b[item]
    p = pop.guess_floor + (1 - pop.guess_floor) / (1 + np.exp(-z))
    y = (rng.random(len(lid)) < p).astype(float)
    ids = np.array([f"m{i:05d}" for i in range(n)])
    names = np.array([f"q{j:04d}" for j in range(n_items)])
    table = pa.table(
        {
            "event_id": [f"e{i}" for i in range(len(lid))],
            "learner_id": ids[lid],
            "ts": pa.array(T0_US + (t_days * DAY_US).astype(np.int64), pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "domain": ["d"] * len(lid),
            "item_id": names[item],
            "outcome": y,
            "duration_s": pa.nulls(len(lid), pa.float64()),
        },
        schema=EVENT_SCHEMA,
    )
    items = item_stats(table)
    order = np.argsort(names)  # item stats are sorted by id (already sorted here)
    items = dataclasses.replace(items, difficulty=b[order])
    return table, a, v, GlobalStats(items=items, velocity=pop)


def test_map_equals_a_direct_optimisation_of_the_posterior() -> None:
    pop = VelocityPopulation(
        kappa=1.3, guess_floor=0.2, mu_start_logit=-0.4, sigma_start_logit=0.9,
        mu_velocity=0.05, sigma_velocity=0.1,
    )  # fmt: skip
    table, _, _, stats = _model_world(3, 1, pop)
    prep = prepare(table, stats.items)
    obs = trend_observations(prep, stats.items)
    fit = trend_map(obs, pop)
    for k in range(3):
        sl = slice(obs.starts[k], obs.starts[k + 1])
        t, b, y = obs.t_weeks[sl], obs.difficulty[sl], obs.outcome[sl]

        def neg_post(x: np.ndarray, t=t, b=b, y=y) -> float:  # type: ignore[no-untyped-def]
            z = x[0] + x[1] * t - pop.kappa * b
            p = pop.guess_floor + (1 - pop.guess_floor) / (1 + np.exp(-z))
            ll = np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))
            prior = ((x[0] - pop.mu_start_logit) / pop.sigma_start_logit) ** 2
            prior += ((x[1] - pop.mu_velocity) / pop.sigma_velocity) ** 2
            return -ll + 0.5 * prior

        ref = optimize.minimize(neg_post, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
        assert fit.start_logit[k] == pytest.approx(ref[0], abs=1e-5)
        assert fit.velocity[k] == pytest.approx(ref[1], abs=1e-6)
        # Laplace covariance: inverse of the expected information plus the prior precision
        z = ref[0] + ref[1] * t - pop.kappa * b
        s = 1 / (1 + np.exp(-z))
        p = pop.guess_floor + (1 - pop.guess_floor) * s
        w = ((1 - pop.guess_floor) * s * (1 - s)) ** 2 / (p * (1 - p))
        x = np.column_stack([np.ones_like(t), t])
        h = x.T @ (x * w[:, None]) + np.diag([pop.sigma_start_logit**-2, pop.sigma_velocity**-2])
        cov = np.linalg.inv(h)
        assert fit.var_velocity[k] == pytest.approx(cov[1, 1], rel=1e-5)
        assert fit.cov[k] == pytest.approx(cov[0, 1], rel=1e-5)


def test_population_fit_recovers_the_generating_model() -> None:
    truth = VelocityPopulation(
        kappa=1.6, guess_floor=0.25, mu_start_logit=-0.5, sigma_start_logit=0.8,
        mu_velocity=0.12, sigma_velocity=0.08,
    )  # fmt: skip
    table, _, _, stats = _model_world(1500, 2, truth)
    obs = trend_observations(prepare(table, stats.items), stats.items)
    pop = fit_velocity_population(obs, VelocityParams(guess_floor=0.25))
    assert pop.kappa == pytest.approx(1.6, abs=0.1)
    assert pop.mu_start_logit == pytest.approx(-0.5, abs=0.1)
    assert pop.sigma_start_logit == pytest.approx(0.8, abs=0.1)
    assert pop.mu_velocity == pytest.approx(0.12, abs=0.01)
    assert pop.sigma_velocity == pytest.approx(0.08, abs=0.015)
    assert pop.n_learners == 1500


def test_velocity_is_calibrated_and_its_interval_covers_the_truth() -> None:
    truth = VelocityPopulation(
        kappa=1.0, guess_floor=0.25, mu_start_logit=-0.5, sigma_start_logit=0.8,
        mu_velocity=0.15, sigma_velocity=0.1,
    )  # fmt: skip
    table, _, v_true, stats = _model_world(1500, 3, truth)
    params = FeatureParams(velocity=VelocityParams(min_graded_events=1))
    feats = compute_features(table, params, stats).to_pandas()
    v = feats["velocity_logit_per_week"].to_numpy()
    lo = feats["velocity_lo_logit_per_week"].to_numpy()
    hi = feats["velocity_hi_logit_per_week"].to_numpy()
    ok = ~np.isnan(v)
    assert ok.mean() > 0.9
    covered = (lo[ok] <= v_true[ok]) & (v_true[ok] <= hi[ok])
    assert 0.75 <= covered.mean() <= 0.85  # an 80 % interval
    # a posterior mean is calibrated in the Bayes sense: E[true | estimate] = estimate
    slope, intercept = np.polyfit(v[ok], v_true[ok], 1)
    assert slope == pytest.approx(1.0, abs=0.1)
    assert intercept == pytest.approx(0.0, abs=0.02)


def test_statuses_null_velocity_and_ability() -> None:
    pop = VelocityPopulation(sigma_velocity=0.2)
    rows_ = []
    # a: 60 attempts over 10 weeks (ok); b: 5 attempts (too few); c: 30 attempts in one week;
    # d: only ungraded events; e: 21 attempts, 20 on day 0 and one a week later (uncertain)
    for lid, days, graded in (
        ("a", np.linspace(0, 70, 60), True),
        ("b", np.linspace(0, 20, 5), True),
        ("c", np.linspace(0, 0.5, 30), True),
        ("d", np.linspace(0, 20, 5), False),
        ("e", np.r_[np.linspace(0, 0.1, 20), 7.5], True),
    ):
        for j, d in enumerate(days):
            rows_.append((lid, d, f"{lid}{j}", (j % 2) * 1.0 if graded else None))
    lids, days, items, ys = zip(*rows_, strict=True)
    t = events_table(list(lids), list(days), list(items), list(ys))
    params = _params(min_graded_events=20, max_posterior_sd_share=0.9)
    feats = {
        r["learner_id"]: r
        for r in compute_features(t, params, _zero_difficulty_stats(t, pop)).to_pylist()
    }
    assert feats["a"]["velocity_status"] == "ok"
    assert feats["a"]["velocity_lo_logit_per_week"] < feats["a"]["velocity_logit_per_week"]
    assert feats["b"]["velocity_status"] == "too_few_graded_events"
    assert feats["c"]["velocity_status"] == "too_few_active_weeks"
    assert feats["d"]["velocity_status"] == "no_graded_events"
    assert feats["e"]["velocity_status"] == "too_uncertain"
    for lid in "bcde":
        assert feats[lid]["velocity_logit_per_week"] is None
        assert feats[lid]["velocity_lo_logit_per_week"] is None
    assert feats["d"]["ability_logit"] is None
    assert feats["b"]["ability_logit"] is not None
    assert feats["a"]["n_graded_events"] == 60
    assert feats["a"]["graded_weeks"] == 11


def test_repeats_do_not_move_the_velocity() -> None:
    pop = VelocityPopulation(sigma_velocity=0.2)
    days = list(np.linspace(0, 20, 30))
    items = [f"i{j}" for j in range(30)]
    ys = [float(j % 3 != 0) for j in range(30)]
    base = events_table(["a"] * 30, days, items, ys)
    # the same learner also repeats five items later, all wrong
    more = events_table(["a"] * 35, days + [21.0] * 5, items + items[:5], ys + [0.0] * 5)
    params = _params(min_graded_events=1)
    stats = _zero_difficulty_stats(more, pop)
    r1 = compute_features(base, params, stats).to_pylist()[0]
    r2 = compute_features(more, params, stats).to_pylist()[0]
    assert r1["velocity_logit_per_week"] == r2["velocity_logit_per_week"]
    assert r1["n_graded_events"] == r2["n_graded_events"] == 30


def test_engagement_ema_with_silent_week() -> None:
    t = events_table(["b", "b"], [0.1, 9.0], ["i1", "i2"], [None, None], duration=[60.0, 120.0])
    row = compute_features(t, _params()).to_pylist()[0]
    # engagement EMA: weeks 0 and 1, one event each, lambda = 0.5 -> (0.25 + 0.5) / 0.75
    assert row["engagement_events_per_week"] == pytest.approx(1.0)
    # minutes: week 0 = 1, week 1 = 2 -> (0.5 * 0.5 * 1 + 0.5 * 2) / 0.75
    assert row["engagement_minutes_per_week"] == pytest.approx((0.25 + 1.0) / 0.75)
    assert row["active_weeks"] == 2


def test_difficulty_is_smoothed_toward_its_domains_success_rate() -> None:
    t = events_table(
        ["a"] * 4 + ["b"] * 2,
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        ["i1", "i1", "i1", "i2", "i2", "j1"],
        [1.0, 1.0, 0.0, 1.0, None, 0.0],
        domain=["x", "x", "x", "x", "x", "y"],
    )
    items = item_stats(t, VelocityParams(difficulty_prior_events=2.0))
    px = 3 / 4  # domain x: 3 of 4 graded answers correct
    # i1: 2 successes, 1 fail; i2: 1 success; j1 (domain y, rate 0 -> clipped to 1e-3)
    assert items.difficulty[0] == pytest.approx(math.log((1 + 2 * (1 - px)) / (2 + 2 * px)))
    assert items.difficulty[1] == pytest.approx(math.log((0 + 2 * (1 - px)) / (1 + 2 * px)))
    py = 1e-3
    assert items.difficulty[2] == pytest.approx(math.log((1 + 2 * (1 - py)) / (0 + 2 * py)))
    pbar = 3 / 5
    assert items.default_difficulty == pytest.approx(math.log((1 - pbar) / pbar))
    assert items.n_graded.tolist() == [3, 1, 1]
    assert items.item_domain.tolist() == [0, 0, 1]


def _predictions(table, params: FeatureParams) -> np.ndarray:  # type: ignore[no-untyped-def]
    stats = _zero_difficulty_stats(table)
    return predict_next_attempts(prepare(table, stats.items), stats.items, params.velocity)


def test_current_knowledge_predicts_repeats_by_hand() -> None:
    # i1 at 0 s (correct), i2 at 50 s (correct), i1 at 100 s (correct), i1 two days later (wrong)
    s = 1 / 86_400
    t = events_table(
        ["a"] * 4, [0.0, 50 * s, 100 * s, 2.0], ["i1", "i2", "i1", "i1"], [1.0, 1.0, 1.0, 0.0]
    )
    p_pred = _predictions(t, _params())
    # prior knowledge (b = 0, K = 1, first attempts only): theta 0 -> 0.5 -> 0.5 + (1 - s(0.5))
    p1 = 0.5
    th1 = 0.5
    p2 = _sig(th1)
    th2 = th1 + (1 - p2)
    # current knowledge of i1: starts at the prior logit 0, + 3.4 (1 - P) after a correct answer
    m = 0.0 + 3.4 * (1 - p1)
    p3 = _sig(m + 80.0 / 100.0)  # 100 s since the previous attempt of i1 (not of i2)
    m = m + 3.4 * (1 - p3)
    p4 = _sig(m + 80.0 / (2 * 86_400 - 100))
    np.testing.assert_allclose(p_pred, [p1, p2, p3, p4], rtol=0, atol=1e-12)
    # without current knowledge a repeat is predicted from the prior knowledge of its time
    # (repeats never move theta: it stays th2)
    prior = _predictions(t, _params(current_knowledge=False))
    np.testing.assert_allclose(prior, [p1, p2, _sig(th2), _sig(th2)], atol=1e-12)


def test_current_knowledge_wrong_step_floor_and_ungraded_repeat() -> None:
    # i1 wrong at day 0, ungraded view at day 1, graded again at day 3; guess floor 0.25
    t = events_table(["a"] * 3, [0.0, 1.0, 3.0], ["i1"] * 3, [0.0, None, 1.0])
    g = 0.25
    p_pred = _predictions(t, _params(elo_guess_floor=g))
    p1 = g + (1 - g) * 0.5
    m = 0.0 + 0.3 * (0.0 - p1)  # delta = 0.3 after a wrong answer
    p3 = g + (1 - g) * _sig(m + 80.0 / (3 * 86_400))  # seconds since the last *graded* attempt
    assert p_pred[0] == pytest.approx(p1, abs=1e-12)
    assert math.isnan(p_pred[1])
    assert p_pred[2] == pytest.approx(p3, abs=1e-12)


def test_current_knowledge_settings_leave_features_unchanged(synth) -> None:  # type: ignore[no-untyped-def]
    base = compute_features(synth.events)
    other = FeatureParams(
        velocity=VelocityParams(
            current_knowledge=False, current_step_correct=1.0, current_time_shift_s=0.0
        )
    )
    assert compute_features(synth.events, other).equals(base)
