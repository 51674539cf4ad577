"""The second world's generative rules, checked against formulas re-derived from its tables."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest
from tests.simulate.second_world import DAY_S, World, WorldParams, simulate_world

from cohortlens.events.schema import EVENT_SCHEMA


@pytest.fixture(scope="module")
def world() -> World:
    return simulate_world(WorldParams(n_learners=1500, seed=5))


def test_same_seed_same_world_and_schema(world: World) -> None:
    again = simulate_world(WorldParams(n_learners=1500, seed=5))
    assert world.events.schema == EVENT_SCHEMA
    assert world.events.equals(again.events)
    ts = world.events["ts"].cast("int64").to_numpy()
    assert (np.diff(ts) >= 0).all()
    assert len(world.event_truth) == world.events.num_rows


def test_graded_outcomes_follow_the_true_probabilities(world: World) -> None:
    et = world.event_truth
    y = world.events["outcome"].to_numpy(zero_copy_only=False)
    for kind in ("first_attempt", "review"):
        sel = (et["kind"] == kind).to_numpy()
        p = et["p_correct"].to_numpy()[sel]
        z = (np.nansum(y[sel]) - p.sum()) / np.sqrt((p * (1 - p)).sum())
        assert abs(z) < 4, (kind, z)
    views = (et["kind"] == "view").to_numpy()
    assert np.isnan(y[views]).all()


def test_review_recall_is_a_power_law_with_half_life_h(world: World) -> None:
    """First reviews of items answered correctly before: recall at gap ~ h is halfway."""
    et = world.event_truth.copy()
    et["y"] = world.events["outcome"].to_numpy(zero_copy_only=False)
    items = world.items.set_index("item_id")
    et["c"] = items["c"].reindex(world.events["item_id"].to_pylist()).to_numpy()
    h = world.truth.set_index("learner_id")["half_life_days"]
    et["h"] = h.loc[et["learner_id"]].to_numpy()
    rev = et[(et["kind"] == "review")].copy()
    # p_correct of a known item is c + (1 - c) R; recover R and compare with the formula
    d = WorldParams().forgetting_exponent
    r_formula = (1 + (2 ** (1 / d) - 1) * rev["gap_days"] / rev["h"]) ** (-d)
    r_implied = (rev["p_correct"] - rev["c"]) / (1 - rev["c"])
    close = np.isclose(r_implied, r_formula, rtol=1e-9)
    # stability grows with earlier correct answers, so only some reviews are at h_eff = h
    assert close.mean() > 0.3
    at_h = rev[close & (rev["gap_days"] / rev["h"]).between(0.8, 1.25)]
    assert len(at_h) > 200
    expected = (at_h["c"] + (1 - at_h["c"]) * 0.5 * 1.0).mean()
    observed = at_h["y"].mean()
    se = np.sqrt(expected * (1 - expected) / len(at_h))
    assert abs(observed - expected) < 0.06 + 4 * se


def test_linear_growth_trend_is_the_rate_and_logistic_growth_plateaus() -> None:
    lin = simulate_world(WorldParams(n_learners=400, seed=2, growth="linear")).truth
    ok = lin["trend_logits_per_week"].notna()
    np.testing.assert_allclose(lin.loc[ok, "trend_logits_per_week"], lin.loc[ok, "rate"], atol=1e-9)
    w = simulate_world(WorldParams(n_learners=400, seed=2))
    tr = w.truth.set_index("learner_id")
    et = w.event_truth
    row = tr.loc[et["learner_id"]]
    start_us = int(WorldParams().start.timestamp()) * 1_000_000
    tau = np.maximum((et["ts_us"].to_numpy() - start_us) / 1e6 - row["enrol_s"].to_numpy(), 0)
    tau /= 7 * DAY_S
    r, m, cap = row["gain_rate"].to_numpy(), row["midpoint"].to_numpy(), row["capacity"].to_numpy()
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    gain = cap * (sig(r * (tau - m)) - sig(-r * m))
    np.testing.assert_allclose(et["theta"] - row["theta0"].to_numpy(), gain, atol=1e-4)
    # the gain never exceeds the capacity: the curve plateaus
    assert ((et["theta"] - row["theta0"].to_numpy()) <= cap + 1e-9).all()


def test_practice_has_gaps_of_weeks_and_staggered_enrolment(world: World) -> None:
    ev = world.events
    first = pc.min(ev["ts"]).as_py()
    t = world.truth
    enrol_days = (t["enrol_at"] - first).dt.total_seconds() / DAY_S
    assert enrol_days.max() > 100  # enrolment is spread over 20 weeks
    ts = ev["ts"].cast("int64").to_numpy() / 1e6 / DAY_S
    lid = np.asarray(ev["learner_id"].to_pylist())
    order = np.lexsort((ts, lid))
    same = lid[order][1:] == lid[order][:-1]
    gaps = np.diff(ts[order])[same]
    assert (gaps > 14).sum() > 500  # many pauses of two weeks or more
