"""``CohortModel``: robust scaling + k-means (scikit-learn, Lloyd) + archetypes + stable ids.

The estimator follows scikit-learn's ``sklearn/cluster/_kmeans.py``: ``__init__`` only stores
parameters, declared once in ``_parameter_constraints`` and checked all at once; ``fit``
validates, seeds, iterates (robust scaling, the choice of k, Lloyd's k-means, k-POD) and sets
the learned state (names ending in ``_``), then records the diagnostics computed by the
functions of :mod:`cohortlens.cohorts.diagnostics` (quality, profiles and names, drift), which
the report and the CLI call too; ``predict`` returns cohort ids and ``transform`` distances to
the centroids. ``to_dict``/``from_dict``
give the versioned, JSON-serializable artifact the store keeps.

**Learners with null features** (docs/COHORTS.md has the justification). A null feature means
"not enough evidence for this measurement" (no review pairs for a half-life, too few graded
events for a velocity), not "an unusual learner". So:

* learners with fewer than ``min_events`` events, or values for fewer than
  ``min_observed_share`` of the clustering features, go to the **insufficient data** cohort
  (id 0): their behaviour is not measured well enough to type them;
* every other learner is clustered on the features it has: the centroids minimise the k-means
  objective over *observed* entries only (k-POD, Chi, Chi & Baraniuk 2016: start from a fit
  on the complete learners, then alternate filling each missing entry with its cohort's
  centroid coordinate and refitting scikit-learn's ``KMeans`` from the current centroids), and
  a learner is assigned to the nearest centroid over its observed features. Nothing is
  imputed into the stored model, and a cohort card reports the share of members assigned on
  partial features;
* a clustering feature that is null for more than ``max_null_share`` of learners, or constant,
  is dropped from the model and listed in ``dropped_features_``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

import numpy as np
import pyarrow as pa
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from sklearn.exceptions import NotFittedError

from cohortlens._version import __version__
from cohortlens.cohorts import _matrix as mx
from cohortlens.cohorts._kernels import nearest_observed
from cohortlens.cohorts._threads import kmeans_threads
from cohortlens.cohorts._validation import (
    INT,
    REAL,
    Constraint,
    InstanceOf,
    Interval,
    NonEmpty,
    validate_params,
)
from cohortlens.cohorts.archetypes import Archetype
from cohortlens.cohorts.diagnostics import (
    OUTCOME_COLUMNS,
    cohort_quality,
    describe_cohorts,
    drift_report,
)
from cohortlens.cohorts.matching import CohortMatch, DriftReport, match_centroids
from cohortlens.cohorts.ood import training_distance_p99
from cohortlens.cohorts.params import (
    DEFAULT_FEATURES,
    DEFAULT_PROFILE_FEATURES,
    INSUFFICIENT_COHORT,
    SCHEMA_VERSION,
    FeatureSpec,
    SelectionParams,
)
from cohortlens.cohorts.quality import CohortQuality
from cohortlens.cohorts.scaling import RobustScaler
from cohortlens.cohorts.selection import Selection, choose_n_cohorts
from cohortlens.errors import InputError
from cohortlens.progress import Progress, tell

#: Progress of a fit after the k sweep: k-means (with k-POD), quality, profiles and names,
#: drift against the previous model.
_FIT_STEP = "fitting cohorts"
_FIT_STAGES = 4

#: Artifact ``kind`` tag.
ARTIFACT_KIND = "cohortlens/cohort-model"
__all__ = ["OUTCOME_COLUMNS", "CohortModel", "drift_report", "nearest_centroid"]
_TRANSFORM_CODE = {"identity": 0, "log": 1, "logit": 2}


def _specs(items: Sequence[FeatureSpec | str]) -> tuple[FeatureSpec, ...]:
    return tuple(s if isinstance(s, FeatureSpec) else FeatureSpec(str(s)) for s in items)


def nearest_centroid(z: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest centroid over each row's observed (non-NaN) entries, and the
    squared distance over those entries. Rows without any observed entry get index 0."""
    zc = np.ascontiguousarray(z, dtype=np.float64)
    cc = np.ascontiguousarray(centroids, dtype=np.float64)
    return nearest_observed(zc, cc)


