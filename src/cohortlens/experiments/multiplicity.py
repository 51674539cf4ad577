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


def adjust(pvalues: npt.ArrayLike, method: Correction) -> FloatArray:
    """Dispatch to :func:`adjust_holm`, :func:`adjust_bh`, or no correction (``"none"``)."""
    if method == "holm":
        return adjust_holm(pvalues)
    if method == "bh":
        return adjust_bh(pvalues)
    if method == "none":
        return _as_pvalues(pvalues).copy()
    raise ValueError(f"method == {method!r}, must be one of 'holm', 'bh', 'none'")


def _as_pvalues(pvalues: npt.ArrayLike) -> FloatArray:
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p-values must be one-dimensional, got shape {p.shape}")
    finite = p[~np.isnan(p)]
    if np.any((finite < 0) | (finite > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    return p


__all__ = ["Correction", "adjust", "adjust_bh", "adjust_holm"]
