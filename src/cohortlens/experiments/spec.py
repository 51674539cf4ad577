"""What to analyse and how: metric definitions and analysis settings (frozen, validated)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from cohortlens.experiments.kinds import MetricKind, kind_of
from cohortlens.experiments.multiplicity import Correction
from cohortlens.experiments.sequential import Alternative, SequentialParams
from cohortlens.experiments.srm import DEFAULT_SRM_ALPHA

#: How the p-value of a binary metric is computed (the CI is always unpooled Wald).
BinaryTest = Literal["unpooled", "pooled"]
#: Scale of the relative-lift CI and test: symmetric on ``Δ/f_c`` or on ``log(1 + Δ/f_c)``.
RelativeScale = Literal["linear", "log"]
#: Which p-value decides the verdict: the absolute-lift test or the relative-lift test.
DecisionScale = Literal["absolute", "relative"]
#: Denominator of the CUPED relative lift: the raw control metric or the CUPED-adjusted one.
CupedBaseline = Literal["unadjusted", "adjusted"]
#: Control-arm variance term of the CUPED relative lift (see docs/EXPERIMENTS.md).
CupedRelVariance = Literal["delta", "growthbook"]
#: How the CUPED coefficient is estimated: from the arms pooled, or summed over arms.
CupedTheta = Literal["pooled", "arms"]

_ALTERNATIVES = ("two-sided", "greater", "less")


class MetricRole(StrEnum):
    """Whether a metric is a goal (corrected for multiplicity) or a guardrail."""

    PRIMARY = "primary"
    #: Fails the experiment on a significant regression (uncorrected, to be sensitive).
    GUARDRAIL = "guardrail"


@dataclass(frozen=True)
class MetricSpec:
    """One metric to analyse.

    Attributes:
        name: the metric's name in reports and statistics files.
        kind: binary, mean or ratio (:mod:`~cohortlens.experiments.kinds`).
        numerator: the per-learner column holding the value (ratio: the numerator);
            defaults to ``name``.
        denominator: ratio metrics only: the per-learner column of the denominator.
        covariate: per-learner pre-period column used for CUPED (``None``: no adjustment);
            with ``covariate_denominator``, the numerator of a pre-period ratio.
        covariate_denominator: ratio metrics only: the per-learner pre-period denominator,
            so the covariate is the ratio ``Σcovariate / Σcovariate_denominator`` (CUPED of a
            ratio by its pre-period ratio, as GrowthBook and tea-tasting).
        cap_quantile: mean and ratio metrics: cap the value (and the covariate) at this
            quantile, computed over all arms together (e.g. 0.99); ``None``: no capping.
        role: primary (default) or guardrail.
        lower_is_better: True for metrics such as churn, where a decrease is good.
    """

    name: str
    kind: MetricKind
    numerator: str | None = None
    denominator: str | None = None
    covariate: str | None = None
    cap_quantile: float | None = None
    role: MetricRole = MetricRole.PRIMARY
    lower_is_better: bool = False
    covariate_denominator: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a metric needs a non-empty name")
        object.__setattr__(self, "kind", MetricKind(self.kind))
        object.__setattr__(self, "role", MetricRole(self.role))
        problems = kind_of(self.kind).spec_problems(self)
        if problems:
            raise ValueError(f"metric {self.name!r}: {'; '.join(problems)}")
        if self.cap_quantile is not None and not 0.0 < self.cap_quantile < 1.0:
            raise ValueError(
                f"metric {self.name!r}: cap_quantile == {self.cap_quantile}, must be in (0, 1)"
            )

    @property
    def value_column(self) -> str:
        """The per-learner column of the metric value (or numerator)."""
        return self.numerator or self.name


@dataclass(frozen=True)
class AnalysisConfig:
    """How to analyse an experiment.

    Attributes:
        control: the control variant; ``None`` picks ``"control"`` if present, else the
            first variant.
        alpha: two-sided significance level; CIs have level ``1 - alpha``.
        expected_weights: design split per variant for the SRM check (``None``: equal).
        srm_alpha: flag a sample ratio mismatch when its p-value is below this.
        correction: multiplicity correction over the primary comparisons (metrics ×
            treatments) used for verdicts: ``holm`` (FWER), ``bh`` (FDR) or ``none``.
            Both adjusted p-values are always reported.
        binary_test: ``unpooled`` (default; matches the CI) or ``pooled`` p-values for
            binary metrics without covariate.
        sequential: always-valid settings; ``None`` for a fixed-horizon analysis only.
        impact_units: learners the business impact is projected onto (``None``: the
            experiment's own units).
        alternative: ``two-sided`` (default), ``greater`` (treatment > control) or ``less``,
            for the tests, the CIs (one-sided CIs are half-open) and the sequential results.
        rel_scale: ``linear`` (default; GrowthBook, Eppo): relative CI symmetric on
            ``Δ/f_c``; ``log`` (tea-tasting): symmetric on ``log(1 + Δ/f_c)``, asymmetric on
            the lift. The relative p-value always tests on the same scale as its CI.
        decision: which p-value decides verdicts: ``absolute`` (default) or ``relative``.
        use_t: quantile of tests and CIs: ``None`` (default) = Student t with Welch df for
            mean metrics and normal for binary and ratio metrics; ``True`` = t for every
            kind (GrowthBook); ``False`` = normal for every kind (Eppo, Spotify's ZTest).
        equal_var: pooled-variance (Student) t test and CI instead of Welch's.
        yates: continuity correction of the binary z-test (tea-tasting's default).
        cuped_baseline: the control metric a CUPED relative lift divides by.
        cuped_rel_variance: the control term of the CUPED relative-lift variance: ``delta``
            (the full delta method at the adjusted lift) or ``growthbook`` (GrowthBook's
            term, which scales by the unadjusted treatment mean).
        cuped_theta: ``pooled`` (default): θ from the arms' moments pooled (GrowthBook for
            plain covariates, tea-tasting for all); ``arms``: the per-arm covariances and
            variances summed (GrowthBook's regression-adjusted ratio statistic).
    """

    control: str | None = None
    alpha: float = 0.05
    expected_weights: Mapping[str, float] | None = None
    srm_alpha: float = DEFAULT_SRM_ALPHA
    correction: Correction = "holm"
    binary_test: BinaryTest = "unpooled"
    sequential: SequentialParams | None = None
    impact_units: int | None = None
    alternative: Alternative = "two-sided"
    rel_scale: RelativeScale = "linear"
    decision: DecisionScale = "absolute"
    use_t: bool | None = None
    equal_var: bool = False
    yates: bool = False
    cuped_baseline: CupedBaseline = "unadjusted"
    cuped_rel_variance: CupedRelVariance = "delta"
    cuped_theta: CupedTheta = "pooled"

    def __post_init__(self) -> None:
        problems = []
        for name, allowed in (
            ("alternative", _ALTERNATIVES),
            ("rel_scale", ("linear", "log")),
            ("decision", ("absolute", "relative")),
            ("cuped_baseline", ("unadjusted", "adjusted")),
            ("cuped_rel_variance", ("delta", "growthbook")),
            ("cuped_theta", ("pooled", "arms")),
        ):
            if getattr(self, name) not in allowed:
                problems.append(
                    f"{name} == {getattr(self, name)!r}, must be one of {', '.join(allowed)}"
                )
        if not (0.0 < self.alpha < 1.0 and math.isfinite(self.alpha)):
            problems.append(f"alpha == {self.alpha}, must be in (0, 1)")
        if not 0.0 < self.srm_alpha < 1.0:
            problems.append(f"srm_alpha == {self.srm_alpha}, must be in (0, 1)")
        if self.correction not in ("holm", "bh", "none"):
            problems.append(f"correction == {self.correction!r}, must be 'holm', 'bh' or 'none'")
        if self.binary_test not in ("unpooled", "pooled"):
            problems.append(f"binary_test == {self.binary_test!r}, must be 'unpooled' or 'pooled'")
        if self.impact_units is not None and self.impact_units < 0:
            problems.append(f"impact_units == {self.impact_units}, must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))


__all__ = [
    "AnalysisConfig",
    "BinaryTest",
    "CupedBaseline",
    "CupedRelVariance",
    "CupedTheta",
    "DecisionScale",
    "MetricKind",
    "MetricRole",
    "MetricSpec",
    "RelativeScale",
]