class CohortModel(ClusterMixin, BaseEstimator):
    """Learner cohorts: k-means on robustly scaled features, named, with stable ids.

    Args:
        n_cohorts: number of cohorts; ``None`` chooses it over ``selection.k_min..k_max``
            (silhouette on a sample plus a bootstrap stability check).
        features: columns clustered on, with their transforms (``FeatureSpec`` or names).
        profile_features: columns described on the cohort cards and used for naming.
        selection: how k is chosen when ``n_cohorts`` is None.
        n_init: k-means initialisations of the final fit (k-means++, best inertia kept).
        max_iter, tol: Lloyd iteration limit and tolerance of each k-means run.
        max_kpod_iter: refits that fold learners with some null features into the centroids.
        min_events: fewer events than this (``n_events`` column) -> insufficient-data cohort.
        min_observed_share: values for fewer than this share of the clustering features ->
            insufficient-data cohort.
        max_null_share: a clustering feature null for more than this share of learners is
            dropped from the model.
        clip_quantile: winsorizing quantile of the robust scaler (each tail).
        match_ratio: a new centroid keeps a previous id when its distance is below
            ``match_ratio`` x that previous centroid's distance to its nearest neighbour.
        random_state: seed of every random choice (k-means++, samples, bootstraps).
    """

    #: Every constructor parameter and what it must be (scikit-learn's declaration); checked
    #: all at once by :meth:`_validate_params` at the start of :meth:`fit`.
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        "n_cohorts": [None, Interval(INT, 1, None, "left")],
        "features": [NonEmpty()],
        "profile_features": [NonEmpty()],
        "selection": [InstanceOf(SelectionParams, "a SelectionParams")],
        "n_init": [Interval(INT, 1, None, "left")],
        "max_iter": [Interval(INT, 1, None, "left")],
        "tol": [Interval(REAL, 0, None, "left")],
        "max_kpod_iter": [Interval(INT, 0, None, "left")],
        "min_events": [Interval(INT, 0, None, "left")],
        "min_observed_share": [Interval(REAL, 0, 1, "both")],
        "max_null_share": [Interval(REAL, 0, 1, "both")],
        "clip_quantile": [Interval(REAL, 0, 0.25, "left")],
        "match_ratio": [Interval(REAL, 0, None, "neither")],
        "random_state": [Interval(INT, 0, None, "left")],
    }

    # learned state (set by fit or from_dict)
    features_: tuple[FeatureSpec, ...]
    feature_names_in_: np.ndarray
    n_features_in_: int
    dropped_features_: dict[str, str]
    profile_features_: tuple[FeatureSpec, ...]
    scaler_: RobustScaler
    cluster_centers_: np.ndarray
    cohort_ids_: np.ndarray
    next_cohort_id_: int
    n_cohorts_: int
    labels_: np.ndarray
    inertia_: float
    n_iter_: int
    n_learners_: int
    n_insufficient_: int
    feature_run_: str | None
    selection_: Selection | None
    quality_: CohortQuality
    archetypes_: dict[int, Archetype]
    population_moments_: dict[str, tuple[float, float]]
    reference_bins_: dict[str, dict[str, list[float]]]
    distance_p99_: float
    drift_: DriftReport | None
    matches_: tuple[CohortMatch, ...]
    retired_ids_: tuple[int, ...]
    _fast_path: tuple[Any, ...] | None

    def __init__(
        self,
        n_cohorts: int | None = None,
        *,
        features: Sequence[FeatureSpec | str] = DEFAULT_FEATURES,
        profile_features: Sequence[FeatureSpec | str] = DEFAULT_PROFILE_FEATURES,
        selection: SelectionParams = SelectionParams(),  # noqa: B008 (frozen, immutable)
        n_init: int = 10,
        max_iter: int = 300,
        tol: float = 1e-4,
        max_kpod_iter: int = 10,
        min_events: int = 3,
        min_observed_share: float = 0.5,
        max_null_share: float = 0.5,
        clip_quantile: float = 0.005,
        match_ratio: float = 0.5,
        random_state: int = 0,
    ) -> None:
        self.n_cohorts = n_cohorts
        self.features = features
        self.profile_features = profile_features
        self.selection = selection
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.max_kpod_iter = max_kpod_iter
        self.min_events = min_events
        self.min_observed_share = min_observed_share
        self.max_null_share = max_null_share
        self.clip_quantile = clip_quantile
        self.match_ratio = match_ratio
        self.random_state = random_state

    # ------------------------------------------------------------------ validation

    def _validate_params(self) -> None:
        """Raise one :class:`InputError` listing every parameter that breaks its constraint."""
        problems = validate_params(
            "CohortModel", self.get_params(deep=False), self._parameter_constraints
        )
        if problems:
            raise InputError("CohortModel: " + "; ".join(problems))

    def _check_fitted(self) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError(
                "This CohortModel is not fitted yet; call fit() or load one with from_dict()."
            )

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        X: mx.FeatureTable | np.ndarray,  # noqa: N803 (scikit-learn's name)
        y: None = None,
        *,
        outcomes: pa.Table | None = None,
        previous: CohortModel | None = None,
        previous_assignments: pa.Table | None = None,
        feature_run: str | None = None,
        on_progress: Progress | None = None,
    ) -> Self:
        """Learn scaling, k, centroids, ids, names and quality from a feature table.

        Args:
            X: the per-learner feature table (``FEATURE_SCHEMA`` columns; any Arrow table,
                pandas DataFrame or column mapping), or an array whose columns follow
                ``features`` in original units.
            y: ignored (scikit-learn convention).
            outcomes: optional table with ``learner_id`` and any of ``completed``,
                ``churned``, ``revenue`` (``OUTCOME_SCHEMA``), joined on ``learner_id``;
                fills the cards' outcome rates and the outcome association.
            previous: the previous active model; its ids are carried over to matching
                cohorts and ``drift_`` compares the two.
            previous_assignments: optional ``learner_id``, ``cohort_id`` table of the
                previous run, for the share of learners who changed cohort (otherwise the
                previous model is applied to ``X``).
            feature_run: id of the feature run ``X`` came from (kept in the artifact).
            on_progress: told each k of the sweep, then each stage of the fit
                (:mod:`cohortlens.progress`).
        """
        # 1. validate the parameters and the input
        self._validate_params()
        xa, enough_events = self._validate_data(X)
        n = len(xa)
        keep, dropped = self._usable_features(xa[enough_events], _specs(self.features))
        specs = tuple(s for s, k in zip(_specs(self.features), keep, strict=True) if k)
        xa = xa[:, keep]
        sufficient = enough_events & self._observed_enough(xa)
        if not sufficient.any():
            raise InputError(
                f"CohortModel.fit: no learner has >= {self.min_events} events and values for "
                f">= {self.min_observed_share:.0%} of the features"
            )
        # 2. seed
        rng = np.random.default_rng(self.random_state)
        # 3. iterate: robust scaling, k, Lloyd, k-POD
        scaler = RobustScaler.fit(xa[sufficient], self.clip_quantile)
        z = scaler.transform(xa[sufficient])
        complete = np.isfinite(z).all(axis=1)
        selection, centroids, n_iter = self._cluster(z, complete, rng, on_progress)
        idx, d2 = nearest_centroid(z, centroids)
        # 4. set the learned state: features, scaler, centroids with stable ids, labels
        self.dropped_features_ = dropped
        self.features_ = specs
        self.feature_names_in_ = np.array([s.column for s in specs], dtype=object)
        self.n_features_in_ = len(specs)
        self.scaler_ = scaler
        self.selection_ = selection
        self.n_iter_ = n_iter
        self.inertia_ = float(d2.sum())
        id_of_centroid = self._set_ids(centroids, idx, previous)
        labels = np.full(n, INSUFFICIENT_COHORT, dtype=np.int64)
        labels[sufficient] = id_of_centroid[idx]
        self.labels_ = labels
        self.n_learners_ = n
        self.n_insufficient_ = int((~sufficient).sum())
        self.feature_run_ = feature_run
        self._fast_path = None
        self.distance_p99_ = training_distance_p99(self, X)
        tell(on_progress, _FIT_STEP, 1, _FIT_STAGES, "stages")
        # 5. diagnostics: functions of their own (diagnostics.py), also called by the report
        #    and the CLI; the artifact keeps their results for the service and the cards
        self.quality_ = cohort_quality(self, X, outcomes=outcomes, rng=rng)
        tell(on_progress, _FIT_STEP, 2, _FIT_STAGES, "stages")
        described = describe_cohorts(self, X, outcomes=outcomes)
        self.profile_features_ = described.profile_features
        self.population_moments_ = described.population_moments
        self.archetypes_ = described.archetypes
        self.reference_bins_ = described.reference_bins
        tell(on_progress, _FIT_STEP, 3, _FIT_STAGES, "stages")
        self.drift_ = (
            None if previous is None else drift_report(previous, self, X, previous_assignments)
        )
        tell(on_progress, _FIT_STEP, _FIT_STAGES, _FIT_STAGES, "stages")
        return self

    def _validate_data(
        self,
        X: mx.FeatureTable | np.ndarray,  # noqa: N803
    ) -> tuple[np.ndarray, np.ndarray]:
        """The clustering features on their analysis scale, and who has enough events."""
        specs = _specs(self.features)
        if isinstance(X, np.ndarray):
            xa = mx.array_matrix(X, specs)
            enough = np.ones(len(xa), dtype=bool)
        else:
            xa = mx.analysis_matrix(X, specs)
            n_events = self._n_events(X)
            enough = (
                ~(n_events < self.min_events)
                if n_events is not None
                else np.ones(len(xa), dtype=bool)
            )
        if len(xa) == 0:
            raise InputError("CohortModel.fit: the feature table has no rows")
        return xa, enough

    def _cluster(
        self,
        z: np.ndarray,
        complete: np.ndarray,
        rng: np.random.Generator,
        on_progress: Progress | None = None,
    ) -> tuple[Selection | None, np.ndarray, int]:
        """Choose k (unless given), run Lloyd's k-means (``n_init`` starts) on the complete
        learners, then fold in the partial ones (k-POD). Returns the selection, the centroids
        and the iterations."""
        zc = z[complete]
        k_floor = self.n_cohorts or self.selection.k_min
        if len(zc) <= k_floor:
            raise InputError(
                f"CohortModel.fit: {len(zc)} learners have every feature; at least "
                f"{k_floor + 1} are needed for {k_floor} cohorts"
            )
        seed = int(rng.integers(2**31))
        if self.n_cohorts is None:
            selection: Selection | None = choose_n_cohorts(
                zc, self.selection, seed, on_progress=on_progress
            )
            assert selection is not None
            k = selection.chosen_k
        else:
            selection = None
            k = int(self.n_cohorts)
        tell(on_progress, _FIT_STEP, 0, _FIT_STAGES, "stages")
        km = KMeans(
            k,
            n_init=self.n_init,
            max_iter=self.max_iter,
            tol=self.tol,
            algorithm="lloyd",
            random_state=int(rng.integers(2**31)),
        )
        with kmeans_threads(len(zc)):
            km.fit(zc)
        with kmeans_threads(len(z)):
            centroids, n_iter = self._kpod(z, complete, km)
        return selection, centroids, int(km.n_iter_) + n_iter

    def _set_ids(
        self, centroids: np.ndarray, idx: np.ndarray, previous: CohortModel | None
    ) -> np.ndarray:
        """Stable ids: carried from ``previous`` by Hungarian matching, else 1..k by
        decreasing size; centroids are stored in id order. Returns the id of each centroid
        in the given order."""
        k = len(centroids)
        if previous is not None:
            previous._check_fitted()
            prev_space = self._in_space_of(previous, centroids)
            common = self._common_columns(previous)
            ids, matches, retired, next_id = match_centroids(
                prev_space,
                previous.cluster_centers_[
                    :, [list(previous.feature_names_in_).index(c) for c in common]
                ],
                previous.cohort_ids_.tolist(),
                previous.next_cohort_id_,
                self.match_ratio,
            )
        else:
            sizes = np.bincount(idx, minlength=k)
            # largest cohort first; equal sizes by centroid coordinates (deterministic)
            by_size = sorted(range(k), key=lambda c: (-int(sizes[c]), tuple(centroids[c])))
            ids = [0] * k
            for rank, c in enumerate(by_size):
                ids[c] = rank + 1
            matches, retired, next_id = [], [], k + 1
        order = np.argsort(ids, kind="stable")
        self.cluster_centers_ = centroids[order]
        self.cohort_ids_ = np.asarray(ids, dtype=np.int64)[order]
        self.next_cohort_id_ = int(next_id)
        self.n_cohorts_ = k
        self.matches_ = tuple(matches)
        self.retired_ids_ = tuple(retired)
        return np.asarray(ids, dtype=np.int64)

    # ------------------------------------------------------------------ fit helpers

    @staticmethod
    def _n_events(X: mx.FeatureTable) -> np.ndarray | None:  # noqa: N803
        """Event counts (NaN where null: a missing count is not checked, as in predict_one)."""
        if "n_events" not in mx.column_names(X):
            return None
        return mx.float_column(X, "n_events")

    def _usable_features(
        self, xa: np.ndarray, specs: Sequence[FeatureSpec]
    ) -> tuple[np.ndarray, dict[str, str]]:
        """Which features to keep (null share and spread rules) and why the others went."""
        keep = np.ones(len(specs), dtype=bool)
        dropped: dict[str, str] = {}
        if len(xa) == 0:
            return keep, dropped
        null_share = np.isnan(xa).mean(axis=0)
        for j, spec in enumerate(specs):  # loop over features
            col = xa[:, j]
            finite = col[np.isfinite(col)]
            if null_share[j] > self.max_null_share:
                keep[j] = False
                dropped[spec.column] = f"null for {null_share[j]:.0%} of learners"
            elif len(finite) == 0 or np.ptp(finite) <= 1e-12:
                keep[j] = False
                dropped[spec.column] = "constant"
        if not keep.any():
            detail = "; ".join(f"{c}: {why}" for c, why in dropped.items())
            raise InputError(f"CohortModel.fit: no usable clustering feature ({detail})")
        return keep, dropped

    def _observed_enough(self, xa: np.ndarray) -> np.ndarray:
        return np.isfinite(xa).mean(axis=1) >= self.min_observed_share

    def _kpod(self, z: np.ndarray, complete: np.ndarray, km: KMeans) -> tuple[np.ndarray, int]:
        """Fold learners with some null features into the centroids (k-POD refits)."""
        centroids = np.asarray(km.cluster_centers_, dtype=np.float64)
        if complete.all() or self.max_kpod_iter == 0:
            return centroids, 0
        observed = np.isfinite(z)
        idx, _ = nearest_centroid(z, centroids)
        iters = 0
        for _ in range(self.max_kpod_iter):  # a few refits of the whole matrix
            filled = np.where(observed, z, centroids[idx])
            refit = KMeans(
                len(centroids),
                init=centroids,
                n_init=1,
                max_iter=self.max_iter,
                tol=self.tol,
                algorithm="lloyd",
            ).fit(filled)
            centroids = np.asarray(refit.cluster_centers_, dtype=np.float64)
            iters += int(refit.n_iter_)
            new_idx, _ = nearest_centroid(z, centroids)
            moved = float((new_idx != idx).mean())
            idx = new_idx
            if moved < 1e-4:
                break
        return centroids, iters

    def _common_columns(self, other: CohortModel) -> list[str]:
        theirs = set(other.feature_names_in_.tolist())
        return [c for c in self.feature_names_in_.tolist() if c in theirs]

    def _in_space_of(self, previous: CohortModel, centroids: np.ndarray) -> np.ndarray:
        """Our centroids (our scaled units) in the previous model's scaled units, on the
        features both models cluster on (same transform required)."""
        common = self._common_columns(previous)
        mine = list(self.feature_names_in_)
        theirs = list(previous.feature_names_in_)
        out = np.empty((len(centroids), len(common)))
        for j, col in enumerate(common):  # loop over features
            a, b = mine.index(col), theirs.index(col)
            if self.features_[a].transform != previous.features_[b].transform:
                raise InputError(
                    f"cannot match cohorts: feature {col!r} uses transform "
                    f"{self.features_[a].transform!r} here and "
                    f"{previous.features_[b].transform!r} in the previous model"
                )
            analysis = centroids[:, a] * self.scaler_.scale[a] + self.scaler_.center[a]
            out[:, j] = (analysis - previous.scaler_.center[b]) / previous.scaler_.scale[b]
        return out

    # ------------------------------------------------------------------ inference

    def _scaled(self, X: mx.FeatureTable | np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
        """Scaled features and the sufficiency mask of new learners."""
        self._check_fitted()
        if isinstance(X, np.ndarray):
            xa = mx.array_matrix(X, self.features_)
            enough = np.ones(len(xa), dtype=bool)
        else:
            xa = mx.analysis_matrix(X, self.features_)
            n_events = self._n_events(X)
            enough = (
                ~(n_events < self.min_events)
                if n_events is not None
                else np.ones(len(xa), dtype=bool)
            )
        sufficient = enough & self._observed_enough(xa)
        return self.scaler_.transform(xa), sufficient

    def predict(self, X: mx.FeatureTable | np.ndarray) -> np.ndarray:  # noqa: N803
        """Stable cohort id of each learner (``INSUFFICIENT_COHORT`` for too little data)."""
        z, sufficient = self._scaled(X)
        idx, _ = nearest_centroid(z, self.cluster_centers_)
        return np.where(sufficient, self.cohort_ids_[idx], INSUFFICIENT_COHORT)

    def transform(self, X: mx.FeatureTable | np.ndarray) -> np.ndarray:  # noqa: N803
        """Distance of each learner to each centroid (columns follow ``cohort_ids_``), in
        scaled units; over observed features only, rescaled by sqrt(d / d_observed). NaN for
        learners in the insufficient-data cohort."""
        z, sufficient = self._scaled(X)
        observed = np.isfinite(z)
        zf = np.where(observed, z, 0.0)
        c = self.cluster_centers_
        d2 = (
            (zf * zf).sum(axis=1)[:, None]
            - 2.0 * (zf @ c.T)
            + observed.astype(np.float64) @ (c * c).T
        )
        n_obs = observed.sum(axis=1)
        factor = np.where(n_obs > 0, z.shape[1] / np.maximum(n_obs, 1), np.nan)
        dist = np.sqrt(np.maximum(d2, 0.0) * factor[:, None])
        dist[~sufficient] = np.nan
        return dist

    def predict_one(self, features: Mapping[str, float | int | None]) -> int:
        """Cohort id of one learner from a mapping of feature values (fast path, no numpy).

        Missing keys and None/NaN values are nulls; ``n_events`` (if given) is checked
        against ``min_events``.
        """
        fast = self._fast_path if getattr(self, "_fast_path", None) is not None else None
        if fast is None:
            fast = self._build_fast_path()
        cols, codes, lo, hi, centre, scale, cents, ids, need = fast
        n_ev = features.get("n_events")
        if n_ev is not None and n_ev < self.min_events:
            return INSUFFICIENT_COHORT
        zs: list[float | None] = []
        n_obs = 0
        for j, col in enumerate(cols):
            v = features.get(col)
            if v is None or v != v:
                zs.append(None)
                continue
            v = float(v)
            code = codes[j]
            if code == 1:
                v = math.log(v if v > 1e-6 else 1e-6)
            elif code == 2:
                p = min(max(v, 1e-3), 1.0 - 1e-3)
                v = math.log(p / (1.0 - p))
            v = min(max(v, lo[j]), hi[j])
            zs.append((v - centre[j]) / scale[j])
            n_obs += 1
        if n_obs < need:
            return INSUFFICIENT_COHORT
        best, best_d = 0, math.inf
        for i, c in enumerate(cents):
            d = 0.0
            for zj, cj in zip(zs, c, strict=True):
                if zj is not None:
                    d += (zj - cj) * (zj - cj)
            if d < best_d:
                best, best_d = i, d
        return int(ids[best])

    def _build_fast_path(self) -> tuple[Any, ...]:
        """Plain-Python copies of the model for :meth:`predict_one`."""
        self._check_fitted()
        d = len(self.features_)
        fast = (
            [s.column for s in self.features_],
            [_TRANSFORM_CODE[s.transform] for s in self.features_],
            self.scaler_.lower.tolist(),
            self.scaler_.upper.tolist(),
            self.scaler_.center.tolist(),
            self.scaler_.scale.tolist(),
            self.cluster_centers_.tolist(),
            self.cohort_ids_.tolist(),
            math.ceil(self.min_observed_share * d - 1e-9),
        )
        self._fast_path = fast
        return fast

    # ------------------------------------------------------------------ artifact

    def centroids_original(self) -> dict[int, dict[str, float]]:
        """Centroids in original units: cohort id -> feature column -> value."""
        self._check_fitted()
        analysis = self.scaler_.inverse_transform(self.cluster_centers_)
        out: dict[int, dict[str, float]] = {}
        for i, cid in enumerate(self.cohort_ids_.tolist()):
            out[int(cid)] = {
                s.column: float(mx.invert_transform(np.asarray(analysis[i, j]), s.transform))
                for j, s in enumerate(self.features_)
            }
        return out

    def get_params_dict(self) -> dict[str, Any]:
        """The constructor parameters in JSON form."""
        return {
            "n_cohorts": self.n_cohorts,
            "features": [s.to_dict() for s in _specs(self.features)],
            "profile_features": [s.to_dict() for s in _specs(self.profile_features)],
            "selection": self.selection.to_dict(),
            "n_init": self.n_init,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "max_kpod_iter": self.max_kpod_iter,
            "min_events": self.min_events,
            "min_observed_share": self.min_observed_share,
            "max_null_share": self.max_null_share,
            "clip_quantile": self.clip_quantile,
            "match_ratio": self.match_ratio,
            "random_state": self.random_state,
        }

    def to_dict(self) -> dict[str, Any]:
        """The versioned, JSON-serializable artifact (everything but the training labels)."""
        self._check_fitted()
        return {
            "kind": ARTIFACT_KIND,
            "schema_version": SCHEMA_VERSION,
            "library_version": __version__,
            "params": self.get_params_dict(),
            "feature_run": self.feature_run_,
            "features": [s.to_dict() for s in self.features_],
            "dropped_features": dict(self.dropped_features_),
            "profile_features": [s.to_dict() for s in self.profile_features_],
            "scaler": self.scaler_.to_dict(),
            "cluster_centers": self.cluster_centers_.tolist(),
            "cohort_ids": self.cohort_ids_.tolist(),
            "next_cohort_id": self.next_cohort_id_,
            "n_cohorts": self.n_cohorts_,
            "n_learners": self.n_learners_,
            "n_insufficient": self.n_insufficient_,
            "inertia": self.inertia_,
            "n_iter": self.n_iter_,
            "selection": None if self.selection_ is None else self.selection_.to_dict(),
            "quality": self.quality_.to_dict(),
            "archetypes": [a.to_dict() for a in self.archetypes_.values()],
            "population_moments": {k: list(v) for k, v in self.population_moments_.items()},
            "reference_bins": self.reference_bins_,
            "distance_p99": self.distance_p99_ if math.isfinite(self.distance_p99_) else None,
            "drift": None if self.drift_ is None else self.drift_.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CohortModel:
        """Rebuild a fitted model from :meth:`to_dict` output."""
        version = d.get("schema_version")
        if d.get("kind") != ARTIFACT_KIND or not isinstance(version, int):
            raise InputError("not a cohortlens cohort model (kind/schema_version missing)")
        if version > SCHEMA_VERSION:
            raise InputError(
                f"cohort model schema_version {version} is newer than this release "
                f"understands ({SCHEMA_VERSION}); upgrade cohortlens"
            )
        p = d["params"]
        model = cls(
            p["n_cohorts"],
            features=tuple(FeatureSpec.from_dict(s) for s in p["features"]),
            profile_features=tuple(FeatureSpec.from_dict(s) for s in p["profile_features"]),
            selection=SelectionParams(**p["selection"]),
            n_init=p["n_init"],
            max_iter=p["max_iter"],
            tol=p["tol"],
            max_kpod_iter=p["max_kpod_iter"],
            min_events=p["min_events"],
            min_observed_share=p["min_observed_share"],
            max_null_share=p["max_null_share"],
            clip_quantile=p["clip_quantile"],
            match_ratio=p["match_ratio"],
            random_state=p["random_state"],
        )
        model.features_ = tuple(FeatureSpec.from_dict(s) for s in d["features"])
        model.feature_names_in_ = np.array([s.column for s in model.features_], dtype=object)
        model.n_features_in_ = len(model.features_)
        model.dropped_features_ = dict(d["dropped_features"])
        model.profile_features_ = tuple(FeatureSpec.from_dict(s) for s in d["profile_features"])
        model.scaler_ = RobustScaler.from_dict(d["scaler"])
        model.cluster_centers_ = np.asarray(d["cluster_centers"], dtype=np.float64)
        model.cohort_ids_ = np.asarray(d["cohort_ids"], dtype=np.int64)
        model.next_cohort_id_ = int(d["next_cohort_id"])
        model.n_cohorts_ = int(d["n_cohorts"])
        model.n_learners_ = int(d["n_learners"])
        model.n_insufficient_ = int(d["n_insufficient"])
        model.inertia_ = float(d["inertia"])
        model.n_iter_ = int(d["n_iter"])
        model.feature_run_ = d.get("feature_run")
        model.selection_ = None if d["selection"] is None else Selection.from_dict(d["selection"])
        model.quality_ = CohortQuality.from_dict(d["quality"])
        cards = [Archetype.from_dict(a) for a in d["archetypes"]]
        model.archetypes_ = {a.cohort_id: a for a in cards}
        model.population_moments_ = {
            k: (float(v[0]), float(v[1])) for k, v in d["population_moments"].items()
        }
        model.reference_bins_ = {
            k: {"edges": list(v["edges"]), "shares": list(v["shares"])}
            for k, v in d["reference_bins"].items()
        }
        p99 = d.get("distance_p99")  # absent from artifacts made before the OOD check
        model.distance_p99_ = math.nan if p99 is None else float(p99)
        model.drift_ = None if d["drift"] is None else DriftReport.from_dict(d["drift"])
        model.matches_ = () if model.drift_ is None else model.drift_.matches
        model.retired_ids_ = () if model.drift_ is None else model.drift_.retired_ids
        model._fast_path = None
        return model

    @property
    def names_(self) -> dict[int, str]:
        """Cohort id -> archetype name (insufficient-data cohort included)."""
        self._check_fitted()
        return {cid: a.name for cid, a in self.archetypes_.items()}
