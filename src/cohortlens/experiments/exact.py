"""Small-sample methods on counts: exact tests, score intervals, an exact SRM check.

For binary metrics with few learners (an early look, a small cohort), where the z-test's
normal approximation is poor:

* :func:`fisher_exact_test` and :func:`barnard_exact_test`: exact tests of ``p_t = p_c``
  on the 2x2 table (scipy's implementations; Barnard's unconditional test is the more
  powerful of the two);
* :func:`newcombe_interval`: Newcombe's hybrid score interval for ``p_t - p_c`` (method 10
  of Newcombe 1998: Wilson intervals of each rate, combined);
* :func:`katz_interval`: Katz's log interval for the risk ratio ``p_t / p_c``;
* :func:`srm_binomial`: the exact binomial SRM test for two arms.
"""

from __future__ import annotations

import math
from typing import Literal

from scipy import special, stats

Alternative = Literal["two-sided", "greater", "less"]
_SCIPY_ALT = {"two-sided": "two-sided", "greater": "greater", "less": "less"}


def _check(successes: int, n: int, name: str) -> None:
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(
            f"{name}: successes == {successes}, n == {n}; need 0 <= successes <= n, n > 0"
        )


def _table(sc: int, nc: int, st: int, nt: int) -> list[list[int]]:
    _check(sc, nc, "control")
    _check(st, nt, "treatment")
    return [[st, nt - st], [sc, nc - sc]]


def fisher_exact_test(
    successes_c: int, n_c: int, successes_t: int, n_t: int, alternative: Alternative = "two-sided"
) -> float:
    """Fisher's exact p-value (conditional on the margins); ``greater``: ``p_t > p_c``."""
    table = _table(successes_c, n_c, successes_t, n_t)
    return float(stats.fisher_exact(table, alternative=_SCIPY_ALT[alternative]).pvalue)


def barnard_exact_test(
    successes_c: int, n_c: int, successes_t: int, n_t: int, alternative: Alternative = "two-sided"
) -> float:
    """Barnard's exact unconditional p-value (pooled-variance Wald statistic)."""
    table = _table(successes_c, n_c, successes_t, n_t)
    # scipy's table is columns = groups: transpose ours (rows = groups).
    cols = [[table[0][0], table[1][0]], [table[0][1], table[1][1]]]
    return float(stats.barnard_exact(cols, alternative=_SCIPY_ALT[alternative]).pvalue)


def _wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def newcombe_interval(
    successes_c: int, n_c: int, successes_t: int, n_t: int, alpha: float = 0.05
) -> tuple[float, float]:
    """Newcombe's hybrid score interval for ``p_t - p_c``."""
    _table(successes_c, n_c, successes_t, n_t)
    z = float(special.ndtri(1 - alpha / 2))
    p_t, p_c = successes_t / n_t, successes_c / n_c
    l_t, u_t = _wilson(successes_t, n_t, z)
    l_c, u_c = _wilson(successes_c, n_c, z)
    d = p_t - p_c
    lower = d - math.sqrt((p_t - l_t) ** 2 + (u_c - p_c) ** 2)
    upper = d + math.sqrt((u_t - p_t) ** 2 + (p_c - l_c) ** 2)
    return lower, upper


def katz_interval(
    successes_c: int, n_c: int, successes_t: int, n_t: int, alpha: float = 0.05
) -> tuple[float, float]:
    """Katz's log interval for the risk ratio ``p_t / p_c`` (needs successes in both arms)."""
    _table(successes_c, n_c, successes_t, n_t)
    if successes_c == 0 or successes_t == 0:
        raise ValueError("the Katz interval needs at least one success in each arm")
    z = float(special.ndtri(1 - alpha / 2))
    log_rr = math.log((successes_t / n_t) / (successes_c / n_c))
    se = math.sqrt(1 / successes_t - 1 / n_t + 1 / successes_c - 1 / n_c)
    return math.exp(log_rr - z * se), math.exp(log_rr + z * se)


def srm_binomial(units_a: int, units_b: int, weight_a: float = 0.5) -> float:
    """Exact two-sided binomial p-value of ``units_a`` out of ``units_a + units_b`` at
    the design share ``weight_a`` (the SRM check for two arms and small counts)."""
    if units_a < 0 or units_b < 0 or units_a + units_b == 0:
        raise ValueError(f"units == ({units_a}, {units_b}); need counts >= 0, not both 0")
    if not 0.0 < weight_a < 1.0:
        raise ValueError(f"weight_a == {weight_a}, must be in (0, 1)")
    return float(stats.binomtest(units_a, units_a + units_b, weight_a).pvalue)


__all__ = [
    "barnard_exact_test",
    "fisher_exact_test",
    "katz_interval",
    "newcombe_interval",
    "srm_binomial",
]
