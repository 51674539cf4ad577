"""Parameters of cohort discovery: which features, how they are transformed, how k is chosen.

Everything here is a frozen dataclass or a constant, so a fitted model can store exactly what
produced it (``CohortModel.to_dict``). Defaults and their justification: docs/COHORTS.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from cohortlens.errors import InputError

#: Version of the ``CohortModel.to_dict`` layout; bumped on any incompatible change.
SCHEMA_VERSION = 1

#: Stable id of the "insufficient data" cohort (learners with too little activity to type).
INSUFFICIENT_COHORT = 0

#: Name of the "insufficient data" cohort.
INSUFFICIENT_NAME = "insufficient data"

Transform = Literal["identity", "log", "logit"]
_TRANSFORMS: tuple[str, ...] = ("identity", "log", "logit")


@dataclass(frozen=True)
class FeatureSpec:
    """One column of the feature table and the scale it is compared on.

    Attributes:
        column: column of the feature table (``cohortlens.features.FEATURE_SCHEMA``).
        transform: ``identity``; ``log`` (natural log, values floored at ``1e-6``) for
            positive, right-skewed quantities (rates, half-lives, counts); ``logit`` (values
            clipped to ``[1e-3, 1 - 1e-3]``) for shares that crowd against 0 or 1.
    """

    column: str
    transform: Transform = "identity"

    def __post_init__(self) -> None:
        if not self.column:
            raise InputError("feature spec: column must not be empty")
        if self.transform not in _TRANSFORMS:
            raise InputError(
                f"feature spec {self.column!r}: transform == {self.transform!r}, "
                f"must be one of {', '.join(_TRANSFORMS)}"
            )

    def to_dict(self) -> dict[str, str]:
        """Plain-dict form."""
        return {"column": self.column, "transform": self.transform}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> FeatureSpec:
        """Inverse of :meth:`to_dict`."""
        return FeatureSpec(str(d["column"]), d.get("transform", "identity"))


#: Features k-means clusters on by default: three behavioural axes, two readings each, so
#: each axis weighs the same: activity (events per active week, log; weeks with activity),
#: focus (effective number of domains, log, i.e. the entropy; top domain's share), memory
#: (half-life, log; recall probability 7 days after a review). Velocity is profiled, not
#: clustered (docs/COHORTS.md).
DEFAULT_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("engagement_events_per_week", "log"),
    FeatureSpec("active_weeks", "identity"),
    FeatureSpec("affinity_effective_domains", "log"),
    FeatureSpec("affinity_top_share", "identity"),
    FeatureSpec("half_life_days", "log"),
    FeatureSpec("p_recall_7d", "identity"),
)

#: Features described on every cohort card (centroid in original units and z-score) and used
#: by the naming rule; they need not be clustered on.
DEFAULT_PROFILE_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("velocity_logit_per_week", "identity"),
    FeatureSpec("ability_logit", "identity"),
    FeatureSpec("engagement_events_per_week", "log"),
    FeatureSpec("active_weeks", "identity"),
    FeatureSpec("affinity_effective_domains", "identity"),
    FeatureSpec("affinity_top_share", "identity"),
    FeatureSpec("half_life_days", "log"),
    FeatureSpec("p_recall_7d", "identity"),
    FeatureSpec("reuse_rate", "identity"),
    FeatureSpec("n_events", "log"),
)


@dataclass(frozen=True)
class SelectionParams:
    """How the number of cohorts is chosen when it is not given.

    For every k in ``[k_min, k_max]``, k-means (``sweep_n_init`` initialisations) is fitted on a
    random sample of ``sample_size`` complete learners; the silhouette is computed on
    ``silhouette_sample_size`` of them (one distance matrix shared by every k), and stability
    is the mean adjusted Rand index between the sample fit and ``n_bootstrap`` fits on
    bootstrap resamples, all labelling the same learners. The chosen k is the smallest k
    whose silhouette is within one standard error of the best among the stable ks (mean ARI
    >= ``min_stability_ari``); if no k is stable, the most stable one.

    Attributes:
        k_min, k_max: the range searched (inclusive).
        sample_size: learners each sweep fit uses.
        silhouette_sample_size: learners the silhouette is computed on.
        n_bootstrap: bootstrap refits per k for the stability check.
        min_stability_ari: a k is stable when its mean bootstrap ARI reaches this.
        sweep_n_init: k-means initialisations per sweep fit (the final fit uses ``n_init``).
    """

    k_min: int = 3
    k_max: int = 12
    sample_size: int = 20_000
    silhouette_sample_size: int = 4_000
    n_bootstrap: int = 4
    min_stability_ari: float = 0.9
    sweep_n_init: int = 3

    def __post_init__(self) -> None:
        problems = []
        if self.k_min < 2:
            problems.append(f"k_min == {self.k_min}, must be >= 2")
        if self.k_max < self.k_min:
            problems.append(f"k_max == {self.k_max}, must be >= k_min ({self.k_min})")
        if self.sample_size < 100:
            problems.append(f"sample_size == {self.sample_size}, must be >= 100")
        if self.silhouette_sample_size < 50:
            problems.append(
                f"silhouette_sample_size == {self.silhouette_sample_size}, must be >= 50"
            )
        if self.n_bootstrap < 1:
            problems.append(f"n_bootstrap == {self.n_bootstrap}, must be >= 1")
        if not 0.0 <= self.min_stability_ari <= 1.0:
            problems.append(f"min_stability_ari == {self.min_stability_ari}, must be in [0, 1]")
        if self.sweep_n_init < 1:
            problems.append(f"sweep_n_init == {self.sweep_n_init}, must be >= 1")
        if problems:
            raise InputError("selection parameters: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form."""
        return asdict(self)
