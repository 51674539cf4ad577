"""Moment algebra on the (at most 4) columns ``y, d, x, w`` in plain Python floats.

The analysis runs this for every comparison, so it avoids NumPy's per-call overhead on
4x4 matrices (a pure-float quadratic form is several times faster at this size).

Columns: ``y`` the metric value (a ratio's numerator), ``d`` a ratio's denominator, ``x``
the pre-period covariate (a ratio covariate's numerator) and ``w`` a ratio covariate's
denominator. A record carries ``y`` and any of the others, always in this order.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cohortlens.experiments.stats import SufficientStats

Vector = list[float]
Matrix = list[list[float]]

#: Every column a record can summarise, in order.
COLUMNS = ("y", "d", "x", "w")
#: The field holding Σ(a·b) for each pair of columns (Σa² on the diagonal).
CROSS_FIELD: dict[tuple[str, str], str] = {
    ("y", "y"): "sum_yy",
    ("d", "d"): "sum_dd",
    ("x", "x"): "sum_xx",
    ("w", "w"): "sum_ww",
    ("y", "d"): "sum_yd",
    ("y", "x"): "sum_xy",
    ("d", "x"): "sum_xd",
    ("y", "w"): "sum_yw",
    ("d", "w"): "sum_dw",
    ("x", "w"): "sum_xw",
}

#: Relative size below which a computed variance is treated as exactly zero (it is then
#: floating-point cancellation in ``Σz² - n·z̄²``, not a real spread).
ZERO_VARIANCE_RTOL = 1e-11
_TINY = 2.2250738585072014e-308


def cross_field(a: str, b: str) -> str:
    """The field name of ``Σ(a·b)`` for two columns (in either order)."""
    return CROSS_FIELD.get((a, b)) or CROSS_FIELD[(b, a)]


def raw_sums(s: SufficientStats) -> tuple[Vector, Matrix]:
    """``Σz`` and ``Σzzᵀ`` for ``z = s.columns``."""
    cols = s.columns
    if len(cols) == 1:
        return [s.sum_y], [[s.sum_yy]]
    sums = [getattr(s, f"sum_{c}") for c in cols]
    cross = [[getattr(s, cross_field(a, b)) for b in cols] for a in cols]
    return sums, cross


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
                return (
                    f"the covariance of {a} and {b} implied by {cross_field(a, b)} exceeds "
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


def ratio_gradient(mean: Vector, k: int, num: int, den: int | None) -> Vector:
    """Gradient (length ``k``) of ``mean[num]`` or ``mean[num] / mean[den]`` in the means."""
    grad = [0.0] * k
    if den is None:
        grad[num] = 1.0
    else:
        grad[num] = 1.0 / mean[den]
        grad[den] = -mean[num] / mean[den] ** 2
    return grad


def gradient(mean: Vector, has_ratio: bool) -> Vector:
    """Gradient of the metric (``ȳ``, or ``ȳ/d̄`` for ratios) in the column means."""
    return ratio_gradient(mean, len(mean), 0, 1 if has_ratio else None)


def quad(g: Vector, cov: Matrix) -> float:
    """``gᵀ · cov · g``."""
    if len(g) == 1:
        return g[0] * (cov[0][0] * g[0])
    total = 0.0
    for gi, row in zip(g, cov, strict=True):
        if gi != 0.0:
            total += gi * sum(c * gj for c, gj in zip(row, g, strict=True))
    return total


def bilinear(a: Vector, cov: Matrix, b: Vector) -> float:
    """``aᵀ · cov · b``."""
    total = 0.0
    for ai, row in zip(a, cov, strict=True):
        if ai != 0.0:
            total += ai * sum(c * bj for c, bj in zip(row, b, strict=True))
    return total
