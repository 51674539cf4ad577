"""Corrections for testing many metrics (and treatments) at once.

* :func:`adjust_holm`: Holm's step-down procedure; controls the family-wise error rate
  (the chance of *any* false positive) under any dependence between the tests.
* :func:`adjust_bh`: Benjamini–Hochberg step-up; controls the false discovery rate (the
  expected share of false positives among the claimed effects) for independent or
  positively dependent tests.

Both return adjusted p-values (compare them with alpha). NaN entries (comparisons that could
not be computed) are left out of the family and stay NaN.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

Correction = Literal["holm", "bh", "none"]
#: Every adjustment :func:`adjust` knows (tea-tasting's and statsmodels' names in the docs).
Method = Literal[
    "none",
    "bonferroni",
    "sidak",
    "holm",
    "holm-sidak",
    "hochberg",
    "hochberg-sidak",
    "bh",
    "by",
]
FloatArray = npt.NDArray[np.float64]


def adjust_holm(pvalues: npt.ArrayLike) -> FloatArray:
    """Holm step-down adjusted p-values: ``max_{j<=i} min(1, (m - j + 1) p_(j))``."""
    p = _as_pvalues(pvalues)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    if m:
        order = np.argsort(q, kind="stable")
        stepped = np.maximum.accumulate((m - np.arange(m)) * q[order])
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(stepped, 1.0)
        out[ok] = adjusted
    return out


def adjust_bh(pvalues: npt.ArrayLike) -> FloatArray:
    """Benjamini–Hochberg adjusted p-values: ``min_{j>=i} min(1, m p_(j) / j)``."""
    p = _as_pvalues(pvalues)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    if m:
        order = np.argsort(q, kind="stable")
        scaled = q[order] * m / np.arange(1, m + 1)
        stepped = np.minimum.accumulate(scaled[::-1])[::-1]
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(stepped, 1.0)
        out[ok] = adjusted
    return out


def _factor(q: FloatArray, k: FloatArray, sidak: bool) -> FloatArray:
    """``k·p`` (Bonferroni) or ``1 - (1 - p)^k`` (Šidák), capped at 1."""
    out = -np.expm1(k * np.log1p(-q)) if sidak else k * q
    return np.asarray(np.minimum(out, 1.0), dtype=np.float64)


def adjust(pvalues: npt.ArrayLike, method: str) -> FloatArray:
    """Adjusted p-values by ``method`` (NaN entries stay NaN and are not counted).

    * ``bonferroni`` / ``sidak``: single step, ``m·p`` / ``1 - (1-p)^m`` (FWER);
    * ``holm`` / ``holm-sidak``: step-down with factors ``m - i + 1`` (FWER, any dependence);
    * ``hochberg`` / ``hochberg-sidak``: step-up with the same factors (FWER under
      independence or positive dependence; tea-tasting's ``adjust_fwer`` default is
      ``hochberg-sidak``);
    * ``bh``: Benjamini–Hochberg (FDR, independent or positively dependent tests);
    * ``by``: Benjamini–Yekutieli, BH times ``Σ 1/i`` (FDR under any dependence);
    * ``none``: the p-values unchanged.
    """
    p = _as_pvalues(pvalues)
    if method == "none":
        return p.copy()
    if method == "holm":
        return adjust_holm(p)
    if method == "bh":
        return adjust_bh(p)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    if not m:
        return out
    order = np.argsort(q, kind="stable")
    sq = q[order]
    rank = np.arange(1, m + 1, dtype=np.float64)
    if method in ("bonferroni", "sidak"):
        adjusted_sorted = _factor(sq, np.full(m, float(m)), method == "sidak")
    elif method == "holm-sidak":
        adjusted_sorted = np.maximum.accumulate(_factor(sq, m - rank + 1, True))
    elif method in ("hochberg", "hochberg-sidak"):
        raw = _factor(sq, m - rank + 1, method == "hochberg-sidak")
        adjusted_sorted = np.minimum.accumulate(raw[::-1])[::-1]
    elif method == "by":
        scaled = sq * m * float(np.sum(1.0 / rank)) / rank
        adjusted_sorted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    else:
        raise ValueError(f"method == {method!r}, must be one of {', '.join(METHODS)}")
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    out[ok] = adjusted
    return out


#: The names :func:`adjust` accepts.
METHODS: tuple[str, ...] = (
    "none",
    "bonferroni",
    "sidak",
    "holm",
    "holm-sidak",
    "hochberg",
    "hochberg-sidak",
    "bh",
    "by",
)


def _as_pvalues(pvalues: npt.ArrayLike) -> FloatArray:
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p-values must be one-dimensional, got shape {p.shape}")
    finite = p[~np.isnan(p)]
    if np.any((finite < 0) | (finite > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    return p


__all__ = ["METHODS", "Correction", "Method", "adjust", "adjust_bh", "adjust_holm"]
