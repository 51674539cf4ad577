"""Moment algebra on the (at most 3) columns ``y, d, x`` in plain Python floats.

The analysis runs this for every comparison, so it avoids NumPy's per-call overhead on
3x3 matrices (a pure-float quadratic form is several times faster at this size).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cohortlens.experiments.stats import SufficientStats

Vector = list[float]
Matrix = list[list[float]]

#: Relative size below which a computed variance is treated as exactly zero (it is then
#: floating-point cancellation in ``Σz² - n·z̄²``, not a real spread).
ZERO_VARIANCE_RTOL = 1e-11
_TINY = 2.2250738585072014e-308


def raw_sums(s: SufficientStats) -> tuple[Vector, Matrix]:
    """``Σz`` and ``Σzzᵀ`` for ``z = s.columns`` (``y``, then ``d``, then ``x`` if present)."""
    y, yy = s.sum_y, s.sum_yy
    if s.sum_d is not None and s.sum_dd is not None and s.sum_yd is not None:
        d, dd, yd = s.sum_d, s.sum_dd, s.sum_yd
        if (
            s.sum_x is not None
            and s.sum_xx is not None
            and s.sum_xy is not None
            and s.sum_xd is not None
        ):
            x, xx, xy, xd = s.sum_x, s.sum_xx, s.sum_xy, s.sum_xd
            return [y, d, x], [[yy, yd, xy], [yd, dd, xd], [xy, xd, xx]]
        return [y, d], [[yy, yd], [yd, dd]]
    if s.sum_x is not None and s.sum_xx is not None and s.sum_xy is not None:
        x, xx, xy = s.sum_x, s.sum_xx, s.sum_xy
        return [y, x], [[yy, xy], [xy, xx]]
    return [y], [[yy]]


_CROSS_FIELD = {("y", "d"): "sum_yd", ("y", "x"): "sum_xy", ("d", "x"): "sum_xd"}
#: Relative slack for the consistency checks of :func:`impossible` (rounding of float sums).
IMPOSSIBLE_RTOL = 1e-9


def impossible(n: int, sums: Vector, cross: Matrix, names: tuple[str, ...]) -> str | None:
    """Why these sums cannot come from real data (a negative variance or a covariance
    beyond Cauchy–Schwarz), or ``None``. Rounding of float sums is tolerated."""
    centred = [
        [cross[i][j] - sums[i] * sums[j] / n for j in range(len(sums))] for i in range(len(sums))
    ]
    for i, name in enumerate(names):
        scale = max(abs(cross[i][i]), sums[i] * sums[i] / n, _TINY)
        if centred[i][i] < -IMPOSSIBLE_RTOL * scale:
            return (
                f"sum_{name}{name} == {cross[i][i]!r} < (sum_{name})^2 / n == "
                f"{sums[i] * sums[i] / n!r}: the variance of {name} would be negative"
            )
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            vi, vj = max(centred[i][i], 0.0), max(centred[j][j], 0.0)
            cij = centred[i][j]
            slack = IMPOSSIBLE_RTOL * max(
                abs(cross[i][i]), abs(cross[j][j]), abs(cross[i][j]), _TINY
            )
            if abs(cij) > math.sqrt(vi) * math.sqrt(vj) + slack:
                a, b = names[i], names[j]
                field = _CROSS_FIELD.get((a, b), f"sum_{a}{b}")
                return (
                    f"the covariance of {a} and {b} implied by {field} exceeds "
                    f"sqrt(var({a}) * var({b})) (Cauchy-Schwarz)"
                )
    return None


def moments(n: int, sums: Vector, cross: Matrix, ddof: int) -> tuple[Vector, Matrix]:
    """Mean vector and covariance (divisor ``n - ddof``); cancellation-size variances -> 0."""
    k = len(sums)
    mean = [v / n for v in sums]
    div = n - ddof
    cov = [[(cross[i][j] - sums[i] * sums[j] / n) / div for j in range(k)] for i in range(k)]
    for i in range(k):
        if cov[i][i] <= ZERO_VARIANCE_RTOL * max(cross[i][i] / n, _TINY):
            for j in range(k):
                cov[i][j] = 0.0
                cov[j][i] = 0.0
    return mean, cov


def gradient(mean: Vector, has_ratio: bool) -> Vector:
    """Gradient of the metric (``ȳ``, or ``ȳ/d̄`` for ratios) in the column means; 0 for ``x``."""
    grad = [0.0] * len(mean)
    if has_ratio:
        grad[0] = 1.0 / mean[1]
        grad[1] = -mean[0] / mean[1] ** 2
    else:
        grad[0] = 1.0
    return grad


def quad(g: Vector, cov: Matrix) -> float:
    """``gᵀ · cov · g``."""
    total = 0.0
    for gi, row in zip(g, cov, strict=True):
        if gi != 0.0:
            total += gi * sum(c * gj for c, gj in zip(row, g, strict=True))
    return total


def theta(n: int, sums: Vector, cross: Matrix, ddof: int, has_ratio: bool) -> float:
    """CUPED coefficient ``Cov(f_lin, x) / Var(x)`` (``x`` the last column); 0 if undefined."""
    if n <= ddof:
        return 0.0
    mean, cov = moments(n, sums, cross, ddof)
    if has_ratio and mean[1] == 0.0:
        return 0.0
    var_x = cov[-1][-1]
    if var_x <= 0.0:
        return 0.0
    g = gradient(mean, has_ratio)
    return sum(g[i] * cov[i][-1] for i in range(len(g))) / var_x
