"""Routing over 100,000 learner ids, with the salts the store draws per release.

Acceptance: at every step the candidate's share is within ±0.5 points of its weight; as the
weight rises nobody moves back to stable; a new release draws a new salt (and a new split).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from cohortlens.experiments.assignment import bucket_of, buckets
from cohortlens.rollout.routers import StoreRouter
from cohortlens.rollout.routing import (
    Role,
    candidate_mask,
    candidate_threshold,
    guardrail_arms,
    override_mask,
    route,
)
from cohortlens.rollout.simulation import release_salts
from cohortlens.serve import routing as serve_routing
from cohortlens.store.duckdb import DuckDBStore

N = 100_000
IDS = pa.array([f"learner-{i:06d}" for i in range(N)], pa.string())
#: Steps up to 10 % (the binomial s.d. of a share at 10 % over 100,000 ids is 0.095 points,
#: so ±0.5 points is 5 s.d.: the test does not flake whatever salt the store draws; at 50 %
#: it would be 3.2 s.d.).
LADDER = (0.01, 0.02, 0.05, 0.1, 1.0)


@pytest.fixture
def store() -> DuckDBStore:
    s = DuckDBStore(":memory:")
    s.save_model({"m": 1}, feature_run_id=None, activate=True)
    s.save_model({"m": 2}, feature_run_id=None, activate=False)
    s.save_model({"m": 3}, feature_run_id=None, activate=False)
    return s


def test_shares_track_weights_and_sets_only_grow(store: DuckDBStore) -> None:
    router = StoreRouter(store, "test")
    routing = router.start_release(2, reason="test")
    previous = np.zeros(N, dtype=bool)
    for w in LADDER:
        routing = router.set_weight(w, reason="step", expected_revision=routing.revision)
        mask = candidate_mask(IDS, routing.salt, routing.candidate_weight)
        share = mask.mean()
        assert abs(share - w) <= 0.005, (w, share)
        assert not (previous & ~mask).any(), f"learners moved back to stable at {w}"
        previous = mask
    assert previous.all()


def test_a_new_release_draws_a_new_salt_and_split(store: DuckDBStore) -> None:
    router = StoreRouter(store, "test")
    first = router.start_release(2, reason="first")
    first = router.set_weight(0.1, reason="x", expected_revision=first.revision)
    second = router.start_release(3, reason="second")
    assert second.salt != first.salt
    assert second.release_id == first.release_id + 1
    assert second.candidate_weight == 0.0
    a = candidate_mask(IDS, first.salt, 0.1)
    b = candidate_mask(IDS, second.salt, 0.1)
    # Independent splits: the overlap is about 0.1 × 0.1 of everybody, not 0.1.
    overlap = (a & b).mean()
    assert 0.007 <= overlap <= 0.013, overlap


def test_a_store_router_can_supply_the_salts(store: DuckDBStore) -> None:
    # The simulation's releases take salts derived from its seed, in order.
    expected = release_salts(7)
    router = StoreRouter(store, "test", salts=release_salts(7))
    first = router.start_release(2, reason="first")
    second = router.start_release(3, reason="second")
    assert [first.salt, second.salt] == [expected(), expected()]
    assert first.salt != second.salt
    assert release_salts(8)() != first.salt


def test_the_vectorised_hash_is_the_reference_hash() -> None:
    salt = "9f2c4e1a77b3d0c5"
    sample = [f"learner-{i:06d}" for i in range(0, N, 997)]
    got = buckets(sample, salt)
    assert [int(b) for b in got] == [bucket_of(i, salt) for i in sample]
    # A learner is on the candidate iff bucket < round(weight * 10000).
    for w in (0.0, 0.0001, 0.01, 0.333, 1.0):
        mask = candidate_mask(sample, salt, w)
        assert list(mask) == [bucket_of(i, salt) < round(w * 10_000) for i in sample]


def test_the_service_routes_with_the_one_rule() -> None:
    """One candidate-routing rule: the service's names are the rollout's functions."""
    from cohortlens.serve import snapshot

    assert serve_routing.candidate_threshold is candidate_threshold
    assert serve_routing.route is route
    assert serve_routing.Role is Role
    assert snapshot.candidate_threshold is candidate_threshold
    assert [candidate_threshold(w) for w in (0.0, 0.00005, 0.01, 0.1, 1.0)] == [
        0,
        0,
        100,
        1000,
        10_000,
    ]
    with pytest.raises(ValueError, match="must be in"):
        candidate_threshold(1.5)


def test_override_learners_get_the_candidate_whatever_the_weight() -> None:
    assert route(9999, 0, True, override=True) == Role.OVERRIDE
    assert route(5, 100, True) == Role.CANDIDATE
    assert route(500, 100, True) == Role.STABLE
    assert route(5, 100, False, override=True) == Role.STABLE  # no candidate: nobody
    ids = pa.array(["a", "b", None, "c"], pa.string())
    assert list(override_mask(ids, ["c", "a", "zz"])) == [True, False, False, True]
    assert list(override_mask(["a", "b"], [])) == [False, False]


def test_guardrail_arms_leave_override_learners_out() -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    ids = [f"l{i}" for i in range(200)]
    values = np.ones(200)
    as_of = np.full(200, np.datetime64("2030-01-01T00:10:00", "us"))
    window = {"since": t0, "until": t0 + timedelta(hours=1), "salt": "s", "weight": 0.5}
    everyone = guardrail_arms(ids, values, as_of, **window)
    without = guardrail_arms(ids, values, as_of, overrides=ids[:30], **window)
    assert everyone.candidate.n + everyone.stable.n == 200
    assert without.candidate.n + without.stable.n == 170


def test_guardrail_arms_exact_sums() -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    ids = ["a", "b", "c", "d", "e", "f"]
    salt = "s1"
    values = np.array([1.0, 0.0, 1.0, np.nan, 1.0, 0.0])
    as_of = np.array(
        [np.datetime64("2030-01-01T00:10:00", "us")] * 5
        + [np.datetime64("2029-12-31T23:00:00", "us")]
    )
    arms = guardrail_arms(
        ids, values, as_of, since=t0, until=t0 + timedelta(hours=1), salt=salt, weight=0.5
    )
    on = [bucket_of(i, salt) < 5000 for i in ids]
    keep = [True, True, True, False, True, False]  # NaN and the old outcome are out
    cand = [v for v, k, c in zip(values, keep, on, strict=True) if k and c]
    stab = [v for v, k, c in zip(values, keep, on, strict=True) if k and not c]
    assert arms.candidate.n == len(cand)
    assert arms.candidate.sum_y == sum(cand)
    assert arms.stable.n == len(stab)
    assert arms.stable.sum_y == sum(stab)
    with pytest.raises(ValueError, match="timezone-aware"):
        guardrail_arms(
            ids, values, as_of, since=datetime(2030, 1, 1), until=t0, salt=salt, weight=0.5
        )
