"""Diagnostics of a fitted :class:`~cohortlens.cohorts.model.CohortModel`, as functions.

``CohortModel.fit`` only validates, seeds, iterates (scaling, k, Lloyd, k-POD) and sets the
model's learned state; what is *said about* the model is computed here, by functions the fit,
the report and the CLI call on a model and a feature table:

* :func:`cohort_quality` — silhouette on a sample, Davies–Bouldin, bootstrap stability, and
  (with outcomes) the cross-validated association of cohort and outcome;
* :func:`describe_cohorts` — per-cohort profiles, archetype names and cards, population
  moments and the training deciles kept for drift and out-of-distribution checks;
* :func:`drift_report` — what changed from a previous model (PSI, shares, who changed cohort
  and why);
* :func:`~cohortlens.cohorts.ood.ood_summary` — how far new learners lie from the training
  population.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cohortlens.cohorts import _matrix as mx
from cohortlens.cohorts._kernels import nearest_observed
from cohortlens.cohorts.archetypes import (
    Archetype,
    label_archetypes,
    outcome_estimates,
    population_moments,
    profile_cohorts,
)
from cohortlens.cohorts.matching import (
    DriftReport,
    changed_share,
    feature_drift,
    reference_bins,
    share_psi,
)
from cohortlens.cohorts.params import INSUFFICIENT_COHORT, FeatureSpec
from cohortlens.cohorts.quality import (
    CohortQuality,
    bootstrap_stability,
    davies_bouldin,
    outcome_association,
    sample_distances,
    silhouette_values,
)
from cohortlens.errors import InputError

if TYPE_CHECKING:
    from cohortlens.cohorts.model import CohortModel

#: Outcome columns read from an outcomes table (OUTCOME_SCHEMA).
OUTCOME_COLUMNS: tuple[str, ...] = ("completed", "churned", "revenue")


@dataclass(frozen=True)
class _Scaled:
    """A feature table in a fitted model's space."""

    xa: np.ndarray  # analysis scale (transformed), clustering features
    z: np.ndarray  # scaled (winsorized)
    labels: np.ndarray  # cohort ids, INSUFFICIENT_COHORT for the insufficient learners
    sufficient: np.ndarray
    complete: np.ndarray  # sufficient and every clustering feature observed


def _scaled(model: CohortModel, X: mx.FeatureTable | np.ndarray) -> _Scaled:  # noqa: N803
    if isinstance(X, np.ndarray):
        xa = mx.array_matrix(X, model.features_)
    else:
        xa = mx.analysis_matrix(X, model.features_)
    z_all, sufficient = model._scaled(X)
    idx, _ = nearest_observed(
        np.ascontiguousarray(z_all, dtype=np.float64),
        np.ascontiguousarray(model.cluster_centers_, dtype=np.float64),
    )
    labels = np.where(sufficient, model.cohort_ids_[idx], INSUFFICIENT_COHORT)
    complete = sufficient & np.isfinite(z_all).all(axis=1)
    return _Scaled(xa, z_all, labels, sufficient, complete)


def outcome_arrays(X: mx.FeatureTable | np.ndarray, outcomes: pa.Table) -> dict[str, np.ndarray]:  # noqa: N803
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


def cohort_quality(
    model: CohortModel,
    X: mx.FeatureTable | np.ndarray,  # noqa: N803
    *,
    outcomes: pa.Table | None = None,
    rng: np.random.Generator | None = None,
) -> CohortQuality:
    """Silhouette (on a sample), Davies–Bouldin and bootstrap stability on the learners of
    ``X`` with every clustering feature, and with ``outcomes`` the cross-validated logistic
    association of cohort id and each binary outcome.

    The stability comes from the k sweep when the model chose k (``selection_``), else from
    ``n_bootstrap`` refits on a sample. ``rng`` defaults to one seeded by ``random_state``.
    """
    model._check_fitted()
    rng = rng if rng is not None else np.random.default_rng(model.random_state)
    sc = _scaled(model, X)
    zc, labels_c = sc.z[sc.complete], sc.labels[sc.complete]
    k = model.n_cohorts_
    sel = model.selection
    m = min(sel.silhouette_sample_size, len(zc))
    rows = rng.choice(len(zc), m, replace=False)
    sil = silhouette_values(sample_distances(zc[rows]), labels_c[rows])
    db = davies_bouldin(zc, labels_c, seed=model.random_state)
    chosen = (
        next(c for c in model.selection_.candidates if c.chosen)
        if model.selection_ is not None
        else None
    )
    if chosen is not None:
        stab_mean, stab_min = chosen.stability_ari, chosen.stability_ari_min
    else:
        s = min(sel.sample_size, len(zc))
        sample = zc[rng.choice(len(zc), s, replace=False)]
        aris = bootstrap_stability(
            sample, k, sel.n_bootstrap, sel.sweep_n_init, int(rng.integers(2**31))
        )
        stab_mean, stab_min = float(aris.mean()), float(aris.min())
    assoc: tuple = ()
    if outcomes is not None:
        arrays = outcome_arrays(X, outcomes)
        z_all = model.scaler_.transform(sc.xa)
        assoc = tuple(
            outcome_association(name, sc.labels, y_arr, z_all, seed=model.random_state)
            for name, y_arr in arrays.items()
            if name in ("completed", "churned") and np.isfinite(y_arr).any()
        )
    return CohortQuality(
        silhouette=float(sil.mean()),
        silhouette_se=float(sil.std(ddof=1) / math.sqrt(m)) if m > 1 else math.nan,
        silhouette_n=m,
        davies_bouldin=db,
        stability_ari=stab_mean,
        stability_ari_min=stab_min,
        n_bootstrap=sel.n_bootstrap,
        outcomes=assoc,
    )


