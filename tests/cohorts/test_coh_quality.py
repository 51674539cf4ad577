"""Quality statistics against independent references (scipy, statsmodels, scikit-learn)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.stats.contingency import association
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import davies_bouldin_score, roc_auc_score, silhouette_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from statsmodels.stats.proportion import proportion_confint

from cohortlens.cohorts.quality import (
    CohortQuality,
    Estimate,
    OutcomeAssociation,
    bootstrap_stability,
    chi_square,
    cohort_auc,
    contingency,
    davies_bouldin,
    features_auc,
    mean_interval,
    outcome_association,
    sample_distances,
    silhouette_values,
    wilson_interval,
)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (37, 120), (1, 1000)])
def test_wilson_matches_statsmodels(k: int, n: int) -> None:
    est = wilson_interval(k, n)
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert est.value == k / n
    assert est.ci_lower == pytest.approx(lo, abs=1e-12)
    assert est.ci_upper == pytest.approx(hi, abs=1e-12)


def test_wilson_by_hand() -> None:
    # p = 0.5, n = 4, z = 1.95996: centre 0.5, half = z*sqrt(.25/4 + z²/64)/(1 + z²/4)
    z = stats.norm.ppf(0.975)
    half = z * math.sqrt(0.25 / 4 + z * z / 64) / (1 + z * z / 4)
    est = wilson_interval(2, 4)
    assert (est.ci_lower, est.ci_upper) == pytest.approx((0.5 - half, 0.5 + half))


def test_empty_estimates_are_nan() -> None:
    assert math.isnan(wilson_interval(0, 0).value)
    assert mean_interval(np.array([np.nan])).n == 0
    one = mean_interval(np.array([3.0]))
    assert one.value == 3.0
    assert math.isnan(one.ci_lower)


def test_mean_interval_matches_scipy() -> None:
    v = np.array([0.0, 0.0, 3.5, 12.0, 0.0, 7.25, np.nan])
    est = mean_interval(v)
    finite = v[np.isfinite(v)]
    lo, hi = stats.t.interval(0.95, len(finite) - 1, loc=finite.mean(), scale=stats.sem(finite))
    assert (est.value, est.ci_lower, est.ci_upper, est.n) == pytest.approx(
        (finite.mean(), lo, hi, 6)
    )


def test_chi_square_and_cramers_v_by_hand_and_scipy() -> None:
    # table [[10, 0], [0, 10]]: chi2 = 20, V = 1
    labels = np.array([1] * 10 + [2] * 10)
    y = np.array([True] * 10 + [False] * 10)
    chi2, dof, p, v = chi_square(labels, y)
    assert (chi2, dof, v) == pytest.approx((20.0, 1, 1.0))
    assert p == pytest.approx(stats.chi2.sf(20.0, 1))
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 4, 500)
    cat = rng.integers(0, 3, 500)
    _, _, _, v2 = chi_square(lab, cat)
    assert v2 == pytest.approx(association(contingency(lab, cat), method="cramer"))


def test_chi_square_degenerate_is_nan() -> None:
    chi2, dof, p, v = chi_square(np.array([1, 1, 1]), np.array([0, 1, 0]))
    assert math.isnan(chi2)
    assert math.isnan(p)
    assert dof == 0
    assert math.isnan(v)


def test_cohort_auc_equals_logistic_on_one_hot() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, 4000)
    rates = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    y = rng.random(4000) < rates[labels]
    ours = cohort_auc(labels, y)
    onehot = np.eye(5)[labels]
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    ref_p = cross_val_predict(
        LogisticRegression(C=1e6, max_iter=1000), onehot, y, cv=folds, method="predict_proba"
    )[:, 1]
    assert ours == pytest.approx(roc_auc_score(y, ref_p), abs=0.005)
    # in-sample rates give the population AUC of a perfect-ranking score by cohort
    assert ours == pytest.approx(roc_auc_score(y, rates[labels]), abs=0.01)


def test_cohort_auc_of_a_single_class_is_nan() -> None:
    assert math.isnan(cohort_auc(np.array([1, 2, 3]), np.array([True, True, True])))


def test_features_auc_sees_signal_and_handles_nulls() -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(size=(3000, 2))
    y = rng.random(3000) < 1 / (1 + np.exp(-2 * z[:, 0]))
    z[::7, 0] = np.nan
    auc = features_auc(z, y)
    assert 0.75 < auc < 0.95
    noise = features_auc(rng.normal(size=(3000, 2)), y)
    assert 0.45 < noise < 0.56


def test_silhouette_and_db_match_sklearn() -> None:
    rng = np.random.default_rng(5)
    z = np.vstack([rng.normal(c, 0.4, size=(100, 2)) for c in ((0, 0), (3, 0), (0, 3))])
    labels = np.repeat([1, 2, 3], 100)
    sil = silhouette_values(sample_distances(z), labels)
    assert sil.mean() == pytest.approx(silhouette_score(z, labels))
    assert davies_bouldin(z, labels) == pytest.approx(davies_bouldin_score(z, labels))
    assert math.isnan(davies_bouldin(z, np.ones(300)))
    assert silhouette_values(sample_distances(z[:5]), np.ones(5)).tolist() == [0.0] * 5


def test_bootstrap_stability_high_for_clear_blobs_low_for_noise() -> None:
    rng = np.random.default_rng(6)
    z = np.vstack([rng.normal(c, 0.3, size=(150, 2)) for c in ((0, 0), (4, 0), (0, 4))])
    clear = bootstrap_stability(z, 3, n_bootstrap=4, n_init=3, seed=0)
    assert clear.shape == (4,)
    assert clear.min() > 0.98
    noise = bootstrap_stability(rng.normal(size=(450, 2)), 6, n_bootstrap=4, n_init=1, seed=0)
    assert noise.mean() < clear.mean()


def test_bootstrap_uses_the_given_reference() -> None:
    z = np.vstack([np.zeros((20, 1)), np.ones((20, 1)) * 5])
    ref = KMeans(2, n_init=1, random_state=0).fit(z)
    assert bootstrap_stability(z, 2, 2, 1, 0, reference=ref).tolist() == [1.0, 1.0]


def test_outcome_association_leaves_unknown_outcomes_out() -> None:
    labels = np.array([1, 1, 2, 2, 2, 1])
    y = np.array([1.0, 1.0, 0.0, 0.0, np.nan, np.nan])
    a = outcome_association("churned", labels, y)
    assert (a.n, a.n_positive) == (4, 2)
    assert a.cramers_v == pytest.approx(1.0)
    # every held-out learner is scored by its cohort-mate's outcome: a perfect ranking
    assert a.auc_cohort == 1.0
    assert math.isnan(a.auc_features)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(0, 1, allow_nan=False), min_size=2, max_size=6),
    st.integers(min_value=0, max_value=1000),
)
def test_records_round_trip(values: list[float], n: int) -> None:
    est = Estimate(values[0], values[1], math.nan, n)
    back = Estimate.from_dict(est.to_dict())
    assert back.value == est.value
    assert back.ci_lower == est.ci_lower
    assert math.isnan(back.ci_upper)
    assert back.n == n
    assoc = OutcomeAssociation("completed", n, 0, values[0], 2, math.nan, values[1], 0.7, math.nan)
    q = CohortQuality(0.4, 0.01, 100, 0.9, 0.99, 0.98, 3, (assoc,))
    back_q = CohortQuality.from_dict(q.to_dict())
    assert back_q.outcomes[0].cramers_v == values[1]
    assert math.isnan(back_q.outcomes[0].pvalue)
    assert back_q.silhouette == 0.4
