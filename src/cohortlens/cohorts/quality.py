"""How good the cohorts are: internal validity, stability, and association with outcomes.

* **silhouette** on a random sample (``silhouette_samples`` on one distance matrix), with its
  standard error over the sampled learners;
* **Davies–Bouldin** index (lower is better) on the complete learners (sampled above 200K);
* **bootstrap stability**: mean (and minimum) adjusted Rand index between the fit on a sample
  and fits on bootstrap resamples of it, all labelling the same learners;
* **outcome association**, per binary outcome (completed, churned): chi-square and Cramér's V
  of the cohort x outcome table, the cross-validated AUC of predicting the outcome from cohort
  membership alone (each learner scored by the outcome rate of its cohort in the other folds,
  which is what a logistic regression on the cohort one-hot converges to), and beside it the
  cross-validated AUC of a logistic regression on the scaled raw features: the ceiling a
  cohort id can approach.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    adjusted_rand_score,
    davies_bouldin_score,
    pairwise_distances,
    roc_auc_score,
    silhouette_samples,
)

from cohortlens.cohorts._threads import kmeans_threads

_NAN = math.nan


def _finite_or_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95 % confidence interval (NaN when undefined).

    Attributes:
        value: the estimate (a rate or a mean).
        ci_lower, ci_upper: bounds of the 95 % interval.
        n: observations it rests on.
    """

    value: float
    ci_lower: float
    ci_upper: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form; NaN becomes None."""
        return {
            "value": _finite_or_none(self.value),
            "ci_lower": _finite_or_none(self.ci_lower),
            "ci_upper": _finite_or_none(self.ci_upper),
            "n": self.n,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Estimate:
        """Inverse of :meth:`to_dict`."""
        value, lo, hi = (_NAN if d[k] is None else float(d[k]) for k in _EST_KEYS)
        return Estimate(value, lo, hi, int(d["n"]))


_EST_KEYS = ("value", "ci_lower", "ci_upper")


def wilson_interval(successes: int, n: int, level: float = 0.95) -> Estimate:
    """Rate with the Wilson score interval (good coverage at small n and extreme rates)."""
    if n <= 0:
        return Estimate(_NAN, _NAN, _NAN, 0)
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n)


def mean_interval(values: np.ndarray, level: float = 0.95) -> Estimate:
    """Mean with a Student-t interval (NaN ignored); skewed values such as revenue rely on
    the central limit theorem, fine at the cohort sizes this is used for."""
    v = values[np.isfinite(values)]
    n = len(v)
    if n == 0:
        return Estimate(_NAN, _NAN, _NAN, 0)
    m = float(v.mean())
    if n == 1:
        return Estimate(m, _NAN, _NAN, 1)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * float(v.std(ddof=1)) / math.sqrt(n)
    return Estimate(m, m - half, m + half, n)


@dataclass(frozen=True)
class OutcomeAssociation:
    """Association of cohort membership with one binary outcome.

    Attributes:
        outcome: the outcome's name (``completed``, ``churned``...).
        n: learners with a known outcome; n_positive: those with the outcome true.
        chi2, dof, pvalue: Pearson chi-square test of the cohort x outcome table.
        cramers_v: sqrt(chi2 / (n (min(rows, cols) - 1))), in [0, 1].
        auc_cohort: cross-validated AUC of the outcome from cohort membership alone.
        auc_features: cross-validated AUC of a logistic regression on the raw features (the
            ceiling; NaN when not computed).
    """

    outcome: str
    n: int
    n_positive: int
    chi2: float
    dof: int
    pvalue: float
    cramers_v: float
    auc_cohort: float
    auc_features: float

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form; NaN becomes None."""
        d = asdict(self)
        return {k: _finite_or_none(v) if isinstance(v, float) else v for k, v in d.items()}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> OutcomeAssociation:
        """Inverse of :meth:`to_dict`."""
        floats = ("chi2", "pvalue", "cramers_v", "auc_cohort", "auc_features")
        kw = {k: (_NAN if d[k] is None else float(d[k])) for k in floats}
        return OutcomeAssociation(
            outcome=str(d["outcome"]),
            n=int(d["n"]),
            n_positive=int(d["n_positive"]),
            dof=int(d["dof"]),
            **kw,
        )


