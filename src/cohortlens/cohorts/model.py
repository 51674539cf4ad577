"""``CohortModel``: robust scaling + k-means (scikit-learn, Lloyd) + archetypes + stable ids.

The estimator follows scikit-learn's conventions: ``__init__`` only stores parameters,
``fit`` validates, learns and returns ``self``, learned state ends in ``_``, ``predict``
returns cohort ids and ``transform`` distances to the centroids. ``to_dict``/``from_dict``
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
from dataclasses import replace
from typing import Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from sklearn.exceptions import NotFittedError

from cohortlens._version import __version__
from cohortlens.cohorts import _matrix as mx
from cohortlens.cohorts._kernels import nearest_observed
from cohortlens.cohorts._threads import kmeans_threads
from cohortlens.cohorts.archetypes import (
    Archetype,
    label_archetypes,
    outcome_estimates,
    population_moments,
    profile_cohorts,
)
from cohortlens.cohorts.matching import (
    CohortMatch,
    DriftReport,
    changed_share,
    feature_drift,
    match_centroids,
    reference_bins,
    share_psi,
)
from cohortlens.cohorts.ood import training_distance_p99
from cohortlens.cohorts.params import (
    DEFAULT_FEATURES,
    DEFAULT_PROFILE_FEATURES,
    INSUFFICIENT_COHORT,
    SCHEMA_VERSION,
    FeatureSpec,
    SelectionParams,
)
from cohortlens.cohorts.quality import (
    CohortQuality,
    bootstrap_stability,
    davies_bouldin,
    outcome_association,
    sample_distances,
    silhouette_values,
)
from cohortlens.cohorts.scaling import RobustScaler
from cohortlens.cohorts.selection import Selection, choose_n_cohorts
from cohortlens.errors import InputError

#: Artifact ``kind`` tag.
ARTIFACT_KIND = "cohortlens/cohort-model"
#: Outcome columns read from an outcomes table (OUTCOME_SCHEMA).
OUTCOME_COLUMNS: tuple[str, ...] = ("completed", "churned", "revenue")
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

    def _check_params(self) -> None:
        """Raise one :class:`InputError` listing every invalid parameter."""
        problems = []
        if self.n_cohorts is not None and (
            not isinstance(self.n_cohorts, int | np.integer) or self.n_cohorts < 1
        ):
            problems.append(f"n_cohorts == {self.n_cohorts!r}, must be None or an int >= 1")
        if not self.features:
            problems.append("features is empty")
        for name, lo in (("n_init", 1), ("max_iter", 1), ("max_kpod_iter", 0), ("min_events", 0)):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < lo:
                problems.append(f"{name} == {value!r}, must be an int >= {lo}")
        for name in ("min_observed_share", "max_null_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                problems.append(f"{name} == {value!r}, must be in [0, 1]")
        if not 0.0 <= self.clip_quantile < 0.25:
            problems.append(f"clip_quantile == {self.clip_quantile!r}, must be in [0, 0.25)")
        if self.tol < 0:
            problems.append(f"tol == {self.tol!r}, must be >= 0")
        if self.match_ratio <= 0:
            problems.append(f"match_ratio == {self.match_ratio!r}, must be > 0")
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
        """
        self._check_params()
        rng = np.random.default_rng(self.random_state)
        specs = _specs(self.features)
        table_input = not isinstance(X, np.ndarray)
        if isinstance(X, np.ndarray):
            xa = mx.array_matrix(X, specs)
        else:
            xa = mx.analysis_matrix(X, specs)
        n = len(xa)
        if n == 0:
            raise InputError("CohortModel.fit: the feature table has no rows")
        n_events = self._n_events(X) if table_input else None
        enough_events = (
            ~(n_events < self.min_events) if n_events is not None else np.ones(n, dtype=bool)
        )
        keep, dropped = self._usable_features(xa[enough_events], specs)
        self.dropped_features_ = dropped
        specs = tuple(s for s, k in zip(specs, keep, strict=True) if k)
        xa = xa[:, keep]
        self.features_ = specs
        self.feature_names_in_ = np.array([s.column for s in specs], dtype=object)
        self.n_features_in_ = len(specs)
        sufficient = enough_events & self._observed_enough(xa)
        if not sufficient.any():
            raise InputError(
                f"CohortModel.fit: no learner has >= {self.min_events} events and values for "
                f">= {self.min_observed_share:.0%} of the features"
            )
        self.scaler_ = RobustScaler.fit(xa[sufficient], self.clip_quantile)
        z = self.scaler_.transform(xa[sufficient])
        complete = np.isfinite(z).all(axis=1)
        zc = z[complete]
        k_floor = self.n_cohorts or self.selection.k_min
        if len(zc) <= k_floor:
            raise InputError(
                f"CohortModel.fit: {len(zc)} learners have every feature; at least "
                f"{k_floor + 1} are needed for {k_floor} cohorts"
            )
        seed = int(rng.integers(2**31))
        if self.n_cohorts is None:
            self.selection_ = choose_n_cohorts(zc, self.selection, seed)
            k = self.selection_.chosen_k
        else:
            self.selection_ = None
            k = int(self.n_cohorts)
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
        idx, d2 = nearest_centroid(z, centroids)
        self.n_iter_ = int(km.n_iter_) + n_iter
        self.inertia_ = float(d2.sum())

        # ids: carried from the previous model, else 1..k by decreasing size
        self.drift_ = None
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
        id_of_row = np.asarray(ids, dtype=np.int64)
        labels = np.full(n, INSUFFICIENT_COHORT, dtype=np.int64)
        labels[sufficient] = id_of_row[idx]
        self.labels_ = labels
        partial = np.zeros(n, dtype=bool)
        partial[np.flatnonzero(sufficient)[~complete]] = True
        self.n_learners_ = n
        self.n_insufficient_ = int((~sufficient).sum())
        self.feature_run_ = feature_run

        # quality
        self.quality_ = self._quality(z[complete], labels[sufficient][complete], k, rng)
        z_all = self.scaler_.transform(xa)
        outcome_arrays = self._outcome_arrays(X, outcomes) if outcomes is not None else {}
        if outcome_arrays:
            assoc = tuple(
                outcome_association(name, labels, y_arr, z_all, seed=self.random_state)
                for name, y_arr in outcome_arrays.items()
                if name in ("completed", "churned") and np.isfinite(y_arr).any()
            )
            self.quality_ = replace(self.quality_, outcomes=assoc)

        # profiles, names, cards
        prof_specs, prof_x = self._profile_matrix(X, xa, specs, table_input)
        self.profile_features_ = prof_specs
        moments = population_moments(prof_x)
        self.population_moments_ = {
            s.column: (float(moments[0][j]), float(moments[1][j])) for j, s in enumerate(prof_specs)
        }
        all_ids = [INSUFFICIENT_COHORT, *self.cohort_ids_.tolist()]
        profiles = profile_cohorts(
            labels, all_ids, prof_x, prof_specs, moments, seed=self.random_state
        )
        affinity_varies = self._affinity_varies(X, prof_specs, moments[1])
        self.archetypes_ = label_archetypes(
            labels,
            all_ids,
            partial,
            profiles,
            outcome_estimates(labels, all_ids, outcome_arrays) if outcome_arrays else None,
            affinity_varies=affinity_varies,
        )
        if isinstance(X, np.ndarray):  # array input: back from the analysis scale
            raw_prof = np.column_stack(
                [mx.invert_transform(prof_x[:, j], s.transform) for j, s in enumerate(prof_specs)]
            )
        else:
            raw_prof = mx.raw_matrix(X, prof_specs)
        self.reference_bins_ = {
            s.column: reference_bins(raw_prof[:, j]) for j, s in enumerate(prof_specs)
        }
        self.matches_ = tuple(matches)
        self.retired_ids_ = tuple(retired)
        self._fast_path = None
        self.distance_p99_ = training_distance_p99(self, X)
        if previous is not None:
            self.drift_ = drift_report(previous, self, X, previous_assignments)
        return self

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

    def _affinity_varies(
        self,
        X: mx.FeatureTable | np.ndarray,  # noqa: N803
        prof_specs: Sequence[FeatureSpec],
        sd: np.ndarray,
    ) -> bool:
        """Whether domain affinity means something here: the effective number of domains is
        profiled and varies, and (when the table says) some learner uses two or more domains."""
        cols = [s.column for s in prof_specs]
        col = "affinity_effective_domains"
        if col not in cols or col in self.dropped_features_:
            return False
        if not sd[cols.index(col)] > 1e-9:
            return False
        if isinstance(X, np.ndarray) or "affinity_breadth" not in mx.column_names(X):
            return True
        breadth = mx.float_column(X, "affinity_breadth")
        return bool(np.nanmax(breadth, initial=0.0) >= 2)

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

    def _quality(
        self, zc: np.ndarray, labels_c: np.ndarray, k: int, rng: np.random.Generator
    ) -> CohortQuality:
        """Silhouette, Davies–Bouldin and bootstrap stability on the complete learners."""
        m = min(self.selection.silhouette_sample_size, len(zc))
        rows = rng.choice(len(zc), m, replace=False)
        sil = silhouette_values(sample_distances(zc[rows]), labels_c[rows])
        db = davies_bouldin(zc, labels_c, seed=self.random_state)
        chosen = (
            next(c for c in self.selection_.candidates if c.chosen)
            if self.selection_ is not None
            else None
        )
        if chosen is not None:
            stab_mean, stab_min = chosen.stability_ari, chosen.stability_ari_min
        else:
            s = min(self.selection.sample_size, len(zc))
            sample = zc[rng.choice(len(zc), s, replace=False)]
            aris = bootstrap_stability(
                sample,
                k,
                self.selection.n_bootstrap,
                self.selection.sweep_n_init,
                int(rng.integers(2**31)),
            )
            stab_mean, stab_min = float(aris.mean()), float(aris.min())
        return CohortQuality(
            silhouette=float(sil.mean()),
            silhouette_se=float(sil.std(ddof=1) / math.sqrt(m)) if m > 1 else math.nan,
            silhouette_n=m,
            davies_bouldin=db,
            stability_ari=stab_mean,
            stability_ari_min=stab_min,
            n_bootstrap=self.selection.n_bootstrap,
        )

    def _profile_matrix(
        self,
        X: mx.FeatureTable | np.ndarray,  # noqa: N803
        xa: np.ndarray,
        specs: tuple[FeatureSpec, ...],
        table_input: bool,
    ) -> tuple[tuple[FeatureSpec, ...], np.ndarray]:
        """Profile features present in ``X`` (clustered ones appended if not listed)."""
        if not table_input:
            return specs, xa
        names = set(mx.column_names(X))
        prof = [s for s in _specs(self.profile_features) if s.column in names]
        listed = {s.column for s in prof}
        prof += [s for s in specs if s.column not in listed]
        return tuple(prof), mx.analysis_matrix(X, prof)

    @staticmethod
    def _outcome_arrays(
        X: mx.FeatureTable | np.ndarray,  # noqa: N803
        outcomes: pa.Table,
    ) -> dict[str, np.ndarray]:
        """Outcome columns aligned with the rows of ``X`` (NaN where unknown)."""
        if isinstance(X, np.ndarray) or "learner_id" not in mx.column_names(X):
            raise InputError("outcomes need a feature table with a learner_id column")
        if "learner_id" not in outcomes.column_names:
            raise InputError("outcomes table has no learner_id column")
        ids = pa.array(mx.string_column(X, "learner_id"), pa.string())
        pos = pc.index_in(ids, value_set=outcomes["learner_id"].cast(pa.string()))
        out: dict[str, np.ndarray] = {}
        for name in OUTCOME_COLUMNS:
            if name not in outcomes.column_names:
                continue
            col = outcomes[name].combine_chunks().cast(pa.float64())
            taken = col.take(pos)
            out[name] = np.asarray(
                pc.fill_null(taken, np.nan).to_numpy(zero_copy_only=False), dtype=np.float64
            )
        return out

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


