"""Domain affinity: smoothed shares, normalized entropy, duration weights, archetypes."""

from __future__ import annotations

import math

import pytest
from tests.features.featsynth import events_table

from cohortlens.features import AffinityParams, FeatureParams, compute_features


def _h(*p: float) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


def test_dirichlet_smoothing_and_entropy_by_hand() -> None:
    # platform: 3 events in d0, 1 in d1 -> prior direction (0.75, 0.25); A = 2 pseudo-events
    t = events_table(
        ["a", "a", "a", "b"],
        [0.1, 0.2, 0.3, 0.1],
        ["i"] * 4,
        [None] * 4,
        domain=["d0", "d0", "d0", "d1"],
    )
    rows = {r["learner_id"]: r for r in compute_features(t).to_pylist()}
    a = rows["a"]
    p = ((3 + 2 * 0.75) / 5, (0 + 2 * 0.25) / 5)  # (0.9, 0.1): not a "perfect specialist"
    assert a["affinity_top_share"] == pytest.approx(p[0])
    assert a["affinity_entropy_norm"] == pytest.approx(_h(*p) / math.log(2))
    assert a["affinity_top_domain"] == "d0"
    assert a["affinity_breadth"] == 1  # raw shares (1, 0)
    assert a["affinity_archetype"] == "specialist"
    b = rows["b"]
    q = ((0 + 1.5) / 3, (1 + 0.5) / 3)  # (0.5, 0.5)
    assert b["affinity_entropy_norm"] == pytest.approx(_h(*q) / math.log(2))
    assert b["affinity_entropy_norm"] == pytest.approx(1.0)


def test_duration_weights_with_imputed_missing_and_cap() -> None:
    t = events_table(
        ["a"] * 5,
        [0.1, 0.2, 0.3, 0.4, 0.5],
        ["i"] * 5,
        [None] * 5,
        domain=["d0", "d0", "d1", "d1", "d2"],
        duration=[10.0, 10.0, 80.0, None, 5000.0],
    )
    params = FeatureParams(affinity=AffinityParams(prior_events=0.0, duration_cap_s=100.0))
    r = compute_features(t, params).to_pylist()[0]
    fill = (10 + 10 + 80 + 100) / 4  # mean of capped observed durations
    w = (20.0, 80.0 + fill, 100.0)
    p = [x / sum(w) for x in w]
    assert r["affinity_entropy_norm"] == pytest.approx(_h(*p) / math.log(3))
    assert r["affinity_top_domain"] == "d1"
    assert r["affinity_top_share"] == pytest.approx(max(p))
    assert r["affinity_breadth"] == 2  # shares (0.08, 0.52, 0.40)
    assert r["affinity_archetype"] == "generalist"


def test_single_domain_platform_has_zero_entropy_and_no_archetype() -> None:
    t = events_table(
        ["a", "a", "b"], [0.1, 0.2, 0.3], ["i", "j", "i"], [1.0, 0.0, 1.0], domain=["only"] * 3
    )
    for r in compute_features(t).to_pylist():
        assert r["affinity_entropy_norm"] == 0.0
        assert r["affinity_top_share"] == 1.0
        assert r["affinity_top_domain"] == "only"
        assert r["affinity_archetype"] is None


def test_focused_between_thresholds() -> None:
    # shares (0.6, 0.2, 0.2) without prior: H/ln3 = 0.865 > 0.7 -> generalist;
    # (0.6, 0.4, 0): H/ln3 = 0.613 -> focused (top < 0.7, 0.3 <= H <= 0.7)
    doms = ["d0"] * 3 + ["d1"] * 2 + ["x0", "x1", "x2", "x2", "x2"]
    learners = ["a"] * 5 + ["pad"] * 5
    t = events_table(
        learners,
        [0.1 * i for i in range(10)],
        ["i"] * 10,
        [None] * 10,
        domain=[d if d.startswith("d") else {"x0": "d0", "x1": "d1", "x2": "d2"}[d] for d in doms],
    )
    params = FeatureParams(affinity=AffinityParams(prior_events=0.0))
    r = {x["learner_id"]: x for x in compute_features(t, params).to_pylist()}["a"]
    assert r["affinity_entropy_norm"] == pytest.approx(_h(0.6, 0.4) / math.log(3))
    assert r["affinity_archetype"] == "focused"