@dataclass(frozen=True)
class CohortQuality:
    """Internal and external validity of one fitted model.

    Attributes:
        silhouette: mean silhouette on ``silhouette_n`` sampled complete learners.
        silhouette_se: its standard error (sd of the per-learner values / sqrt(n)).
        silhouette_n: learners in the silhouette sample.
        davies_bouldin: Davies–Bouldin index (lower = more compact, better separated).
        stability_ari: mean ARI between the sample fit and its bootstrap refits.
        stability_ari_min: the lowest of those ARIs.
        n_bootstrap: bootstrap refits behind the stability figures.
        outcomes: one :class:`OutcomeAssociation` per outcome supplied.
    """

    silhouette: float
    silhouette_se: float
    silhouette_n: int
    davies_bouldin: float
    stability_ari: float
    stability_ari_min: float
    n_bootstrap: int
    outcomes: tuple[OutcomeAssociation, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form; NaN becomes None."""
        d: dict[str, Any] = {}
        for k in (
            "silhouette",
            "silhouette_se",
            "davies_bouldin",
            "stability_ari",
            "stability_ari_min",
        ):
            d[k] = _finite_or_none(getattr(self, k))
        d["silhouette_n"] = self.silhouette_n
        d["n_bootstrap"] = self.n_bootstrap
        d["outcomes"] = [o.to_dict() for o in self.outcomes]
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> CohortQuality:
        """Inverse of :meth:`to_dict`."""

        def f(k: str) -> float:
            return _NAN if d.get(k) is None else float(d[k])

        return CohortQuality(
            silhouette=f("silhouette"),
            silhouette_se=f("silhouette_se"),
            silhouette_n=int(d["silhouette_n"]),
            davies_bouldin=f("davies_bouldin"),
            stability_ari=f("stability_ari"),
            stability_ari_min=f("stability_ari_min"),
            n_bootstrap=int(d["n_bootstrap"]),
            outcomes=tuple(OutcomeAssociation.from_dict(o) for o in d.get("outcomes", [])),
        )


def silhouette_values(distances: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-learner silhouettes from a precomputed distance matrix (0 where undefined)."""
    if len(np.unique(labels)) < 2:
        return np.zeros(len(labels))
    return np.asarray(silhouette_samples(distances, labels, metric="precomputed"))


def sample_distances(z: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix of a (small) sample, float64."""
    return np.asarray(pairwise_distances(z, metric="euclidean"), dtype=np.float64)


def davies_bouldin(z: np.ndarray, labels: np.ndarray, max_n: int = 200_000, seed: int = 0) -> float:
    """Davies–Bouldin index of ``labels`` on ``z`` (on a sample above ``max_n`` rows)."""
    if len(np.unique(labels)) < 2:
        return _NAN
    if len(z) > max_n:
        idx = np.random.default_rng(seed).choice(len(z), max_n, replace=False)
        z, labels = z[idx], labels[idx]
        if len(np.unique(labels)) < 2:
            return _NAN
    return float(davies_bouldin_score(z, labels))


def bootstrap_stability(
    z: np.ndarray,
    k: int,
    n_bootstrap: int,
    n_init: int,
    seed: int,
    reference: KMeans | None = None,
) -> np.ndarray:
    """ARIs between a reference fit on ``z`` and ``n_bootstrap`` refits on resamples of it.

    Every fit labels all rows of ``z`` (nearest centroid), so the ARIs compare partitions of
    the same learners. Returns the ``n_bootstrap`` ARIs.
    """
    rng = np.random.default_rng(seed)
    with kmeans_threads(len(z)), warnings.catch_warnings():
        # a resample can hold fewer distinct learners than k: a legitimate, unstable outcome
        warnings.simplefilter("ignore", ConvergenceWarning)
        if reference is None:
            reference = KMeans(k, n_init=n_init, random_state=int(rng.integers(2**31))).fit(z)
        ref_labels = reference.predict(z)
        out = np.empty(n_bootstrap)
        for b in range(n_bootstrap):  # a handful of refits
            idx = rng.integers(0, len(z), len(z))
            fit = KMeans(k, n_init=n_init, random_state=int(rng.integers(2**31))).fit(z[idx])
            out[b] = adjusted_rand_score(ref_labels, fit.predict(z))
    return out


def contingency(labels: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """Counts of (cohort, category) pairs; rows and columns in sorted order of the values."""
    _, li = np.unique(labels, return_inverse=True)
    _, ci = np.unique(categories, return_inverse=True)
    table = np.zeros((li.max(initial=-1) + 1, ci.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(table, (li, ci), 1)
    return table


def chi_square(labels: np.ndarray, categories: np.ndarray) -> tuple[float, int, float, float]:
    """Pearson chi-square of the labels x categories table: (chi2, dof, p-value, Cramér's V).

    Empty rows and columns are dropped; a table with one row or one column gives NaNs.
    """
    table = contingency(labels, categories)
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    r, c = table.shape
    if r < 2 or c < 2:
        return _NAN, 0, _NAN, _NAN
    res = stats.chi2_contingency(table, correction=False)
    chi2 = float(res.statistic)
    n = int(table.sum())
    v = math.sqrt(chi2 / (n * (min(r, c) - 1)))
    return chi2, int(res.dof), float(res.pvalue), v


def _folds(n: int, n_folds: int, seed: int) -> np.ndarray:
    """Fold index of each row (a random permutation cut into ``n_folds`` near-equal parts)."""
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % n_folds
    return fold


def cohort_auc(labels: np.ndarray, y: np.ndarray, n_folds: int = 5, seed: int = 0) -> float:
    """Cross-validated AUC of ``y`` (bool) scored by the cohort's outcome rate in other folds.

    A cohort absent from the training folds scores the overall training rate.
    """
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        return _NAN
    _, li = np.unique(labels, return_inverse=True)
    n_lab = int(li.max()) + 1
    fold = _folds(len(y), n_folds, seed)
    score = np.empty(len(y))
    for f in range(n_folds):  # a handful of folds
        train = fold != f
        pos = np.bincount(li[train], weights=y[train].astype(np.float64), minlength=n_lab)
        cnt = np.bincount(li[train], minlength=n_lab).astype(np.float64)
        overall = float(y[train].mean())
        rate = np.where(cnt > 0, pos / np.maximum(cnt, 1.0), overall)
        score[~train] = rate[li[~train]]
    return float(roc_auc_score(y, score))


def features_auc(
    z: np.ndarray, y: np.ndarray, n_folds: int = 5, seed: int = 0, max_n: int = 50_000
) -> float:
    """Cross-validated AUC of a logistic regression of ``y`` on the scaled features ``z``.

    Nulls are imputed at the median (0 in scaled units) with one missing-indicator column
    per feature that has nulls. Above ``max_n`` rows, a random sample is used.
    """
    y = np.asarray(y, dtype=bool)
    if len(z) > max_n:
        idx = np.random.default_rng(seed).choice(len(z), max_n, replace=False)
        z, y = z[idx], y[idx]
    if y.all() or not y.any():
        return _NAN
    miss = np.isnan(z)
    cols = [np.where(miss, 0.0, z)]
    has_miss = miss.any(axis=0)
    if has_miss.any():
        cols.append(miss[:, has_miss].astype(np.float64))
    x = np.hstack(cols)
    fold = _folds(len(y), n_folds, seed)
    score = np.empty(len(y))
    for f in range(n_folds):
        train = fold != f
        if y[train].all() or not y[train].any():
            score[~train] = float(y[train].mean())
            continue
        model = LogisticRegression(max_iter=1000).fit(x[train], y[train])
        score[~train] = model.predict_proba(x[~train])[:, 1]
    return float(roc_auc_score(y, score))


def outcome_association(
    name: str,
    labels: np.ndarray,
    y: np.ndarray,
    z: np.ndarray | None = None,
    seed: int = 0,
) -> OutcomeAssociation:
    """Chi-square, Cramér's V and the two AUCs for one binary outcome.

    ``y`` is float (1/0, NaN = unknown); learners with an unknown outcome are left out.
    ``z`` (scaled features, NaN = null) enables the logistic-regression ceiling.
    """
    known = np.isfinite(y)
    lab, yk = labels[known], y[known] > 0.5
    chi2, dof, p, v = chi_square(lab, yk)
    auc_c = cohort_auc(lab, yk, seed=seed) if len(yk) else _NAN
    auc_f = features_auc(z[known], yk, seed=seed) if z is not None and len(yk) else _NAN
    return OutcomeAssociation(name, int(known.sum()), int(yk.sum()), chi2, dof, p, v, auc_c, auc_f)