def drift_report(
    previous: CohortModel,
    current: CohortModel,
    X: mx.FeatureTable | np.ndarray,  # noqa: N803
    previous_assignments: pa.Table | None = None,
) -> DriftReport:
    """What changed from ``previous`` to ``current`` on the learners of ``X``.

    Per-feature PSI of ``X`` against the previous training data, PSI of the cohort shares
    (previous training shares vs ``current`` on ``X``, by stable id), the share of learners
    whose cohort id changed (against ``previous_assignments`` — a ``learner_id``,
    ``cohort_id`` table — when given, else against ``previous.predict(X)``) and why: a
    learner the previous model itself now puts elsewhere changed by *feature change*, the
    others by *refit*; and the centroid matches recorded when ``current`` was fitted with
    ``previous``.
    """
    labels = current.predict(X)
    columns: dict[str, np.ndarray] = {}
    if not isinstance(X, np.ndarray):
        names = set(mx.column_names(X))
        for col in previous.reference_bins_:
            if col in names:
                columns[col] = mx.float_column(X, col)
    prev_shares = {c: a.share for c, a in previous.archetypes_.items()}
    cur_ids, cur_counts = np.unique(labels, return_counts=True)
    cur_shares = {int(i): float(c) / len(labels) for i, c in zip(cur_ids, cur_counts, strict=True)}
    for cid in [INSUFFICIENT_COHORT, *current.cohort_ids_.tolist()]:
        cur_shares.setdefault(int(cid), 0.0)
    reapplied = previous.predict(X)  # the previous model on the current features
    if previous_assignments is not None and not isinstance(X, np.ndarray):
        ids = pa.array(mx.string_column(X, "learner_id"), pa.string())
        value_set = previous_assignments["learner_id"].cast(pa.string())
        pos = pc.index_in(ids, value_set=value_set)
        found = np.asarray(pc.is_valid(pos).to_numpy(zero_copy_only=False), dtype=bool)
        taken = previous_assignments["cohort_id"].take(pos.filter(pc.is_valid(pos)))
        prev_labels = np.asarray(taken.to_numpy(), dtype=np.int64)
        frac, trans = changed_share(prev_labels, labels[found])
        n_cmp, basis = int(found.sum()), "assignments"
        changed = prev_labels != labels[found]
        by_features = int((changed & (reapplied[found] != prev_labels)).sum())
        n_new = int((~found).sum())
    else:
        frac, trans = changed_share(reapplied, labels)
        n_cmp, basis = len(labels), "reassignment"
        changed = reapplied != labels
        by_features, n_new = 0, 0
    matches = getattr(current, "matches_", ())
    carried = [m for m in matches if m.carried]
    shift = float(np.mean([m.distance for m in carried])) if carried else math.nan
    return DriftReport(
        previous_run=previous.feature_run_,
        matches=tuple(matches),
        retired_ids=tuple(getattr(current, "retired_ids_", ())),
        features=feature_drift(previous.reference_bins_, columns),
        cohort_share_psi=share_psi(prev_shares, cur_shares),
        previous_shares=prev_shares,
        current_shares=cur_shares,
        changed_share=frac,
        n_compared=n_cmp,
        changed_basis=basis,
        mean_centroid_shift=shift,
        transitions=trans,
        n_changed=int(changed.sum()),
        changed_by_features=by_features,
        changed_by_refit=int(changed.sum()) - by_features,
        n_new=n_new,
    )
