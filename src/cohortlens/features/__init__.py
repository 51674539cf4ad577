"""Per-learner features: learning velocity, domain affinity, retention strength.

Public API: the params dataclasses, :func:`compute_features` (in memory),
:func:`feature_kernel` (one partition, for distributed engines), :func:`build_features`
(partitioned, parallel, streaming from Parquet), :data:`FEATURE_SCHEMA` and :func:`stats_of`
(the global statistics a stored feature table carries).
Formulas, defaults and sources: docs/FEATURES.md.
"""

from cohortlens.features._hash import learner_hash, partition_of
from cohortlens.features._stats_io import stats_of
from cohortlens.features.engine import (
    FEATURE_SCHEMA,
    compute_features,
    compute_global_stats,
    feature_kernel,
)
from cohortlens.features.params import (
    AffinityParams,
    FeatureParams,
    RetentionParams,
    VelocityParams,
)
from cohortlens.features.pipeline import build_features, write_features
from cohortlens.features.stats import GlobalStats, ItemStats, RetentionPopulation

__all__ = [
    "FEATURE_SCHEMA",
    "AffinityParams",
    "FeatureParams",
    "GlobalStats",
    "ItemStats",
    "RetentionParams",
    "RetentionPopulation",
    "VelocityParams",
    "build_features",
    "compute_features",
    "compute_global_stats",
    "feature_kernel",
    "learner_hash",
    "partition_of",
    "stats_of",
    "write_features",
]
