"""Domain affinity: own shares, Miller-Madow entropy, effective domains, duration weights,
archetypes."""

from __future__ import annotations

import math

import pytest
from tests.features.featsynth import events_table

from cohortlens.features import AffinityParams, FeatureParams, compute_features


def _h(*p: float) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


def test_shares_and_miller_madow_entropy_by_hand() -> None:
    # a: 3 events in d0 (one domain: no correction); b: 2 in d0, 1 in d1 and 5 in d2
    t = events_table(
        ["a"] * 3 + ["b"] * 8,
        [0.1 * i for i in range(11)],
        ["i"] * 11,
        [None] * 11,
        domain=["d0"] * 3 + ["d0", "d0", "d1", "d2", "d2", "d2", "d2", "d2"],
    )
    rows = {r["learner_id"]: r for r in compute_features(t).to_pylist()}
    a = rows["a"]
    assert a["affinity_effective_domains"] == 1.0
    assert a["affinity_top_share"] == 1.0
    assert a["affinity_top_domain"] == "d0"
    assert a["affinity_breadth"] == 1
    assert a["affinity_archetype"] == "specialist"
    b = rows["b"]
    h = _h(0.25, 0.125, 0.625) + (3 - 1) / (2 * 8)  # Miller-Madow: (m - 1) / (2 n)
    assert h < math.log(3)  # below the cap
    assert b["affinity_effective_domains"] == pytest.approx(math.exp(h))
    assert b["affinity_top_domain"] == "d2"
    assert b["affinity_top_share"] == 0.625
    assert b["affinity_archetype"] == "focused"  # 1.75 <= 2.79 <= 3.5 effective domains


def test_miller_madow_is_capped_at_the_domains_used() -> None:
    t = events_table(["a", "a"], [0.1, 0.2], ["i", "j"], [None, None], domain=["d0", "d1"])
    r = compute_features(t).to_pylist()[0]
    # ln 2 + 1/4 would exceed ln 2: two domains used are at most two effective domains
    assert r["affinity_effective_domains"] == pytest.approx(2.0)
    off = FeatureParams(affinity=AffinityParams(miller_madow=False))
    assert compute_features(t, off).to_pylist()[0]["affinity_effective_domains"] == pytest.approx(
        2.0
    )


def test_duration_weights_with_imputed_missing_and_cap() -> None:
    t = events_table(
        ["a"] * 5,
        [0.1, 0.2, 0.3, 0.4, 0.5],
        ["i"] * 5,
        [None] * 5,
        domain=["d0", "d0", "d1", "d1", "d2"],
        duration=[10.0, 10.0, 80.0, None, 5000.0],
    )
    params = FeatureParams(affinity=AffinityParams(miller_madow=False, duration_cap_s=100.0))
    r = compute_features(t, params).to_pylist()[0]
    fill = (10 + 10 + 80 + 100) / 4  # mean of capped observed durations
    w = (20.0, 80.0 + fill, 100.0)
    p = [x / sum(w) for x in w]
    assert r["affinity_effective_domains"] == pytest.approx(math.exp(_h(*p)))
    assert r["affinity_top_domain"] == "d1"
    assert r["affinity_top_share"] == pytest.approx(max(p))
    assert r["affinity_breadth"] == 2  # shares (0.08, 0.52, 0.40)
    assert r["affinity_archetype"] == "focused"  # exp(H) = 2.46


def test_archetype_thresholds_in_effective_domains() -> None:
    # generalist: five domains equally (5 effective domains > 3.5);
    # specialist by share: 7 of 10 events in one domain (top share 0.7)
    doms = [f"d{i}" for i in range(5)] * 4 + ["d0"] * 7 + ["d1", "d2", "d3"]
    t = events_table(
        ["g"] * 20 + ["s"] * 10,
        [0.01 * i for i in range(30)],
        ["i"] * 30,
        [None] * 30,
        domain=doms,
    )
    off = FeatureParams(affinity=AffinityParams(miller_madow=False))
    rows = {r["learner_id"]: r for r in compute_features(t, off).to_pylist()}
    assert rows["g"]["affinity_effective_domains"] == pytest.approx(5.0)
    assert rows["g"]["affinity_archetype"] == "generalist"
    assert rows["s"]["affinity_top_share"] == pytest.approx(0.7)
    assert rows["s"]["affinity_archetype"] == "specialist"


def test_affinity_does_not_depend_on_the_platforms_domains() -> None:
    """A learner's affinity is the same whatever other learners did in other domains."""
    mine = events_table(
        ["a"] * 4, [0.1, 0.2, 0.3, 0.4], ["i"] * 4, [None] * 4, domain=["x", "y"] * 2
    )
    others = events_table(
        ["b", "c", "d"], [0.1, 0.2, 0.3], ["j"] * 3, [None] * 3, domain=["p", "q", "r"]
    )
    import pyarrow as pa

    alone = compute_features(mine).to_pylist()[0]
    joint = {
        r["learner_id"]: r for r in compute_features(pa.concat_tables([mine, others])).to_pylist()
    }
    for col in ("affinity_effective_domains", "affinity_top_share", "affinity_archetype"):
        assert joint["a"][col] == alone[col]
