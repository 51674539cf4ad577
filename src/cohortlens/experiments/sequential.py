"""Always-valid inference: a confidence sequence you may look at every day.

A fixed-horizon CI is valid at one pre-planned look. Checking it daily and stopping at the
first "significant" day inflates false positives (with 14 looks, roughly 3x at alpha = 0.05).
We use the normal-mixture sequential probability ratio test (mSPRT; Robbins 1970, Johari,
Pekelis & Walsh 2017), which is the Gaussian-mixture confidence sequence of Howard et al.
(2021) applied to the asymptotically normal effect estimate (as in Waudby-Smith et al.'s
asymptotic confidence sequences).

With an estimate ``Δ̂`` of standard error ``se`` computed from ``N`` units, and a mixing
distribution ``N(0, τ²)`` on the effect with ``τ² = se² · N / N_tune``, the mixture
likelihood ratio against ``Δ = δ`` is

    Λ_N(δ) = (1 + N/N_tune)^(-1/2) · exp( z_δ² · N / (2 (N + N_tune)) ),  z_δ = (Δ̂ - δ)/se.

By Ville's inequality ``P(sup_N Λ_N(Δ) >= 1/α) <= α`` under the truth, so

* the always-valid p-value is ``p_N = min(1, 1/Λ_N(0))``, and
* the confidence sequence is ``Δ̂ ± se · sqrt((1 + N_tune/N)(2 log(1/α) + log(1 + N/N_tune)))``,

valid simultaneously over all looks. Over a series of looks we report the running
intersection of the intervals and the running minimum of the p-values, which keeps that
guarantee. ``N_tune`` (``tuning_n``) is the number of units in the comparison at which the
boundary is relatively tightest; set it near the planned sample size, *before* looking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SequentialParams:
    """Settings of the always-valid (mSPRT) analysis.

    Attributes:
        tuning_n: units (both arms of a comparison together) at which the mixture is tuned;
            choose it before the experiment starts, near the planned sample size.
    """

    tuning_n: int = 10_000

    def __post_init__(self) -> None:
        if self.tuning_n <= 0:
            raise ValueError(f"tuning_n == {self.tuning_n}, must be > 0")


def boundary_multiplier(n_units: npt.ArrayLike, tuning_n: float, alpha: float) -> FloatArray:
    """Half-width of the confidence sequence in standard errors, at ``n_units`` units.

    Compare with the fixed-horizon ``z_{1-α/2}`` (1.96 at α = 0.05): the ratio is the
    price of being allowed to look at any time.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha == {alpha}, must be in (0, 1)")
    n = np.asarray(n_units, dtype=np.float64)
    ratio = n / tuning_n
    with np.errstate(divide="ignore"):
        out = np.sqrt((1.0 + 1.0 / ratio) * (2.0 * np.log(1.0 / alpha) + np.log1p(ratio)))
    return np.asarray(out, dtype=np.float64)


def boundary_multiplier_scalar(n_units: float, tuning_n: float, alpha: float) -> float:
    """:func:`boundary_multiplier` for one look, in plain floats (the analysis' hot path)."""
    ratio = n_units / tuning_n
    return math.sqrt((1.0 + 1.0 / ratio) * (2.0 * math.log(1.0 / alpha) + math.log1p(ratio)))


def always_valid_pvalue_scalar(z: float, n_units: float, tuning_n: float) -> float:
    """:func:`always_valid_pvalue` for one look, in plain floats."""
    log_lr = -0.5 * math.log1p(n_units / tuning_n) + 0.5 * z * z * n_units / (n_units + tuning_n)
    return math.exp(-max(log_lr, 0.0))


def always_valid_pvalue(z: npt.ArrayLike, n_units: npt.ArrayLike, tuning_n: float) -> FloatArray:
    """Always-valid p-value ``min(1, 1/Λ_N(0))`` for the z-statistic ``z`` at ``n_units``."""
    zz = np.asarray(z, dtype=np.float64)
    n = np.asarray(n_units, dtype=np.float64)
    log_lr = -0.5 * np.log1p(n / tuning_n) + 0.5 * zz**2 * n / (n + tuning_n)
    return np.asarray(np.exp(-np.maximum(log_lr, 0.0)), dtype=np.float64)


def running_interval(lower: npt.ArrayLike, upper: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Running intersection of intervals over looks (NaN looks are skipped)."""
    lo = np.asarray(lower, dtype=np.float64)
    hi = np.asarray(upper, dtype=np.float64)
    lo_acc = np.fmax.accumulate(np.where(np.isnan(lo), -np.inf, lo))
    hi_acc = np.fmin.accumulate(np.where(np.isnan(hi), np.inf, hi))
    lo_acc = np.where(np.isneginf(lo_acc), np.nan, lo_acc)
    hi_acc = np.where(np.isposinf(hi_acc), np.nan, hi_acc)
    return lo_acc, hi_acc


def running_pvalue(pvalues: npt.ArrayLike) -> FloatArray:
    """Running minimum of always-valid p-values over looks (NaN looks are skipped)."""
    p = np.asarray(pvalues, dtype=np.float64)
    acc = np.fmin.accumulate(np.where(np.isnan(p), np.inf, p))
    return np.where(np.isposinf(acc), np.nan, acc)


__all__ = [
    "SequentialParams",
    "always_valid_pvalue",
    "boundary_multiplier",
    "running_interval",
    "running_pvalue",
]
