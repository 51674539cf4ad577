"""Learning velocity: Elo updates and the weekly-gain EMA, checked against hand computations."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from tests.features.featsynth import events_table

from cohortlens.features import FeatureParams, GlobalStats, VelocityParams, compute_features
from cohortlens.features.stats import item_stats
from cohortlens.features.velocity import ema_rate


def _sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _zero_difficulty_stats(table):  # type: ignore[no-untyped-def]
    items = item_stats(table)
    items = dataclasses.replace(
        items, difficulty=np.zeros(len(items.difficulty)), default_difficulty=0.0
    )
    return GlobalStats(items=items)


def _params(**kw: float) -> FeatureParams:
    base = {
        "elo_alpha": 1.0,
        "elo_beta": 0.0,
        "elo_k_min": 1.0,
        "domain_weight": 0.0,
        "half_life_weeks": 1.0,
        "min_graded_events": 1,
        "min_active_weeks": 2,
        "burn_in_events": 1,
        "ability_step": "elo",
    }
    base.update(kw)
    return FeatureParams(velocity=VelocityParams(**base))  # type: ignore[arg-type]


def test_ema_rate_half_life() -> None:
    assert ema_rate(1.0) == pytest.approx(0.5)
    assert ema_rate(4.0) == pytest.approx(1 - 2**-0.25)


def test_weekly_gain_ema_with_silent_week_by_hand() -> None:
    # one correct answer in weeks 0, 1 and 3 (week 2 silent); b = 0, K = 1, no domain term
    t = events_table(["a"] * 3, [0.5, 7.5, 21.5], ["i1", "i2", "i3"], [1.0, 1.0, 1.0])
    feats = compute_features(t, _params(), _zero_difficulty_stats(t)).to_pylist()[0]
    th1 = 0.5  # 0 + (1 - sigmoid(0))
    th2 = th1 + (1 - _sig(th1))
    th3 = th2 + (1 - _sig(th2))
    g1, g2, g3 = th2 - th1, 0.0, th3 - th2  # gains of weeks 1, 2 (silent), 3
    lam = 0.5
    s = lam * g1
    s = (1 - lam) * s + lam * g2
    s = (1 - lam) * s + lam * g3
    expected = s / (1 - (1 - lam) ** 3)
    assert feats["ability_logit"] == pytest.approx(th3, abs=1e-12)
    assert feats["velocity_logit_per_week"] == pytest.approx(expected, abs=1e-12)
    assert feats["velocity_status"] == "ok"
    assert feats["graded_weeks"] == 3
    assert feats["active_weeks"] == 3


def test_as_of_decays_velocity_over_silent_weeks() -> None:
    t = events_table(["a"] * 2, [0.5, 7.5], ["i1", "i2"], [1.0, 1.0])
    stats = _zero_difficulty_stats(t)
    base = compute_features(t, _params(), stats).to_pylist()[0]
    # as_of in week 3: weeks 2 and 3 add zero gains
    as_of = int(t.column("ts")[0].value) + int(21 * 86_400e6)
    later = compute_features(t, dataclasses.replace(_params(), as_of_us=as_of), stats)
    v = later.to_pylist()[0]["velocity_logit_per_week"]
    g1 = (0.5 + (1 - _sig(0.5))) - 0.5
    lam = 0.5
    expected = (lam * g1 * (1 - lam) ** 2) / (1 - (1 - lam) ** 3)
    assert base["velocity_logit_per_week"] == pytest.approx(g1, abs=1e-12)
    assert v == pytest.approx(expected, abs=1e-12)


def test_uncertainty_step_and_domain_offset_by_hand() -> None:
    # K(n) = 0.8 / (1 + 0.5 n); domain offset gets half of K(n_d) * residual
    t = events_table(["a"] * 2, [0.1, 0.2], ["i1", "i2"], [1.0, 0.0], domain=["x", "x"])
    p = _params(elo_alpha=0.8, elo_beta=0.5, elo_k_min=0.0, domain_weight=0.5)
    feats = compute_features(t, p, _zero_difficulty_stats(t)).to_pylist()[0]
    th, thd = 0.0, 0.0
    r1 = 1 - _sig(th + thd)
    th, thd = th + 0.8 * r1, thd + 0.5 * 0.8 * r1
    r2 = 0 - _sig(th + thd)
    th = th + 0.8 / 1.5 * r2
    assert feats["ability_logit"] == pytest.approx(th, abs=1e-12)


def test_too_few_graded_events_gives_null_not_zero() -> None:
    t = events_table(["a"] * 3, [0.1, 8.0, 15.0], ["i1", "i2", "i3"], [1.0, 0.0, 1.0])
    feats = compute_features(t, _params(min_graded_events=20)).to_pylist()[0]
    assert feats["velocity_logit_per_week"] is None
    assert feats["velocity_status"] == "too_few_graded_events"
    assert feats["ability_logit"] is not None


def test_single_week_and_ungraded_statuses() -> None:
    t = events_table(
        ["a", "a", "b", "b"],
        [0.1, 0.2, 0.1, 9.0],
        ["i1", "i2", "i1", "i2"],
        [1.0, 1.0, None, None],
        duration=[None, None, 60.0, 120.0],
    )
    rows = {r["learner_id"]: r for r in compute_features(t, _params()).to_pylist()}
    assert rows["a"]["velocity_status"] == "too_few_active_weeks"
    assert rows["a"]["velocity_logit_per_week"] is None
    assert rows["b"]["velocity_status"] == "no_graded_events"
    assert rows["b"]["ability_logit"] is None
    assert rows["a"]["engagement_minutes_per_week"] is None  # no durations at all
    # engagement EMA of b: weeks 0 and 1, one event each, lambda = 0.5 -> (0.25 + 0.5) / 0.75
    assert rows["b"]["engagement_events_per_week"] == pytest.approx(1.0)
    # minutes: week 0 = 1, week 1 = 2 -> (0.5 * 0.5 * 1 + 0.5 * 2) / 0.75
    assert rows["b"]["engagement_minutes_per_week"] == pytest.approx((0.25 + 1.0) / 0.75)


def test_difficulty_is_smoothed_error_logit() -> None:
    t = events_table(
        ["a"] * 4 + ["b"],
        [0.1, 0.2, 0.3, 0.4, 0.5],
        ["i1", "i1", "i1", "i2", "i2"],
        [1.0, 1.0, 0.0, 1.0, None],
    )
    items = item_stats(t, VelocityParams(difficulty_prior_events=2.0))
    pbar = 3 / 4
    # i1: 2 successes, 1 fail; i2: 1 success
    assert items.difficulty[0] == pytest.approx(math.log((1 + 2 * (1 - pbar)) / (2 + 2 * pbar)))
    assert items.difficulty[1] == pytest.approx(math.log((0 + 2 * (1 - pbar)) / (1 + 2 * pbar)))
    assert items.default_difficulty == pytest.approx(math.log((1 - pbar) / pbar))
    assert items.n_graded.tolist() == [3, 1]


def test_kalman_step_by_hand() -> None:
    # prior variance 1, drift 0.1 logit^2 per week; second event one week later
    t = events_table(["a"] * 2, [0.0, 7.0], ["i1", "i2"], [1.0, 0.0])
    p = _params(ability_step="kalman", prior_var_logit2=1.0, drift_var_logit2_per_week=0.1)
    feats = compute_features(t, p, _zero_difficulty_stats(t)).to_pylist()[0]
    var = 1 / (1 / 1.0 + 0.25)
    th = var * (1 - 0.5)
    var = var + 0.1
    q = _sig(th) * (1 - _sig(th))
    var = 1 / (1 / var + q)
    th = th + var * (0 - _sig(th))
    assert feats["ability_logit"] == pytest.approx(th, abs=1e-12)
    # weekly gain EMA: baseline week 0, one gain in week 1 -> velocity = th - th_week0
    assert feats["velocity_logit_per_week"] == pytest.approx(th - 0.8 * 0.5, abs=1e-12)


def _predictions(table, params: FeatureParams):  # type: ignore[no-untyped-def]
    from cohortlens.features._prep import prepare
    from cohortlens.features.velocity import compute_velocity

    stats = _zero_difficulty_stats(table)
    return compute_velocity(prepare(table, stats.items), stats.items, params.velocity)


def test_current_knowledge_predicts_repeats_by_hand() -> None:
    # i1 at 0 s (correct), i2 at 50 s (correct), i1 at 100 s (correct), i1 two days later (wrong)
    s = 1 / 86_400
    t = events_table(
        ["a"] * 4, [0.0, 50 * s, 100 * s, 2.0], ["i1", "i2", "i1", "i1"], [1.0, 1.0, 1.0, 0.0]
    )
    vel = _predictions(t, _params())
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
    np.testing.assert_allclose(vel.p_pred, [p1, p2, p3, p4], rtol=0, atol=1e-12)
    assert vel.ability_logit[0] == pytest.approx(th2, abs=1e-12)  # repeats never move theta
    # without current knowledge a repeat is predicted from the prior knowledge of its time
    prior = _predictions(t, _params(current_knowledge=False))
    np.testing.assert_allclose(prior.p_pred, [p1, p2, _sig(th2), _sig(th2)], atol=1e-12)


def test_current_knowledge_wrong_step_floor_and_ungraded_repeat() -> None:
    # i1 wrong at day 0, ungraded view at day 1, graded again at day 3; guess floor 0.25
    t = events_table(["a"] * 3, [0.0, 1.0, 3.0], ["i1"] * 3, [0.0, None, 1.0])
    g = 0.25
    vel = _predictions(t, _params(guess_floor=g))
    p1 = g + (1 - g) * 0.5
    m = 0.0 + 0.3 * (0.0 - p1)  # delta = 0.3 after a wrong answer
    p3 = g + (1 - g) * _sig(m + 80.0 / (3 * 86_400))  # seconds since the last *graded* attempt
    assert vel.p_pred[0] == pytest.approx(p1, abs=1e-12)
    assert math.isnan(vel.p_pred[1])
    assert vel.p_pred[2] == pytest.approx(p3, abs=1e-12)


def test_current_knowledge_settings_leave_features_unchanged(synth) -> None:  # type: ignore[no-untyped-def]
    base = compute_features(synth.events)
    other = FeatureParams(
        velocity=VelocityParams(
            current_knowledge=False, current_step_correct=1.0, current_time_shift_s=0.0
        )
    )
    assert compute_features(synth.events, other).equals(base)
