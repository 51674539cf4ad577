"""Pure parts of the service: routing thresholds, snapshots, stats round trip, experiments file."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.serve.conftest import Built

from cohortlens.errors import InputError
from cohortlens.experiments.assignment import bucket_of
from cohortlens.features import compute_features, compute_global_stats
from cohortlens.features._stats_io import attach_stats, stats_from_json, stats_of, stats_to_json
from cohortlens.serve.experiments import load_experiments
from cohortlens.serve.routing import Role, candidate_threshold, route


def test_threshold_exact_values() -> None:
    assert candidate_threshold(0.0) == 0
    assert candidate_threshold(0.01) == 100
    assert candidate_threshold(0.1) == 1000
    assert candidate_threshold(1.0) == 10_000
    assert candidate_threshold(0.00005) == 0  # round half to even: 0.5 -> 0
    with pytest.raises(ValueError, match="must be in"):
        candidate_threshold(1.5)


@given(
    st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6),
    st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=50),
)
def test_candidate_sets_are_nested_as_weight_rises(weights: list[float], ids: list[str]) -> None:
    salt = "release-7"
    sets = []
    for w in sorted(weights):
        t = candidate_threshold(w)
        sets.append({i for i in ids if route(bucket_of(i, salt), t, True) is Role.CANDIDATE})
    for small, big in itertools.pairwise(sets):
        assert small <= big


def test_no_candidate_means_stable() -> None:
    assert route(0, 10_000, has_candidate=False) is Role.STABLE


def test_shares_within_half_a_point_over_100k_ids() -> None:
    from cohortlens.experiments.assignment import buckets

    ids = pa.array([f"learner-{i}" for i in range(100_000)])
    b = buckets(ids, "salt-a")
    for w in (0.01, 0.1, 0.5, 1.0):
        share = float(np.mean(b < candidate_threshold(w)))
        assert abs(share - w) <= 0.005
    other = buckets(ids, "salt-b")
    moved = np.mean((b < 1000) != (other < 1000))
    assert moved > 0.15  # a new salt draws a new split (expected 2 * 0.1 * 0.9 = 0.18)


def test_global_stats_json_round_trip(built: Built) -> None:
    import pyarrow.parquet as pq

    events = pq.read_table(built.events)
    stats = compute_global_stats(events)
    back = stats_from_json(stats_to_json(stats))
    assert back.items.item_ids.equals(stats.items.item_ids)
    np.testing.assert_array_equal(back.items.difficulty, stats.items.difficulty)
    assert back.retention == stats.retention
    feats = compute_features(events, stats=stats)
    again = compute_features(events, stats=back)
    assert feats.equals(again)
    carried = stats_of(attach_stats(feats, stats))
    assert carried is not None
    np.testing.assert_array_equal(carried.items.n_graded, stats.items.n_graded)
    assert stats_of(feats.replace_schema_metadata({})) is None


def test_stored_feature_runs_carry_their_stats(built: Built) -> None:
    assert stats_of(built.features) is not None


def test_experiments_file_errors_name_the_field(tmp_path: Path) -> None:
    good = tmp_path / "e.yaml"
    good.write_text("experiments:\n  - name: a\n    variants: {x: 1, y: 3}\n")
    designs = load_experiments(good)
    assert [v.weight for v in designs["a"].variants] == [1.0, 3.0]
    cases = {
        "experiments:\n  - name: a\n    variants: {x: 1}\n": "experiments.0.variants",
        "experiments:\n  - name: a\n    variants: {x: 1, y: 0}\n": "experiments.0.variants",
        "experiments:\n  - name: a\n    variants: {x: 1, y: 1}\n    traffic: 2\n": (
            "experiments.0.traffic"
        ),
        "experiments:\n  - {name: a, variants: {x: 1, y: 1}}\n  - {name: a, variants: {x: 1, y: 1}}\n": (
            "experiments.1.name"
        ),
        "experiments: [": "not valid YAML",
    }
    for text, where in cases.items():
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(InputError, match=where.replace(".", r"\.")):
            load_experiments(bad)
    assert load_experiments(None) == {}


def test_batch_assignment_splits_learners_between_the_models(built: Built, tmp_path: Path) -> None:
    """At weight 0.5 each learner is answered by the model its bucket routes it to, with that
    model's stored cohort, in input order."""
    from tests.serve.conftest import fresh_copy

    from cohortlens.serve.service import CohortService
    from cohortlens.serve.settings import ServeSettings
    from cohortlens.store import open_store

    db = fresh_copy(built, tmp_path)
    with open_store(str(db)) as store:
        salt = store.start_release(built.candidate_id, actor="test").salt
        store.set_candidate_weight(0.5, actor="test")
        svc = CohortService(ServeSettings(db=str(db)), store)
        svc.refresh(force=True)
        feats = built.features.take(np.random.default_rng(0).permutation(built.features.num_rows))
        table, routed = svc.assign_features(feats)
    ids = [str(x) for x in feats.column("learner_id").to_pylist()]
    stable = dict(
        zip(*built.stable.select(["learner_id", "cohort_id"]).to_pydict().values(), strict=True)
    )
    cand = dict(
        zip(*built.candidate.select(["learner_id", "cohort_id"]).to_pydict().values(), strict=True)
    )
    on_cand = [bucket_of(lid, salt) < 5_000 for lid in ids]
    assert table.column("learner_id").to_pylist() == ids
    assert table.column("model_role").to_pylist() == [
        "candidate" if c else "stable" for c in on_cand
    ]
    assert table.column("cohort_id").to_pylist() == [
        cand[lid] if c else stable[lid] for lid, c in zip(ids, on_cand, strict=True)
    ]
    assert routed == {"stable": on_cand.count(False), "candidate": on_cand.count(True)}
    assert 0 < routed["candidate"] < len(ids)
