"""Always-valid inference: a confidence sequence you may look at every day.

A fixed-horizon CI is valid at one pre-planned look. Checking it daily and stopping at the
first "significant" day inflates false positives (with 14 looks, roughly 3x at alpha = 0.05).
We use the normal-mixture sequential probability ratio test (mSPRT; Robbins 1970, Johari,
Pekelis & Walsh 2017), which is the Gaussian-mixture confidence sequence of Howard et al.
(2021) applied to the asymptotically normal effect estimate (Waudby-Smith et al. 2023, the
asymptotic confidence sequence GrowthBook and Eppo use).

With an estimate ``Δ̂`` of standard error ``se`` from ``N`` units and a mixing parameter
``ρ``, the mixture likelihood ratio against ``Δ = δ`` is

    Λ_N(δ) = (1 + Nρ²)^(-1/2) · exp( z_δ² · Nρ² / (2 (1 + Nρ²)) ),  z_δ = (Δ̂ - δ)/se.

By Ville's inequality ``P(sup_N Λ_N(Δ) >= 1/α) <= α`` under the truth, so

* the always-valid p-value is ``p_N = min(1, 1/Λ_N(0))``, and
* the two-sided confidence sequence is
  ``Δ̂ ± se · sqrt((1 + 1/(Nρ²)) (2 log(1/α) + log(1 + Nρ²)))``.

``ρ`` is derived from the planned sample size ``N_tune`` (``tuning_n``) and ``α`` so that the
sequence is **tightest at N = N_tune** (GrowthBook's and Eppo's rule):

    ρ² = (-2 ln α + ln(1 - 2 ln α)) / N_tune       (α → 2α for one-sided tests).

One-sided sequences (GrowthBook's ``SequentialOneSidedTreatment*TTest``) use the half-width
``se · sqrt(2 (1 + 1/(Nρ²)) · ln(1 + sqrt(1 + Nρ²) / (2α)))``; their p-value is the ``α`` at
which that bound touches zero, in closed form.

Over a series of looks we report the running intersection of the intervals and the running
minimum of the p-values, which keeps the guarantee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Alternative = Literal["two-sided", "greater", "less"]


@dataclass(frozen=True)
class SequentialParams:
    """Settings of the always-valid (mSPRT) analysis.

    Attributes:
        tuning_n: planned units (both arms of a comparison together); the confidence
            sequence is tightest there. Choose it before the experiment starts.
        rho: the mixing parameter, when given explicitly (``None``: derived from
            ``tuning_n`` and ``α`` by :func:`rho_for`).
    """

    tuning_n: int = 10_000
    rho: float | None = None

    def __post_init__(self) -> None:
        if self.tuning_n <= 0:
            raise ValueError(f"tuning_n == {self.tuning_n}, must be > 0")
        if self.rho is not None and not (self.rho > 0 and math.isfinite(self.rho)):
            raise ValueError(f"rho == {self.rho}, must be finite and > 0")

    def rho_squared(self, alpha: float, alternative: Alternative = "two-sided") -> float:
        """``ρ²`` for this level (explicit ``rho`` wins over ``tuning_n``)."""
        if self.rho is not None:
            return self.rho**2
        return rho_for(self.tuning_n, alpha, alternative) ** 2


def rho_for(tuning_n: float, alpha: float, alternative: Alternative = "two-sided") -> float:
    """``ρ`` that makes the confidence sequence tightest at ``tuning_n`` units."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha == {alpha}, must be in (0, 1)")
    a = alpha if alternative == "two-sided" else 2.0 * alpha
    if not a < 1.0:
        raise ValueError(f"alpha == {alpha}: a one-sided sequential test needs alpha < 0.5")
    return math.sqrt((-2.0 * math.log(a) + math.log(1.0 - 2.0 * math.log(a))) / tuning_n)


