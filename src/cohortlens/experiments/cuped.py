"""CUPED: variance reduction with a pre-period covariate (Deng, Xu, Kohavi & Walker 2013).

Each arm's metric ``f`` (a mean ``ȳ`` or a ratio ``ȳ/d̄``) is replaced by
``f - θ·x̄`` where ``x`` is the learner's pre-period value. Because assignment is random,
``x̄`` has the same expectation in every arm, so the difference between arms is unbiased for
any ``θ``; the ``θ`` that minimises its variance is ``Cov(f_lin, x) / Var(x)``, where
``f_lin`` is the metric's per-unit linearisation (``y`` for means, ``(y - R·d)/d̄`` for
ratios). We estimate ``θ`` once per comparison from the two arms pooled, as GrowthBook does
(the OLS/ANCOVA slope, fitted within arms, differs only slightly).

The variance of the difference shrinks by the factor ``1 - ρ²``, with ``ρ`` the correlation of
``f_lin`` and ``x``: this is the number :func:`predicted_variance_factor` gives, and the
analysis reports the reduction it achieved.

A ratio metric may instead be adjusted by its pre-period *ratio* ``x̄/w̄`` (GrowthBook's
regression-adjusted ratio statistic, tea-tasting's ``numer_covariate``/``denom_covariate``):
``x`` is then replaced by the covariate's linearisation ``(x - G·w)/w̄``, ``G = x̄/w̄``.
"""

from __future__ import annotations

import math

from cohortlens.experiments import _moments
from cohortlens.experiments.kinds import _Layout, _undefined
from cohortlens.experiments.stats import SufficientStats


def cuped_theta(pooled: SufficientStats, ddof: int) -> float:
    """Variance-minimising CUPED coefficient from the arms pooled; 0 when ``x`` is constant.

    Raises:
        ValueError: ``pooled`` carries no covariate.
    """
    if not pooled.has_covariate:
        raise ValueError("cuped_theta needs statistics with a covariate (sum_x, sum_xx, sum_xy)")
    if pooled.n <= ddof:
        return 0.0
    layout = _Layout(pooled.columns)
    mean, cov = _moments.moments(pooled.n, *_moments.raw_sums(pooled), ddof)
    if _undefined(mean, layout):
        return 0.0
    gg = layout.covariate_grad(mean)
    var_g = _moments.quad(gg, cov)
    return _moments.bilinear(layout.metric_grad(mean), cov, gg) / var_g if var_g > 0.0 else 0.0


def covariate_correlation(stats: SufficientStats, ddof: int = 1) -> float:
    """Correlation of the metric's linearisation with the covariate's (NaN if undefined)."""
    if not stats.has_covariate:
        raise ValueError("covariate_correlation needs statistics with a covariate")
    if stats.n <= ddof:
        return math.nan
    layout = _Layout(stats.columns)
    mean, cov = _moments.moments(stats.n, *_moments.raw_sums(stats), ddof)
    if _undefined(mean, layout):
        return math.nan
    gf, gg = layout.metric_grad(mean), layout.covariate_grad(mean)
    var_f, var_g = _moments.quad(gf, cov), _moments.quad(gg, cov)
    if var_f <= 0.0 or var_g <= 0.0:
        return math.nan
    return _moments.bilinear(gf, cov, gg) / math.sqrt(var_f * var_g)


def predicted_variance_factor(correlation: float) -> float:
    """Variance of the CUPED estimate relative to the plain one: ``1 - ρ²``."""
    if not -1.0 <= correlation <= 1.0:
        raise ValueError(f"correlation == {correlation}, must be in [-1, 1]")
    return 1.0 - correlation**2


__all__ = ["covariate_correlation", "cuped_theta", "predicted_variance_factor"]
