"""Group-sequential designs: Lan–DeMets alpha spending and boundaries per look.

An experiment looked at ``K`` times, at information fractions ``0 < t_1 < ... < t_K <= 1``
(the share of the planned learners, or of the planned information ``1/se²``), rejects at the
first look ``k`` whose statistic crosses its boundary ``c_k``. The boundaries spend the
type-I error along a spending function ``α(t)`` (Lan & DeMets 1983): look ``k`` may reject
with probability ``α(t_k) − α(t_{k−1})`` under H0, given no earlier rejection. Unlike the
always-valid sequence (:mod:`~cohortlens.experiments.sequential`) the plan (the maximum
information) must be fixed in advance, and in exchange the boundaries are tighter.

Spending functions (one-sided level ``α``; two-sided designs spend ``α`` over both tails):

* ``obrien-fleming`` (Lan–DeMets O'Brien–Fleming type): ``α(t) = 2 − 2Φ(z_{1−α/2}/√t)``
  (two-sided: ``2 − 2Φ(z_{1−α/4}/√t)`` per tail, i.e. ``4 − 4Φ(z_{1−α/4}/√t)`` in all);
* ``pocock`` (Lan–DeMets Pocock type): ``α(t) = α·ln(1 + (e − 1)·t)``;
* ``power`` (Kim–DeMets): ``α(t) = α·t^ρ`` (``param`` = ρ; Spotify confidence uses ρ = 2);
* ``hsd`` (Hwang–Shih–DeCani): ``α(t) = α(1 − e^{−γt})/(1 − e^{−γ})`` (``param`` = γ;
  γ = 0 is linear spending);
* ``user``: the cumulative ``α(t_k)`` given per look (rpact's ``asUser``).

The boundary of each look solves the spending equation exactly by recursive numerical
integration of the joint law of the look statistics (Armitage, McPherson & Rowe 1969;
Jennison & Turnbull 2000, ch. 19): ``Z_k√I_k`` is a Brownian motion in the information,
so the sub-density of ``Z_k`` on the continuation region follows from look ``k − 1`` by one
Gaussian convolution. Simpson's rule on a fine grid gives bounds to about 1e-9.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

Spending = Literal["obrien-fleming", "pocock", "power", "hsd", "user"]
SPENDING_FUNCTIONS: tuple[str, ...] = ("obrien-fleming", "pocock", "power", "hsd")
FloatArray = npt.NDArray[np.float64]

#: Grid points per unit of z for the numerical integration (Simpson's rule).
_POINTS_PER_UNIT = 200
#: The integration ignores z below this (probability < 1e-15 under H0 at any look).
_Z_FLOOR = -8.5


def spent_alpha(
    t: float | Sequence[float] | FloatArray,
    alpha: float,
    spending: Spending | str = "obrien-fleming",
    *,
    sides: int = 1,
    param: float | None = None,
) -> FloatArray:
    """Cumulative type-I error ``α(t)`` spent by information fraction ``t`` (in [0, 1]).

    Raises:
        ValueError: an unknown spending function, ``alpha`` outside (0, 1), ``sides`` not 1
            or 2, a missing or invalid ``param``, or ``t`` outside [0, 1].
    """
    _check(alpha, spending, sides, param)
    tt = np.atleast_1d(np.asarray(t, dtype=np.float64))
    if np.any((tt < 0.0) | (tt > 1.0)) or not np.all(np.isfinite(tt)):
        raise ValueError(f"information fractions must lie in [0, 1], got {tt.tolist()}")
    if spending == "obrien-fleming":
        q = special.ndtri(1.0 - alpha / (2.0 * sides))
        with np.errstate(divide="ignore"):
            out = 2.0 * sides * special.ndtr(-q / np.sqrt(tt))
    elif spending == "pocock":
        out = alpha * np.log1p((math.e - 1.0) * tt)
    elif spending == "power":
        assert param is not None
        out = alpha * tt**param
    else:
        assert param is not None
        out = alpha * tt if param == 0.0 else alpha * -np.expm1(-param * tt) / -math.expm1(-param)
    return np.asarray(np.minimum(out, alpha), dtype=np.float64)


@dataclass(frozen=True)
class GroupSequentialDesign:
    """Efficacy boundaries of a group-sequential design, look by look.

    Attributes:
        information_fractions: ``t_k`` of each look.
        alpha: total (one-sided, or two-sided when ``sides == 2``) level.
        spending, param, sides: the spending function, its parameter and the sidedness.
        alpha_spent: cumulative ``α(t_k)``.
        bounds: ``c_k`` on the z scale (reject when ``Z_k ≥ c_k``, or ``|Z_k| ≥ c_k``).
        stage_levels: the nominal p-value thresholds ``1 − Φ(c_k)`` (two-sided:
            ``2(1 − Φ(c_k))``).
    """

    information_fractions: tuple[float, ...]
    alpha: float
    spending: str
    param: float | None
    sides: int
    alpha_spent: tuple[float, ...]
    bounds: tuple[float, ...]
    stage_levels: tuple[float, ...]

    def first_crossing(self, z: Sequence[float]) -> int | None:
        """Index of the first look whose statistic crosses its bound (``None``: none).

        ``z`` holds the statistics of the looks made so far (at most one per look).
        """
        if len(z) > len(self.bounds):
            raise ValueError(f"{len(z)} statistics for a design with {len(self.bounds)} looks")
        for k, (zk, ck) in enumerate(zip(z, self.bounds, strict=False)):
            if math.isfinite(zk) and (abs(zk) if self.sides == 2 else zk) >= ck:
                return k
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "information_fractions": list(self.information_fractions),
            "alpha": self.alpha,
            "spending": self.spending,
            "param": self.param,
            "sides": self.sides,
            "looks": [
                {
                    "look": k + 1,
                    "information_fraction": t,
                    "alpha_spent": a,
                    "bound": c,
                    "stage_level": p,
                }
                for k, (t, a, c, p) in enumerate(
                    zip(
                        self.information_fractions,
                        self.alpha_spent,
                        self.bounds,
                        self.stage_levels,
                        strict=True,
                    )
                )
            ],
        }


def group_sequential_design(
    information_fractions: Sequence[float],
    alpha: float = 0.025,
    spending: Spending | str = "obrien-fleming",
    *,
    sides: int = 1,
    param: float | None = None,
    user_spending: Sequence[float] | None = None,
) -> GroupSequentialDesign:
    """Boundaries per look that spend ``alpha`` along ``spending``.

    Args:
        information_fractions: strictly increasing, in (0, 1]; the last may be below 1
            (then only ``α(t_K)`` is spent, as rpact does).
        alpha: one-sided level (``sides=1``) or two-sided level (``sides=2``).
        spending: ``obrien-fleming``, ``pocock``, ``power`` (``param`` = ρ > 0) or ``hsd``
            (``param`` = γ).
        sides: 1 (reject for large Z) or 2 (symmetric, reject for large |Z|).
        param: the spending function's parameter, when it has one.
        user_spending: ``spending="user"`` only: cumulative alpha spent by each look
            (non-decreasing, the last at most ``alpha``).

    Raises:
        ValueError: invalid fractions or options.
    """
    t = np.asarray(information_fractions, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError("give at least one information fraction")
    if not np.all(np.isfinite(t)) or t[0] <= 0.0 or t[-1] > 1.0 or np.any(np.diff(t) <= 0.0):
        raise ValueError(
            f"information fractions must increase strictly within (0, 1], got {t.tolist()}"
        )
    if spending == "user":
        cumulative = _user_spending(user_spending, t.size, alpha, sides)
    elif user_spending is not None:
        raise ValueError("user_spending is for spending='user' only")
    else:
        cumulative = spent_alpha(t, alpha, spending, sides=sides, param=param)
    increments = np.diff(np.concatenate([[0.0], cumulative]))
    bounds: list[float] = []
    # The continuation region of the previous look: grid, Simpson weights, sub-density.
    grid = weights = density = np.empty(0)
    for k in range(t.size):
        if k == 0:
            c = float(special.ndtri(1.0 - increments[0] / sides))
        else:
            c = _solve_bound(grid, weights * density, t[k - 1], t[k], float(increments[k]), sides)
        bounds.append(c)
        if k + 1 < t.size:
            if not math.isfinite(c):
                raise ValueError(
                    f"look {k + 1} spends no alpha, so its region is unbounded; spend some "
                    "alpha at every look but the last"
                )
            new_grid, new_weights = _simpson_grid(-c if sides == 2 else _Z_FLOOR, c)
            if k == 0:
                density = _phi(new_grid)
            else:
                density = _propagate(grid, weights * density, t[k - 1], t[k], new_grid)
            grid, weights = new_grid, new_weights
    levels = [sides * float(special.ndtr(-c)) for c in bounds]
    return GroupSequentialDesign(
        information_fractions=tuple(float(x) for x in t),
        alpha=alpha,
        spending=str(spending),
        param=param,
        sides=sides,
        alpha_spent=tuple(float(x) for x in cumulative),
        bounds=tuple(bounds),
        stage_levels=tuple(levels),
    )


# ---------------------------------------------------------------------------- internals


def _check(alpha: float, spending: str, sides: int, param: float | None) -> None:
    problems = []
    if not (0.0 < alpha < 1.0 and math.isfinite(alpha)):
        problems.append(f"alpha == {alpha}, must be in (0, 1)")
    if spending not in SPENDING_FUNCTIONS:
        problems.append(f"spending == {spending!r}, must be one of {', '.join(SPENDING_FUNCTIONS)}")
    if sides not in (1, 2):
        problems.append(f"sides == {sides}, must be 1 or 2")
    if spending == "power" and (param is None or not param > 0.0 or not math.isfinite(param)):
        problems.append(f"power spending needs param (rho) > 0, got {param}")
    if spending == "hsd" and (param is None or not math.isfinite(param)):
        problems.append(f"hsd spending needs a finite param (gamma), got {param}")
    if spending in ("obrien-fleming", "pocock") and param is not None:
        problems.append(f"{spending} spending takes no param, got {param}")
    if problems:
        raise ValueError("; ".join(problems))


def _user_spending(
    values: Sequence[float] | None, looks: int, alpha: float, sides: int
) -> FloatArray:
    _check(alpha, "pocock", sides, None)
    if values is None or len(values) != looks:
        raise ValueError(f"spending='user' needs user_spending with one value per look ({looks})")
    out = np.asarray(values, dtype=np.float64)
    if (
        not np.all(np.isfinite(out))
        or out[0] < 0.0
        or np.any(np.diff(out) < 0.0)
        or out[-1] > alpha * (1.0 + 1e-9)
    ):
        raise ValueError(
            f"user_spending must be non-decreasing, >= 0 and at most alpha ({alpha}), "
            f"got {out.tolist()}"
        )
    return out


def _phi(z: FloatArray) -> FloatArray:
    return np.asarray(np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi), dtype=np.float64)


def _simpson_grid(lo: float, hi: float) -> tuple[FloatArray, FloatArray]:
    """Nodes and Simpson weights on [lo, hi] (an odd number of points)."""
    m = max(int((hi - lo) * _POINTS_PER_UNIT), 2)
    m += m % 2  # even number of intervals
    grid = np.linspace(lo, hi, m + 1)
    h = (hi - lo) / m
    weights = np.full(m + 1, 2.0)
    weights[1::2] = 4.0
    weights[0] = weights[-1] = 1.0
    return grid, weights * h / 3.0


def _propagate(
    grid: FloatArray, mass: FloatArray, t_prev: float, t_next: float, new_grid: FloatArray
) -> FloatArray:
    """Sub-density of ``Z`` at ``t_next`` on ``new_grid`` from the weighted sub-density
    (``mass`` = weights × density) of ``Z`` at ``t_prev`` on ``grid``."""
    s = math.sqrt(t_next - t_prev)
    a, b = math.sqrt(t_next), math.sqrt(t_prev)
    out = np.empty_like(new_grid)
    step = 512
    for i in range(0, new_grid.size, step):
        z = new_grid[i : i + step, None]
        out[i : i + step] = (_phi((z * a - grid[None, :] * b) / s) @ mass) * (a / s)
    return out


def _exit_probability(
    grid: FloatArray, mass: FloatArray, t_prev: float, t_next: float, c: float, sides: int
) -> float:
    """P(no crossing so far, crossing at ``t_next``) for bound ``c``."""
    s = math.sqrt(t_next - t_prev)
    a, b = math.sqrt(t_next), math.sqrt(t_prev)
    upper = special.ndtr((grid * b - c * a) / s)
    if sides == 2:
        upper = upper + special.ndtr((-c * a - grid * b) / s)
    return float(upper @ mass)


def _solve_bound(
    grid: FloatArray, mass: FloatArray, t_prev: float, t_next: float, target: float, sides: int
) -> float:
    """The bound whose exit probability equals ``target`` (``inf`` when nothing is spent)."""
    if target <= 0.0:
        return math.inf

    def gap(c: float) -> float:
        return _exit_probability(grid, mass, t_prev, t_next, c, sides) - target

    lo, hi = 0.0, 12.0
    if gap(lo) < 0.0:
        raise ValueError(
            "the spending increment exceeds what this look can reject; check the information "
            "fractions"
        )
    return float(optimize.brentq(gap, lo, hi, xtol=1e-12, rtol=1e-12))


__all__ = [
    "SPENDING_FUNCTIONS",
    "GroupSequentialDesign",
    "Spending",
    "group_sequential_design",
    "spent_alpha",
]
