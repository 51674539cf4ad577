"""Sample ratio mismatch (SRM): is the observed split the one the design asked for?

A chi-square goodness-of-fit test of the units per variant against the design's weights.
A broken split (bucketing bug, bots, a redirect that loses learners) biases every metric,
so a flagged experiment gets no conclusions (see :mod:`cohortlens.experiments.analysis`).
The default threshold is p < 0.001 because the check is looked at on every refresh.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scipy import special

#: Default SRM threshold: flag when p < 0.001 (the convention of ExP, Eppo and GrowthBook).
DEFAULT_SRM_ALPHA = 0.001


@dataclass(frozen=True)
class SrmResult:
    """Outcome of the SRM chi-square test.

    Attributes:
        observed: units per variant.
        expected: expected units per variant under the design weights.
        statistic: Pearson chi-square statistic (``inf`` if a zero-weight variant has units,
            ``nan`` when there is nothing to test: fewer than two variants or no units).
        df: degrees of freedom (number of variants - 1).
        pvalue: upper-tail chi-square probability (``nan`` when not testable).
        alpha: the threshold used.
        flagged: ``pvalue < alpha``; when true the experiment's conclusions are withheld.
    """

    observed: Mapping[str, int]
    expected: Mapping[str, float]
    statistic: float
    df: int
    pvalue: float
    alpha: float
    flagged: bool

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (NaN becomes ``None``)."""
        return {
            "observed": dict(self.observed),
            "expected": dict(self.expected),
            "statistic": _none_if_nan(self.statistic),
            "df": self.df,
            "pvalue": _none_if_nan(self.pvalue),
            "alpha": self.alpha,
            "flagged": self.flagged,
        }


def check_srm(
    observed: Mapping[str, int],
    expected_weights: Mapping[str, float] | None = None,
    *,
    alpha: float = DEFAULT_SRM_ALPHA,
) -> SrmResult:
    """Chi-square test of ``observed`` units per variant against ``expected_weights``.

    Args:
        observed: units per variant.
        expected_weights: design weights per variant (any positive scale; normalised here);
            ``None`` means an equal split. Variants listed here but absent from
            ``observed`` count as 0 units.
        alpha: flag when the p-value is below this.

    Raises:
        ValueError: a negative count or weight, an observed variant without a weight, or
            ``alpha`` outside (0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha == {alpha}, must be in (0, 1)")
    weights = (
        dict(expected_weights) if expected_weights is not None else dict.fromkeys(observed, 1.0)
    )
    missing = sorted(set(observed) - set(weights))
    if missing:
        raise ValueError(f"no expected weight for variant(s) {', '.join(missing)}")
    if any(w < 0 or not math.isfinite(w) for w in weights.values()):
        raise ValueError(f"expected weights must be finite and >= 0, got {weights}")
    total_weight = sum(weights.values())
    if total_weight <= 0:
        raise ValueError("expected weights sum to 0")
    obs = {v: int(observed.get(v, 0)) for v in weights}
    if any(c < 0 for c in obs.values()):
        raise ValueError(f"observed counts must be >= 0, got {obs}")
    total = sum(obs.values())
    expected = {v: total * w / total_weight for v, w in weights.items()}
    df = len(weights) - 1
    if total == 0 or df < 1:
        return SrmResult(obs, expected, math.nan, df, math.nan, alpha, False)
    statistic = 0.0
    for v, e in expected.items():
        if e == 0.0:
            if obs[v] > 0:
                return SrmResult(obs, expected, math.inf, df, 0.0, alpha, True)
            continue
        statistic += (obs[v] - e) ** 2 / e
    pvalue = float(special.chdtrc(df, statistic))
    return SrmResult(obs, expected, statistic, df, pvalue, alpha, pvalue < alpha)


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


__all__ = ["DEFAULT_SRM_ALPHA", "SrmResult", "check_srm"]
