"""Learner cohorts: k-means on robustly scaled features, archetype names, stable ids.

Public API: :class:`CohortModel` (scikit-learn conventions; ``to_dict``/``from_dict`` give
the versioned artifact), the diagnostics as functions (:func:`cohort_quality`,
:func:`describe_cohorts`, :func:`drift_report`, :func:`ood_summary`), :func:`render_report`
(one self-contained HTML file), the parameter dataclasses and the result records. Method, rules and defaults:
docs/COHORTS.md.
"""

from cohortlens.cohorts.archetypes import Archetype, FeatureProfile, name_cohort
from cohortlens.cohorts.diagnostics import CohortDescription, cohort_quality, describe_cohorts
from cohortlens.cohorts.matching import CohortMatch, DriftReport, FeatureDrift, psi
from cohortlens.cohorts.model import CohortModel, drift_report, nearest_centroid
from cohortlens.cohorts.ood import DEFAULT_MAX_SHARE, OODSummary, ood_summary
from cohortlens.cohorts.params import (
    DEFAULT_FEATURES,
    DEFAULT_PROFILE_FEATURES,
    INSUFFICIENT_COHORT,
    INSUFFICIENT_NAME,
    SCHEMA_VERSION,
    FeatureSpec,
    SelectionParams,
)
from cohortlens.cohorts.quality import CohortQuality, Estimate, OutcomeAssociation
from cohortlens.cohorts.report import render_report, write_report
from cohortlens.cohorts.selection import KCandidate, Selection, choose_n_cohorts

__all__ = [
    "DEFAULT_FEATURES",
    "DEFAULT_MAX_SHARE",
    "DEFAULT_PROFILE_FEATURES",
    "INSUFFICIENT_COHORT",
    "INSUFFICIENT_NAME",
    "SCHEMA_VERSION",
    "Archetype",
    "CohortDescription",
    "CohortMatch",
    "CohortModel",
    "CohortQuality",
    "DriftReport",
    "Estimate",
    "FeatureDrift",
    "FeatureProfile",
    "FeatureSpec",
    "KCandidate",
    "OODSummary",
    "OutcomeAssociation",
    "Selection",
    "SelectionParams",
    "choose_n_cohorts",
    "cohort_quality",
    "describe_cohorts",
    "drift_report",
    "name_cohort",
    "nearest_centroid",
    "ood_summary",
    "psi",
    "render_report",
    "write_report",
]
