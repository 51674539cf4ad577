"""Stable ids (Hungarian matching) and drift statistics (PSI)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from cohortlens.cohorts.matching import (
    CohortMatch,
    DriftReport,
    FeatureDrift,
    bin_shares,
    changed_share,
    match_centroids,
    psi,
    psi_status,
    reference_bins,
    share_psi,
)

PREV = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])


def test_permuted_centroids_keep_their_ids() -> None:
    new = PREV[[2, 0, 1]] + 0.1
    ids, matches, retired, next_id = match_centroids(new, PREV, [7, 3, 9], next_id=10)
    assert ids == [9, 7, 3]
    assert retired == []
    assert next_id == 10
    assert all(m.carried for m in matches)
    assert matches[0].distance == pytest.approx(math.sqrt(0.02))
    # threshold = 0.5 x the nearest other previous centroid (4 away) = 2
    assert matches[0].threshold == pytest.approx(2.0)


def test_a_far_centroid_gets_a_fresh_id_and_the_old_one_retires() -> None:
    new = np.array([[0.1, 0.0], [4.0, 0.1], [10.0, 10.0]])
    ids, matches, retired, next_id = match_centroids(new, PREV, [1, 2, 3], next_id=4)
    assert ids == [1, 2, 4]
    assert retired == [3]
    assert next_id == 5
    assert matches[2] == CohortMatch(4, 3, pytest.approx(math.sqrt(100 + 36)), 2.0, False)


def test_more_and_fewer_cohorts_than_before() -> None:
    more = np.vstack([PREV, [[8.0, 8.0]]])
    ids, _, retired, nxt = match_centroids(more, PREV, [1, 2, 3], next_id=4)
    assert (ids, retired, nxt) == ([1, 2, 3, 4], [], 5)
    fewer = PREV[:2]
    ids, _, retired, nxt = match_centroids(fewer, PREV, [1, 2, 3], next_id=4)
    assert (ids, retired, nxt) == ([1, 2], [3], 4)
    ids, matches, retired, nxt = match_centroids(PREV, np.zeros((0, 2)), [], next_id=1)
    assert (ids, retired, nxt) == ([1, 2, 3], [], 4)
    assert not any(m.carried for m in matches)


def test_match_ratio_controls_carrying() -> None:
    new = PREV + np.array([1.5, 0.0])
    strict, *_ = match_centroids(new, PREV, [1, 2, 3], 4, match_ratio=0.25)
    loose, *_ = match_centroids(new, PREV, [1, 2, 3], 4, match_ratio=0.5)
    assert strict == [4, 5, 6]
    assert loose == [1, 2, 3]


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 7), st.integers(0, 10_000))
def test_matching_is_the_optimal_assignment_and_permutation_invariant(k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    prev = rng.normal(size=(k, 3)) * 5
    new = prev[rng.permutation(k)] + rng.normal(scale=0.05, size=(k, 3))
    prev_ids = list(range(10, 10 + k))
    ids, *_ = match_centroids(new, prev, prev_ids, next_id=100, match_ratio=10.0)
    cost = ((new[:, None] - prev[None]) ** 2).sum(2)
    rows, cols = linear_sum_assignment(cost)
    assert ids == [prev_ids[c] for _, c in sorted(zip(rows, cols, strict=True))]
    perm = rng.permutation(k)
    ids_perm, *_ = match_centroids(new[perm], prev, prev_ids, next_id=100, match_ratio=10.0)
    assert ids_perm == [ids[i] for i in perm]


def test_psi_by_hand() -> None:
    # (0.2-0.1) ln 2 + (0.1-0.2) ln 0.5 + 0 = 0.2 ln 2
    assert psi(np.array([0.2, 0.1, 0.7]), np.array([0.1, 0.2, 0.7])) == pytest.approx(
        0.2 * math.log(2)
    )
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    # the floor keeps an empty bin finite: (1e-4 - 0.5) ln(1e-4 / 0.5) + (1 - 0.5) ln 2
    value = psi(np.array([0.0, 1.0]), np.array([0.5, 0.5]))
    assert value == pytest.approx((1e-4 - 0.5) * math.log(1e-4 / 0.5) + 0.5 * math.log(2))


def test_psi_status_thresholds() -> None:
    assert [psi_status(v) for v in (0.05, 0.1, 0.25, 0.3, math.nan)] == [
        "stable",
        "watch",
        "watch",
        "shift",
        "unknown",
    ]


def test_bins_and_shares() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    shares = bin_shares(x, [1.5, 3.5])
    # (-inf,1.5]: 1; (1.5,3.5]: 2; (3.5,inf): 1; null: 1
    assert shares.tolist() == [0.2, 0.4, 0.2, 0.2]
    ref = reference_bins(np.arange(100.0))
    assert len(ref["edges"]) == 9
    assert ref["shares"][:10] == pytest.approx([0.1] * 10)
    assert ref["shares"][10] == 0.0
    # the same data against its own reference: PSI 0
    assert psi(bin_shares(np.arange(100.0), ref["edges"]), np.array(ref["shares"])) == 0.0
    shifted = bin_shares(np.arange(100.0) + 50, ref["edges"])
    assert psi_status(psi(shifted, np.array(ref["shares"]))) == "shift"


def test_share_psi_and_changed_share() -> None:
    assert share_psi({1: 0.5, 2: 0.5}, {1: 0.5, 2: 0.5}) == 0.0
    assert share_psi({1: 1.0}, {2: 1.0}) > 1.0
    frac, trans = changed_share(np.array([1, 1, 2, 2]), np.array([1, 2, 2, 3]))
    assert frac == 0.5
    assert trans == {"1->2": 1, "2->3": 1}
    assert changed_share(np.array([1]), np.array([1])) == (0.0, {})
    assert math.isnan(changed_share(np.array([], dtype=int), np.array([], dtype=int))[0])


def test_drift_report_round_trip() -> None:
    rep = DriftReport(
        previous_run="run-1",
        matches=(
            CohortMatch(1, 1, 0.1, 2.0, True),
            CohortMatch(4, None, math.nan, math.inf, False),
        ),
        retired_ids=(2,),
        features=(FeatureDrift("a", 0.02, "stable", 0.0, 0.1),),
        cohort_share_psi=0.05,
        previous_shares={0: 0.1, 1: 0.9},
        current_shares={0: 0.2, 1: 0.8},
        changed_share=0.1,
        n_compared=10,
        changed_basis="assignments",
        mean_centroid_shift=0.1,
        transitions={"1->4": 1},
    )
    back = DriftReport.from_dict(rep.to_dict())
    assert back.matches[0] == rep.matches[0]
    assert back.matches[1].previous_id is None
    assert math.isnan(back.matches[1].distance)
    assert back.previous_shares == rep.previous_shares
    assert back.features == rep.features
    assert back.transitions == rep.transitions
