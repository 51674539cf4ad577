"""Out-of-distribution check: are these learners like the ones a cohort model was fitted on?

Two numbers, both against statistics stored in the model artifact at fit time:

* **distance**: the share of assessed learners (those the model assigns to a cohort, not to
  the insufficient-data cohort) whose distance to the *nearest* centre (scaled units, not
  winsorized) exceeds the 99th percentile of the same distance over the training learners
  (``distance_p99_``). On data
  like the training data about 1 % are beyond it; a model applied to another population puts
  many more there, even when it still hands every learner a cohort;
* **per-feature PSI** of the features against the training deciles (``reference_bins_``),
  the population stability index with the usual reading (< 0.10 stable, 0.10-0.25 watch,
  > 0.25 shift).

A warning is raised when the share beyond the distance exceeds ``max_share`` (10 % by
default). ``ood_summary(model, features)`` is the one entry point; the CLI (``assign``), the
report and the service call it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cohortlens.cohorts import _matrix as mx
from cohortlens.cohorts.matching import FeatureDrift, feature_drift
from cohortlens.errors import InputError

if TYPE_CHECKING:
    from cohortlens.cohorts.model import CohortModel

#: Default share of learners beyond the training 99th-percentile distance that warns.
DEFAULT_MAX_SHARE = 0.10


@dataclass(frozen=True)
class OODSummary:
    """How far a set of learners lies from a model's training population.

    Attributes:
        n_learners: learners given.
        n_assessed: learners assigned to a cohort (the distance is defined for them).
        n_beyond: assessed learners farther from every centre than ``distance_p99``.
        share_beyond: ``n_beyond / n_assessed`` (NaN when nobody is assessed or the model
            predates the statistic).
        distance_p99: the model's training 99th-percentile distance to the nearest centre.
        max_share: the share above which ``warning`` is set.
        features: per-feature PSI against the training deciles.
        warning: whether the share beyond exceeds ``max_share``.
        message: one line for a person (None without a warning).
    """

    n_learners: int
    n_assessed: int
    n_beyond: int
    share_beyond: float
    distance_p99: float
    max_share: float
    features: tuple[FeatureDrift, ...]
    warning: bool
    message: str | None

    def shifted_features(self) -> list[str]:
        """Features whose PSI reads ``shift`` (> 0.25), largest first."""
        shifted = [f for f in self.features if f.status == "shift"]
        return [f.column for f in sorted(shifted, key=lambda f: -f.psi)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN as None)."""

        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "n_learners": self.n_learners,
            "n_assessed": self.n_assessed,
            "n_beyond": self.n_beyond,
            "share_beyond": num(self.share_beyond),
            "distance_p99": num(self.distance_p99),
            "max_share": self.max_share,
            "features": [{**f.to_dict(), "psi": num(f.psi)} for f in self.features],
            "warning": self.warning,
            "message": self.message,
        }


def nearest_distances(model: CohortModel, features: mx.FeatureTable | np.ndarray) -> np.ndarray:
    """Distance of each learner to its nearest centre, in the model's scaled units but
    **without winsorizing** (assignment clips each feature to its training range, which would
    hide how far out a learner is), over the observed features rescaled by
    ``sqrt(d / d_observed)`` as :meth:`CohortModel.transform`; NaN for learners the model puts
    in the insufficient-data cohort."""
    from cohortlens.cohorts.model import nearest_centroid
    from cohortlens.cohorts.params import INSUFFICIENT_COHORT

    if isinstance(features, np.ndarray):
        xa = mx.array_matrix(features, model.features_)
    else:
        xa = mx.analysis_matrix(features, model.features_)
    z = (xa - model.scaler_.center) / model.scaler_.scale
    _, d2 = nearest_centroid(z, model.cluster_centers_)
    n_obs = np.isfinite(z).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = np.sqrt(d2 * z.shape[1] / n_obs)
    assessed = (model.predict(features) != INSUFFICIENT_COHORT) & (n_obs > 0)
    return np.where(assessed, dist, np.nan)


def training_distance_p99(model: CohortModel, features: mx.FeatureTable | np.ndarray) -> float:
    """The 99th percentile of the nearest-centre distance over ``features`` (the training
    learners, at fit time); NaN when no learner was assigned to a cohort."""
    d = nearest_distances(model, features)
    d = d[np.isfinite(d)]
    return float(np.quantile(d, 0.99)) if len(d) else math.nan


def ood_summary(
    model: CohortModel,
    features: mx.FeatureTable | np.ndarray,
    *,
    max_share: float = DEFAULT_MAX_SHARE,
) -> OODSummary:
    """Share of learners beyond the training 99th-percentile distance, and feature PSI.

    Raises:
        InputError: ``max_share`` outside [0, 1].
    """
    if not 0.0 <= max_share <= 1.0:
        raise InputError(f"max_share == {max_share!r}, must be in [0, 1]")
    d = nearest_distances(model, features)
    assessed = np.isfinite(d)
    p99 = float(getattr(model, "distance_p99_", math.nan))
    n_assessed = int(assessed.sum())
    if math.isfinite(p99) and n_assessed:
        n_beyond = int((d[assessed] > p99).sum())
        share = n_beyond / n_assessed
    else:
        n_beyond, share = 0, math.nan
    columns: dict[str, np.ndarray] = {}
    if not isinstance(features, np.ndarray):
        names = set(mx.column_names(features))
        for col in model.reference_bins_:
            if col in names:
                columns[col] = mx.float_column(features, col)
    drift = feature_drift(model.reference_bins_, columns)
    warn = math.isfinite(share) and share > max_share
    message = None
    if warn:
        shifted = [f for f in drift if f.status == "shift"]
        detail = ", ".join(
            f"{f.column} (PSI {f.psi:.2f})" for f in sorted(shifted, key=lambda f: -f.psi)[:4]
        )
        message = (
            f"{share:.1%} of {n_assessed:,} learners are farther from every cohort centre than "
            f"99 % of the model's training learners (threshold {max_share:.0%}): these learners "
            "differ from the ones the model was fitted on, so their cohorts may mean little"
            + (f"; shifted features: {detail}" if detail else "")
        )
    return OODSummary(
        n_learners=len(d),
        n_assessed=n_assessed,
        n_beyond=n_beyond,
        share_beyond=share,
        distance_p99=p99,
        max_share=max_share,
        features=drift,
        warning=warn,
        message=message,
    )
