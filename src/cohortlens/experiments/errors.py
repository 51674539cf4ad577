"""Errors and stable status codes of the experiments subpackage.

Two kinds of trouble are kept apart (see docs/EXPERIMENTS.md, "Status codes"):

* **Degenerate data** (an empty arm, one unit, zero variance, a zero baseline) is not an
  error: the analysis returns a result carrying an :class:`AnalysisStatus` code, so one bad
  metric never breaks a report.
* **Unusable input** (a malformed statistics file, an unknown column, contradictory
  options) raises :class:`ExperimentInputError`; the CLI prints it and exits with code 2.
  Programmer errors (wrong types, impossible sums) raise ``TypeError`` / ``ValueError``.
"""

from __future__ import annotations

from enum import StrEnum

from cohortlens.errors import InputError


class ExperimentInputError(InputError):
    """An experiment input (statistics file, data file, metric spec) cannot be used."""


class AnalysisStatus(StrEnum):
    """Why a comparison's inference is (partly) missing; ``ok`` when it is complete.

    The values are stable: they appear in JSON output and may be matched by callers.
    Listed from the most to the least severe; a comparison carries the most severe one.
    """

    #: An arm has no units for this metric: nothing is estimated.
    EMPTY_ARM = "empty_arm"
    #: An arm has a single unit: means are given, variances (hence CIs, p) are not.
    TOO_FEW_UNITS = "too_few_units"
    #: A ratio metric's denominator averages zero in an arm: the ratio is undefined.
    ZERO_DENOMINATOR = "zero_denominator"
    #: The standard error is zero (constant data in both arms): no CI or p-value.
    ZERO_VARIANCE = "zero_variance"
    #: The control mean is zero: absolute lift is complete, relative lift is undefined.
    ZERO_BASELINE = "zero_baseline"
    #: Everything was computed.
    OK = "ok"

    @property
    def severity(self) -> int:
        """0 for the most severe code; larger is milder (``ok`` is the largest)."""
        return list(AnalysisStatus).index(self)


class ReportStatus(StrEnum):
    """The experiment-level verdict of a report."""

    #: Sample ratio mismatch: the assignment is broken, conclusions are withheld.
    SRM_MISMATCH = "srm_mismatch"
    #: A guardrail metric regressed significantly.
    GUARDRAIL_FAILED = "guardrail_failed"
    #: No trust or guardrail problem was found.
    OK = "ok"


class Verdict(StrEnum):
    """What one comparison says about one metric."""

    IMPROVEMENT = "improvement"
    REGRESSION = "regression"
    NO_SIGNIFICANT_CHANGE = "no_significant_change"
    #: Not judged: the SRM check failed, so no effect may be claimed.
    WITHHELD = "withheld"
    #: Not judged: the data are degenerate (see the comparison's status).
    NOT_COMPUTED = "not_computed"


__all__ = ["AnalysisStatus", "ExperimentInputError", "ReportStatus", "Verdict"]