def boundary_multiplier(
    n_units: npt.ArrayLike, tuning_n: float, alpha: float, rho: float | None = None
) -> FloatArray:
    """Two-sided half-width of the confidence sequence in standard errors, at ``n_units``.

    Compare with the fixed-horizon ``z_{1-α/2}`` (1.96 at α = 0.05): the ratio is the
    price of being allowed to look at any time.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha == {alpha}, must be in (0, 1)")
    r2 = (rho if rho is not None else rho_for(tuning_n, alpha)) ** 2
    nr = np.asarray(n_units, dtype=np.float64) * r2
    with np.errstate(divide="ignore"):
        out = np.sqrt((1.0 + 1.0 / nr) * (2.0 * np.log(1.0 / alpha) + np.log1p(nr)))
    return np.asarray(out, dtype=np.float64)


def multiplier_scalar(
    n_units: float, rho_squared: float, alpha: float, alternative: Alternative = "two-sided"
) -> float:
    """Half-width in standard errors at ``n_units`` (the analysis' hot path, plain floats)."""
    nr = n_units * rho_squared
    if alternative == "two-sided":
        return math.sqrt((1.0 + 1.0 / nr) * (2.0 * math.log(1.0 / alpha) + math.log1p(nr)))
    return math.sqrt(2.0 * (1.0 + 1.0 / nr) * math.log1p(math.sqrt(1.0 + nr) / (2.0 * alpha)))


def pvalue_scalar(
    z: float, n_units: float, rho_squared: float, alternative: Alternative = "two-sided"
) -> float:
    """Always-valid p-value of the z-statistic ``z`` at ``n_units`` (plain floats)."""
    nr = n_units * rho_squared
    log_lr = 0.5 * z * z * nr / (1.0 + nr)
    if alternative == "two-sided":
        return math.exp(-max(log_lr - 0.5 * math.log1p(nr), 0.0))
    if (alternative == "greater" and z <= 0.0) or (alternative == "less" and z >= 0.0):
        return 1.0
    # The α at which the one-sided bound touches 0: sqrt(1 + Nρ²) / (2 (e^L - 1)).
    denom = 2.0 * math.expm1(log_lr)
    return 1.0 if denom <= 0.0 else min(1.0, math.sqrt(1.0 + nr) / denom)


def always_valid(
    estimate: float,
    std_error: float,
    n_units: float,
    *,
    tuning_n: float,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
    rho: float | None = None,
) -> tuple[float, float, float]:
    """Always-valid ``(ci_lower, ci_upper, pvalue)`` from an estimate, its se and N alone.

    For results computed elsewhere (another tool, a regression): anything asymptotically
    normal with a standard error from ``n_units`` units.
    """
    if not std_error > 0.0 or not n_units > 0:
        raise ValueError("always_valid needs std_error > 0 and n_units > 0")
    r2 = (rho if rho is not None else rho_for(tuning_n, alpha, alternative)) ** 2
    half = multiplier_scalar(n_units, r2, alpha, alternative) * std_error
    lower = estimate - half if alternative != "less" else -math.inf
    upper = estimate + half if alternative != "greater" else math.inf
    return lower, upper, pvalue_scalar(estimate / std_error, n_units, r2, alternative)


def boundary_multiplier_scalar(n_units: float, tuning_n: float, alpha: float) -> float:
    """:func:`boundary_multiplier` for one look (two-sided, ``ρ`` from ``tuning_n``)."""
    return multiplier_scalar(n_units, rho_for(tuning_n, alpha) ** 2, alpha)


def always_valid_pvalue_scalar(z: float, n_units: float, tuning_n: float, alpha: float) -> float:
    """:func:`always_valid_pvalue` for one look, in plain floats."""
    return pvalue_scalar(z, n_units, rho_for(tuning_n, alpha) ** 2)


def always_valid_pvalue(
    z: npt.ArrayLike, n_units: npt.ArrayLike, tuning_n: float, alpha: float
) -> FloatArray:
    """Two-sided always-valid p-value ``min(1, 1/Λ_N(0))`` (``ρ`` from ``tuning_n``, ``α``)."""
    zz = np.asarray(z, dtype=np.float64)
    nr = np.asarray(n_units, dtype=np.float64) * rho_for(tuning_n, alpha) ** 2
    log_lr = -0.5 * np.log1p(nr) + 0.5 * zz**2 * nr / (1.0 + nr)
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
    "Alternative",
    "SequentialParams",
    "always_valid",
    "always_valid_pvalue",
    "boundary_multiplier",
    "multiplier_scalar",
    "pvalue_scalar",
    "rho_for",
    "running_interval",
    "running_pvalue",
]
