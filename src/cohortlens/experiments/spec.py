"""What to analyse and how: metric definitions and analysis settings (frozen, validated)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from cohortlens.experiments.multiplicity import Correction
from cohortlens.experiments.sequential import SequentialParams
from cohortlens.experiments.srm import DEFAULT_SRM_ALPHA

#: How the p-value of a binary metric is computed (the CI is always unpooled Wald).
BinaryTest = Literal["unpooled", "pooled"]


class MetricKind(StrEnum):
    """Metric families; each has its own variance and test (docs/EXPERIMENTS.md)."""

    #: 0/1 per learner (completion, churn): z-test, variance ``p(1-p)``.
    BINARY = "binary"
    #: Any number per learner (revenue): Welch t-test.
    MEAN = "mean"
    #: ``Σnumerator / Σdenominator`` (revenue per session): delta method, z-test.
    RATIO = "ratio"


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
        kind: binary, mean or ratio.
        numerator: the per-learner column holding the value (ratio: the numerator);
            defaults to ``name``.
        denominator: ratio metrics only: the per-learner column of the denominator.
        covariate: per-learner pre-period column used for CUPED (``None``: no adjustment).
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

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a metric needs a non-empty name")
        object.__setattr__(self, "kind", MetricKind(self.kind))
        object.__setattr__(self, "role", MetricRole(self.role))
        if (self.kind is MetricKind.RATIO) != (self.denominator is not None):
            raise ValueError(
                f"metric {self.name!r}: a denominator is required for ratio metrics "
                "and only for them"
            )
        if self.cap_quantile is not None:
            if self.kind is MetricKind.BINARY:
                raise ValueError(f"metric {self.name!r}: binary metrics cannot be capped")
            if not 0.0 < self.cap_quantile < 1.0:
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
    """

    control: str | None = None
    alpha: float = 0.05
    expected_weights: Mapping[str, float] | None = None
    srm_alpha: float = DEFAULT_SRM_ALPHA
    correction: Correction = "holm"
    binary_test: BinaryTest = "unpooled"
    sequential: SequentialParams | None = None
    impact_units: int | None = None

    def __post_init__(self) -> None:
        problems = []
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


__all__ = ["AnalysisConfig", "BinaryTest", "MetricKind", "MetricRole", "MetricSpec"]