@dataclass(frozen=True)
class CohortDescription:
    """Profiles and names of a model's cohorts on a feature table.

    Attributes:
        profile_features: the profiled columns (listed ones present in ``X``, then the
            clustering features not listed).
        population_moments: column -> (mean, sd) on the analysis scale.
        archetypes: cohort id -> name and card (insufficient-data cohort included).
        reference_bins: column -> training deciles and shares (drift and OOD reference).
    """

    profile_features: tuple[FeatureSpec, ...]
    population_moments: dict[str, tuple[float, float]]
    archetypes: dict[int, Archetype]
    reference_bins: dict[str, dict[str, list[float]]]


def _profile_matrix(
    model: CohortModel,
    X: mx.FeatureTable | np.ndarray,  # noqa: N803
    xa: np.ndarray,
) -> tuple[tuple[FeatureSpec, ...], np.ndarray]:
    """Profile features present in ``X`` (clustered ones appended if not listed)."""
    specs = model.features_
    if isinstance(X, np.ndarray):
        return specs, xa
    from cohortlens.cohorts.model import _specs

    names = set(mx.column_names(X))
    prof = [s for s in _specs(model.profile_features) if s.column in names]
    listed = {s.column for s in prof}
    prof += [s for s in specs if s.column not in listed]
    return tuple(prof), mx.analysis_matrix(X, prof)


def _affinity_varies(
    model: CohortModel,
    X: mx.FeatureTable | np.ndarray,  # noqa: N803
    prof_specs: Sequence[FeatureSpec],
    sd: np.ndarray,
) -> bool:
    """Whether domain affinity means something here: the effective number of domains is
    profiled and varies, and (when the table says) some learner uses two or more domains."""
    cols = [s.column for s in prof_specs]
    col = "affinity_effective_domains"
    if col not in cols or col in model.dropped_features_:
        return False
    if not sd[cols.index(col)] > 1e-9:
        return False
    if isinstance(X, np.ndarray) or "affinity_breadth" not in mx.column_names(X):
        return True
    breadth = mx.float_column(X, "affinity_breadth")
    return bool(np.nanmax(breadth, initial=0.0) >= 2)


def describe_cohorts(
    model: CohortModel,
    X: mx.FeatureTable | np.ndarray,  # noqa: N803
    *,
    outcomes: pa.Table | None = None,
) -> CohortDescription:
    """Profiles, archetype names and cards of the model's cohorts over the learners of ``X``
    (with ``outcomes``: outcome rates with 95 % intervals on the cards)."""
    model._check_fitted()
    sc = _scaled(model, X)
    prof_specs, prof_x = _profile_matrix(model, X, sc.xa)
    moments = population_moments(prof_x)
    all_ids = [INSUFFICIENT_COHORT, *model.cohort_ids_.tolist()]
    profiles = profile_cohorts(
        sc.labels, all_ids, prof_x, prof_specs, moments, seed=model.random_state
    )
    arrays = outcome_arrays(X, outcomes) if outcomes is not None else {}
    archetypes = label_archetypes(
        sc.labels,
        all_ids,
        sc.sufficient & ~sc.complete,
        profiles,
        outcome_estimates(sc.labels, all_ids, arrays) if arrays else None,
        affinity_varies=_affinity_varies(model, X, prof_specs, moments[1]),
    )
    if isinstance(X, np.ndarray):  # array input: back from the analysis scale
        raw_prof = np.column_stack(
            [mx.invert_transform(prof_x[:, j], s.transform) for j, s in enumerate(prof_specs)]
        )
    else:
        raw_prof = mx.raw_matrix(X, prof_specs)
    return CohortDescription(
        profile_features=prof_specs,
        population_moments={
            s.column: (float(moments[0][j]), float(moments[1][j])) for j, s in enumerate(prof_specs)
        },
        archetypes=archetypes,
        reference_bins={s.column: reference_bins(raw_prof[:, j]) for j, s in enumerate(prof_specs)},
    )


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
