"""A/B experiments: deterministic assignment and trustworthy analysis.

The public surface is re-exported here; the submodules hold the details:

* :mod:`~cohortlens.experiments.assignment`: salted hash buckets, variants, layers, exposures;
* :mod:`~cohortlens.experiments.stats`: :class:`SufficientStats`, the summable records;
* :mod:`~cohortlens.experiments.reduce`: per-learner data -> statistics in DuckDB;
* :mod:`~cohortlens.experiments.serialize`: the JSON statistics file;
* :mod:`~cohortlens.experiments.analysis`: :func:`compare` and :func:`analyze`;
* :mod:`~cohortlens.experiments.cuped`, :mod:`~cohortlens.experiments.sequential`,
  :mod:`~cohortlens.experiments.srm`, :mod:`~cohortlens.experiments.multiplicity`,
  :mod:`~cohortlens.experiments.power`: the statistical building blocks;
* :mod:`~cohortlens.experiments.report`: the HTML report;
* :mod:`~cohortlens.experiments.simulation`: simulated A/B and A/A tests with known truth;
* :mod:`~cohortlens.experiments.calibration`: A/A, peeking and CUPED validity checks.

Formulas, conventions and status codes: docs/EXPERIMENTS.md.
"""

from cohortlens.experiments.analysis import analyze, compare
from cohortlens.experiments.assignment import (
    ExperimentDesign,
    Layer,
    Variant,
    assign,
    bucket_of,
    buckets,
    check_layer,
    exposure_records,
)
from cohortlens.experiments.errors import (
    AnalysisStatus,
    ExperimentInputError,
    ReportStatus,
    Verdict,
)
from cohortlens.experiments.multiplicity import adjust_bh, adjust_holm
from cohortlens.experiments.power import PowerDesign, minimum_detectable_effect, power, sample_size
from cohortlens.experiments.reduce import reduce_to_stats
from cohortlens.experiments.results import EffectEstimate, ExperimentReport, SequentialLook
from cohortlens.experiments.sequential import SequentialParams
from cohortlens.experiments.serialize import StatsFile, read_stats_json, write_stats_json
from cohortlens.experiments.spec import AnalysisConfig, MetricKind, MetricRole, MetricSpec
from cohortlens.experiments.srm import SrmResult, check_srm
from cohortlens.experiments.stats import ExperimentStats, SufficientStats

__all__ = [
    "AnalysisConfig",
    "AnalysisStatus",
    "EffectEstimate",
    "ExperimentDesign",
    "ExperimentInputError",
    "ExperimentReport",
    "ExperimentStats",
    "Layer",
    "MetricKind",
    "MetricRole",
    "MetricSpec",
    "PowerDesign",
    "ReportStatus",
    "SequentialLook",
    "SequentialParams",
    "SrmResult",
    "StatsFile",
    "SufficientStats",
    "Variant",
    "Verdict",
    "adjust_bh",
    "adjust_holm",
    "analyze",
    "assign",
    "bucket_of",
    "buckets",
    "check_layer",
    "check_srm",
    "compare",
    "exposure_records",
    "minimum_detectable_effect",
    "power",
    "read_stats_json",
    "reduce_to_stats",
    "sample_size",
    "write_stats_json",
]
