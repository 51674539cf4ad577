"""CohortModel: hand-computed toy fits, estimator contract, artifact, nulls, fast path."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.cluster import KMeans
from sklearn.exceptions import NotFittedError
from tests.cohorts.conftest import blobs

from cohortlens.cohorts import (
    INSUFFICIENT_COHORT,
    SCHEMA_VERSION,
    CohortModel,
    FeatureSpec,
    SelectionParams,
    choose_n_cohorts,
    nearest_centroid,
)
from cohortlens.errors import InputError

X_ONLY = (FeatureSpec("x"),)
AB = (FeatureSpec("a"), FeatureSpec("b"))


def toy() -> dict[str, np.ndarray]:
    return {"learner_id": np.array(["p", "q", "r", "s"]), "x": np.array([0.0, 1.0, 10.0, 11.0])}


def toy_model(**kw: Any) -> CohortModel:
    return CohortModel(2, features=X_ONLY, profile_features=X_ONLY, clip_quantile=0.0, **kw)


def test_four_point_toy_by_hand() -> None:
    m = toy_model().fit(toy())
    # median 5.5, IQR = 10.25 - 0.75 = 9.5; clusters {0, 1} and {10, 11}
    assert m.scaler_.center.tolist() == [5.5]
    assert m.scaler_.scale.tolist() == [9.5]
    # equal sizes: the cohort with the smaller centroid gets id 1
    assert m.labels_.tolist() == [1, 1, 2, 2]
    assert m.cohort_ids_.tolist() == [1, 2]
    assert m.centroids_original() == {1: {"x": pytest.approx(0.5)}, 2: {"x": pytest.approx(10.5)}}
    assert m.inertia_ == pytest.approx(4 * (0.5 / 9.5) ** 2)
    assert m.n_cohorts_ == 2
    assert m.next_cohort_id_ == 3
    assert m.archetypes_[1].size == 2
    assert m.archetypes_[1].profile["x"].centre == pytest.approx(0.5)
    assert m.predict({"x": np.array([-3.0, 5.4, 5.6, 99.0])}).tolist() == [1, 1, 2, 2]


def test_estimator_contract() -> None:
    m = toy_model(random_state=3)
    assert m.fit(toy()) is m
    c = clone(m)
    assert c.get_params() == m.get_params()
    assert not hasattr(c, "cluster_centers_")
    with pytest.raises(NotFittedError, match="not fitted"):
        c.predict(toy())
    assert m.fit_predict(toy()).tolist() == m.labels_.tolist()


def test_every_invalid_parameter_is_reported_at_once() -> None:
    bad = CohortModel(0, n_init=0, clip_quantile=0.3, max_null_share=1.5, match_ratio=0)
    with pytest.raises(InputError) as err:
        bad.fit(toy())
    msg = str(err.value)
    for part in ("n_cohorts == 0", "n_init == 0", "clip_quantile == 0.3", "max_null_share == 1.5"):
        assert part in msg
    assert "match_ratio == 0" in msg


def test_selection_params_are_validated() -> None:
    with pytest.raises(InputError, match=r"k_min == 1.*k_max == 0"):
        SelectionParams(k_min=1, k_max=0)


def test_too_few_complete_learners_is_an_input_error() -> None:
    with pytest.raises(InputError, match="at least 5 are needed for 4 cohorts"):
        CohortModel(4, features=X_ONLY, profile_features=X_ONLY).fit(toy())


def test_nearest_centroid_over_observed_entries_by_hand() -> None:
    z = np.array([[0.0, np.nan], [0.9, 1.2], [np.nan, 0.9]])
    c = np.array([[0.0, 0.0], [1.0, 1.0]])
    idx, d2 = nearest_centroid(z, c)
    assert idx.tolist() == [0, 1, 1]
    assert d2 == pytest.approx([0.0, 0.01 + 0.04, 0.01])


def test_partial_learners_and_insufficient_learners() -> None:
    data = blobs(n_per=100, centres=((0, 0), (6, 0), (12, 6)))  # `a` alone separates them
    n = len(data["a"])
    data["b"] = data["b"].copy()
    data["b"][:5] = np.nan  # five learners of the first blob without b
    data["n_events"] = np.full(n, 10.0)
    data["n_events"][150] = 2.0  # below min_events
    m = CohortModel(3, features=AB, profile_features=AB, random_state=0).fit(data)
    first = m.labels_[10]
    assert m.labels_[:5].tolist() == [first] * 5  # assigned on `a` alone, to their own blob
    assert m.labels_[150] == INSUFFICIENT_COHORT
    assert m.n_insufficient_ == 1
    card = m.archetypes_[int(first)]
    assert card.partial_share == pytest.approx(5 / (card.size))
    # predict applies the same rules
    assert m.predict(data).tolist() == m.labels_.tolist()
    only_a = {"a": np.array([6.0]), "b": np.array([np.nan]), "n_events": np.array([10.0])}
    assert m.predict(only_a)[0] == m.labels_[150 + 10]  # the (6, 0) blob
    # values for under half the features: insufficient
    none = {"a": np.array([np.nan]), "b": np.array([np.nan]), "n_events": np.array([10.0])}
    assert m.predict(none)[0] == INSUFFICIENT_COHORT


def test_kpod_lowers_the_observed_entry_objective() -> None:
    rng = np.random.default_rng(1)
    data = blobs(n_per=150, centres=((0, 0), (2, 0), (0, 2)), seed=1)
    b = data["b"].copy()
    b[rng.random(len(b)) < 0.3] = np.nan
    data["b"] = b
    m = CohortModel(3, features=AB, profile_features=AB, random_state=0).fit(data)
    z = m.scaler_.transform(np.column_stack([data["a"], data["b"]]))
    complete = np.isfinite(z).all(axis=1)
    start = KMeans(3, n_init=10, random_state=0).fit(z[complete]).cluster_centers_
    _, d2_start = nearest_centroid(z, start)
    _, d2_final = nearest_centroid(z, m.cluster_centers_)
    assert d2_final.sum() <= d2_start.sum() + 1e-9
    assert m.inertia_ == pytest.approx(d2_final.sum())


def test_unusable_features_are_dropped_with_a_reason() -> None:
    data = blobs(n_per=50)
    n = len(data["a"])
    data["mostly_null"] = np.where(np.arange(n) < 10, 1.0, np.nan)
    data["flat"] = np.ones(n)
    feats = (*AB, FeatureSpec("mostly_null"), FeatureSpec("flat"))
    m = CohortModel(3, features=feats, profile_features=AB).fit(data)
    assert m.feature_names_in_.tolist() == ["a", "b"]
    assert m.dropped_features_ == {"mostly_null": "null for 93% of learners", "flat": "constant"}
    with pytest.raises(InputError, match="no usable clustering feature"):
        CohortModel(2, features=(FeatureSpec("flat"),)).fit(data)


def test_seed_reproducibility_and_row_order_invariance() -> None:
    data = blobs(n_per=120, seed=2)
    a = CohortModel(3, features=AB, profile_features=AB, random_state=4).fit(data)
    b = CohortModel(3, features=AB, profile_features=AB, random_state=4).fit(data)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    perm = np.random.default_rng(0).permutation(len(data["a"]))
    shuffled = {k: v[perm] for k, v in data.items()}
    c = CohortModel(3, features=AB, profile_features=AB, random_state=9).fit(shuffled)
    # ids are ordered by size and centroid, not by k-means' arbitrary label order
    np.testing.assert_array_equal(c.labels_, a.labels_[perm])
    np.testing.assert_allclose(c.cluster_centers_, a.cluster_centers_, atol=1e-9)


def test_artifact_round_trip(fitted: CohortModel, sim: Any) -> None:
    text = json.dumps(fitted.to_dict(), allow_nan=False)
    back = CohortModel.from_dict(json.loads(text))
    assert back.to_dict() == json.loads(text)
    assert back.to_dict()["schema_version"] == SCHEMA_VERSION
    sample = sim.features.slice(0, 2000)
    np.testing.assert_array_equal(back.predict(sample), fitted.predict(sample))
    np.testing.assert_allclose(back.transform(sample), fitted.transform(sample))
    assert back.names_ == fitted.names_
    assert back.feature_run_ == "sim-5"


def test_artifact_version_and_kind_are_checked(fitted: CohortModel) -> None:
    d = fitted.to_dict()
    with pytest.raises(InputError, match="schema_version 99 is newer"):
        CohortModel.from_dict({**d, "schema_version": 99})
    with pytest.raises(InputError, match="not a cohortlens cohort model"):
        CohortModel.from_dict({**d, "kind": "something-else"})


def test_transform_is_consistent_with_predict(fitted: CohortModel, sim: Any) -> None:
    sample = sim.features.slice(0, 3000)
    dist = fitted.transform(sample)
    labels = fitted.predict(sample)
    ok = labels != INSUFFICIENT_COHORT
    assert dist.shape == (3000, fitted.n_cohorts_)
    assert np.isnan(dist[~ok]).all()
    np.testing.assert_array_equal(fitted.cohort_ids_[dist[ok].argmin(axis=1)], labels[ok])


_VALUE = st.one_of(st.none(), st.just(float("nan")), st.floats(-5, 60, allow_nan=False))


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_predict_one_equals_predict(fitted: CohortModel, data: st.DataObject) -> None:
    cols = [s.column for s in fitted.features_]
    row: dict[str, float | None] = {c: data.draw(_VALUE) for c in cols}
    row["n_events"] = data.draw(st.sampled_from([None, 1.0, 3.0, 50.0]))
    table = {
        c: np.array([np.nan if row.get(c) is None else row[c]], dtype=float)
        for c in [*cols, "n_events"]
    }
    # a null count is not checked by either path
    assert fitted.predict_one(row) == int(fitted.predict(table)[0])


def test_predict_one_on_real_rows(fitted: CohortModel, sim: Any) -> None:
    rows = sim.features.slice(0, 300).to_pylist()
    assert [fitted.predict_one(r) for r in rows] == fitted.predict(
        sim.features.slice(0, 300)
    ).tolist()


def test_outcomes_are_joined_on_learner_id(sim: Any) -> None:
    feats = sim.features.slice(0, 3000)
    outcomes = sim.outcomes.take(pa.array(np.random.default_rng(0).permutation(2000)))
    m = CohortModel(
        3, features=(FeatureSpec("engagement_events_per_week", "log"), FeatureSpec("active_weeks"))
    ).fit(feats, outcomes=outcomes)
    known = dict(
        zip(outcomes["learner_id"].to_pylist(), outcomes["churned"].to_pylist(), strict=True)
    )
    ids = feats["learner_id"].to_pylist()
    for cid, card in m.archetypes_.items():
        ys = [known[i] for i, lab in zip(ids, m.labels_, strict=True) if lab == cid and i in known]
        est = card.outcomes["churned"]
        assert est.n == len(ys)
        if ys:
            assert est.value == pytest.approx(sum(ys) / len(ys))
    assoc = {o.outcome: o for o in m.quality_.outcomes}
    assert assoc["churned"].n == sum(1 for i in ids if i in known)
    with pytest.raises(InputError, match="learner_id"):
        m.fit(np.random.default_rng(1).normal(size=(10, 2)), outcomes=outcomes)


def test_choose_n_cohorts_finds_three_blobs() -> None:
    data = blobs(n_per=300, seed=3)
    z = np.column_stack([data["a"], data["b"]])
    params = SelectionParams(
        k_min=2, k_max=6, sample_size=600, silhouette_sample_size=400, n_bootstrap=2
    )
    sel = choose_n_cohorts(z, params, seed=0)
    assert sel.chosen_k == 3
    assert [c.k for c in sel.candidates] == [2, 3, 4, 5, 6]
    assert sum(c.chosen for c in sel.candidates) == 1
    best = max(sel.candidates, key=lambda c: c.silhouette)
    assert best.k == 3
    assert "k=3" in sel.reason


def test_model_with_automatic_k_on_blobs() -> None:
    data = blobs(n_per=200, centres=((0, 0), (6, 0), (0, 6), (6, 6)), seed=4)
    sel = SelectionParams(
        k_min=2, k_max=6, sample_size=800, silhouette_sample_size=400, n_bootstrap=2
    )
    m = CohortModel(features=AB, profile_features=AB, selection=sel).fit(data)
    assert m.n_cohorts_ == 4
    assert m.selection_ is not None
    assert m.quality_.stability_ari > 0.99
    assert m.quality_.silhouette > 0.7
    assert not math.isnan(m.quality_.davies_bouldin)


def test_array_input_follows_the_feature_order() -> None:
    data = blobs(n_per=80, seed=6)
    x = np.column_stack([data["a"], data["b"]])
    m = CohortModel(3, features=AB).fit(x)
    assert m.profile_features_ == AB  # only the clustered columns are known
    np.testing.assert_array_equal(m.predict(x), m.labels_)
    assert set(m.reference_bins_) == {"a", "b"}
    assert m.reference_bins_["a"]["shares"][-1] == 0.0  # no nulls
    ref = CohortModel(3, features=AB, profile_features=AB).fit(data)
    np.testing.assert_array_equal(m.labels_, ref.labels_)
    with pytest.raises(InputError, match="feature array has 3 columns"):
        m.predict(np.ones((2, 3)))
