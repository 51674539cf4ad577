"""Result records: named, documented fields that serialise as they are (``to_dict``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from cohortlens.experiments.errors import AnalysisStatus, ReportStatus, Verdict
from cohortlens.experiments.sequential import SequentialParams
from cohortlens.experiments.spec import MetricKind, MetricRole
from cohortlens.experiments.srm import SrmResult

_NAN = math.nan


@dataclass(frozen=True)
class EffectEstimate:
    """One metric, one treatment against control.

    Undefined numbers are NaN (``None`` in JSON); :attr:`status` says why.

    Attributes:
        metric, kind, role: the metric analysed.
        variant, control: the treatment and the control variant.
        status: :class:`~cohortlens.experiments.errors.AnalysisStatus` code.
        test: ``welch_t`` (mean), ``z_unpooled`` / ``z_pooled`` (binary), ``z_delta`` (ratio);
            other names for other conventions (``student_t``, ``t_delta``, ``*_yates``).
        alternative: ``two-sided``, ``greater`` or ``less`` (one-sided CIs are half-open).
        rel_scale: ``linear`` or ``log``: the scale of the relative CI and test.
        n_control, n_treatment: units with a value for this metric.
        mean_control, mean_treatment: the metric per arm (ratio metrics: Σy/Σd), unadjusted.
        effect_size: absolute lift, treatment - control (CUPED-adjusted when applied).
        effect_size_ci_lower, effect_size_ci_upper: fixed-horizon CI of the absolute lift.
        rel_effect_size: relative lift, ``effect_size / mean_control``.
        rel_effect_size_ci_lower, rel_effect_size_ci_upper: delta-method CI of the relative
            lift (symmetric on the linear scale, or on ``log(1 + lift)``).
        std_error, rel_std_error: standard errors of the two lifts.
        rel_statistic, rel_pvalue: the test of the relative lift on the CI's scale, so
            ``rel_pvalue < alpha`` exactly when the relative CI excludes 0.
        statistic, df: test statistic and its degrees of freedom (``inf`` for z-tests).
        pvalue: two-sided fixed-horizon p-value.
        alpha: the level used for the CIs.
        cuped_applied, cuped_theta: whether CUPED ran, and its coefficient.
        std_error_unadjusted: standard error of the lift without CUPED.
        variance_reduction: ``1 - var(adjusted) / var(unadjusted)`` (NaN without CUPED).
        seq_ci_lower, seq_ci_upper, seq_rel_ci_lower, seq_rel_ci_upper: always-valid
            confidence sequence (running intersection over the looks given).
        seq_pvalue, seq_rel_pvalue: always-valid p-values of the absolute and the relative
            lift (running minimum over the looks given).
        pvalue_holm, pvalue_bh, seq_pvalue_holm, seq_pvalue_bh, rel_pvalue_holm, ...:
            p-values adjusted over the report's primary comparisons (NaN for guardrails,
            which are not corrected).
        segment_pvalue: in a per-segment report, the decision p-value corrected across
            segments (NaN otherwise).
        verdict: improvement / regression / no_significant_change / withheld / not_computed.
        guardrail_failed: for guardrails, whether it regressed significantly (``None`` for
            primary metrics and when conclusions are withheld or not computed).
        impact_ci_lower, impact_ci_upper: business impact interval on the metric's own
            scale: the decision interval of the absolute lift × :attr:`impact_units` (ratio
            metrics: also × the control's mean denominator, so the unit is the numerator's).
        impact_units: learners the impact is projected onto.
        impact_unit: what the impact interval counts (``"completed (count)"``, ``"revenue
            (total)"``; ratio metrics: the numerator's total).
    """

    metric: str
    kind: MetricKind
    role: MetricRole
    variant: str
    control: str
    status: AnalysisStatus
    test: str
    n_control: int
    n_treatment: int
    mean_control: float = _NAN
    mean_treatment: float = _NAN
    effect_size: float = _NAN
    effect_size_ci_lower: float = _NAN
    effect_size_ci_upper: float = _NAN
    rel_effect_size: float = _NAN
    rel_effect_size_ci_lower: float = _NAN
    rel_effect_size_ci_upper: float = _NAN
    std_error: float = _NAN
    rel_std_error: float = _NAN
    statistic: float = _NAN
    df: float = _NAN
    pvalue: float = _NAN
    rel_statistic: float = _NAN
    rel_pvalue: float = _NAN
    alpha: float = 0.05
    alternative: str = "two-sided"
    rel_scale: str = "linear"
    cuped_applied: bool = False
    cuped_theta: float = 0.0
    std_error_unadjusted: float = _NAN
    variance_reduction: float = _NAN
    seq_ci_lower: float = _NAN
    seq_ci_upper: float = _NAN
    seq_rel_ci_lower: float = _NAN
    seq_rel_ci_upper: float = _NAN
    seq_pvalue: float = _NAN
    seq_rel_pvalue: float = _NAN
    pvalue_holm: float = _NAN
    pvalue_bh: float = _NAN
    seq_pvalue_holm: float = _NAN
    seq_pvalue_bh: float = _NAN
    rel_pvalue_holm: float = _NAN
    rel_pvalue_bh: float = _NAN
    seq_rel_pvalue_holm: float = _NAN
    seq_rel_pvalue_bh: float = _NAN
    segment_pvalue: float = _NAN
    verdict: Verdict = Verdict.NOT_COMPUTED
    guardrail_failed: bool | None = None
    impact_ci_lower: float = _NAN
    impact_ci_upper: float = _NAN
    impact_units: int = 0
    impact_unit: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: enums as their values, NaN as ``None``, infinities as strings."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class SequentialLook:
    """One look (cumulative up to a period) of one comparison, for charts over time.

    Attributes:
        label: the period's label (e.g. a date).
        metric, variant: the comparison.
        n_units: units in both arms up to this look.
        effect_size: absolute lift at this look.
        ci_lower, ci_upper: fixed-horizon CI at this look (not valid under peeking).
        seq_ci_lower, seq_ci_upper: always-valid interval (running intersection).
        pvalue: fixed-horizon p-value at this look.
        seq_pvalue: always-valid p-value (running minimum).
    """

    label: str
    metric: str
    variant: str
    n_units: int
    effect_size: float
    ci_lower: float
    ci_upper: float
    seq_ci_lower: float
    seq_ci_upper: float
    pvalue: float
    seq_pvalue: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class ExperimentReport:
    """The analysis of one experiment.

    Attributes:
        status: ``srm_mismatch`` (conclusions withheld), ``guardrail_failed`` or ``ok``.
        control: the control variant.
        variants: all variants, control included.
        units: assigned units per variant.
        alpha, correction: the level and the multiplicity correction used for verdicts.
        decision: ``absolute`` or ``relative``: which test's p-values decide verdicts.
        srm: the sample-ratio check.
        effects: one record per (metric, treatment), metrics in the order given.
        sequential: the always-valid settings (``None`` for fixed-horizon only).
        looks: per-look records (only with ``sequential`` and more than one period).
    """

    status: ReportStatus
    control: str
    variants: tuple[str, ...]
    units: Mapping[str, int]
    alpha: float
    correction: str
    srm: SrmResult
    effects: tuple[EffectEstimate, ...]
    sequential: SequentialParams | None = None
    looks: tuple[SequentialLook, ...] = ()
    decision: str = "absolute"

    @property
    def conclusions_withheld(self) -> bool:
        """True when the SRM check failed: no effect may be claimed."""
        return self.status is ReportStatus.SRM_MISMATCH

    def effect(self, metric: str, variant: str | None = None) -> EffectEstimate:
        """The record of ``metric`` (and ``variant``; the only treatment when ``None``)."""
        matches = [
            e
            for e in self.effects
            if e.metric == metric and (variant is None or e.variant == variant)
        ]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} effects match metric={metric!r}, variant={variant!r}")
        return matches[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``--json`` output of ``cohortlens experiment analyze``)."""
        return {
            "status": self.status.value,
            "conclusions_withheld": self.conclusions_withheld,
            "control": self.control,
            "variants": list(self.variants),
            "units": dict(self.units),
            "alpha": self.alpha,
            "correction": self.correction,
            "decision": self.decision,
            "sequential": None
            if self.sequential is None
            else {"tuning_n": self.sequential.tuning_n, "rho": self.sequential.rho},
            "srm": self.srm.to_dict(),
            "effects": [e.to_dict() for e in self.effects],
            "looks": [look.to_dict() for look in self.looks],
        }


def _jsonable(value: object) -> object:
    """Enums to values; NaN to None; ±inf to the strings "inf"/"-inf" (JSON has neither)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


__all__ = ["EffectEstimate", "ExperimentReport", "SequentialLook"]
