"""Robust scaling: winsorize at training quantiles, centre on the median, divide by the IQR.

k-means weighs every feature by the inverse of its spread. The median and the interquartile
range describe the bulk of learners whatever their tails (heavy-tailed activity, a few
learners with a year-long half-life), and clipping at the ``clip_quantile`` / ``1 -
clip_quantile`` training quantiles stops a handful of extreme learners from pulling a centroid
of their own. All statistics are learned once, stored with the model, and reused to assign new
learners (never re-estimated on the data being assigned).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Normal-consistency factor of the median absolute deviation.
_MAD_TO_SD = 1.4826
_TINY = 1e-12


@dataclass(frozen=True)
class RobustScaler:
    """Learned per-feature statistics on the analysis scale (arrays of length d).

    Attributes:
        lower, upper: winsorizing bounds (training quantiles).
        center: training median (after winsorizing).
        scale: training IQR; where the IQR is 0 (a feature mostly at one value), the scaled
            MAD, then the standard deviation, then 1.
    """

    lower: np.ndarray
    upper: np.ndarray
    center: np.ndarray
    scale: np.ndarray

    @staticmethod
    def fit(x: np.ndarray, clip_quantile: float = 0.005) -> RobustScaler:
        """Learn the statistics of ``x`` (n, d), ignoring NaN; every column needs a value."""
        q = np.nanquantile(x, [clip_quantile, 1.0 - clip_quantile], axis=0)
        lower, upper = q[0], q[1]
        clipped = np.clip(x, lower, upper)
        q25, med, q75 = np.nanquantile(clipped, [0.25, 0.5, 0.75], axis=0)
        scale = q75 - q25
        mad = _MAD_TO_SD * np.nanmedian(np.abs(clipped - med), axis=0)
        sd = np.nanstd(clipped, axis=0)
        scale = np.where(scale > _TINY, scale, np.where(mad > _TINY, mad, sd))
        scale = np.where(scale > _TINY, scale, 1.0)
        return RobustScaler(lower, upper, med, scale)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Analysis scale -> scaled units (NaN stays NaN)."""
        return (np.clip(x, self.lower, self.upper) - self.center) / self.scale

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        """Scaled units -> analysis scale (clipping is not undone)."""
        return z * self.scale + self.center

    def take(self, columns: np.ndarray) -> RobustScaler:
        """The statistics of a subset of features."""
        return RobustScaler(
            self.lower[columns], self.upper[columns], self.center[columns], self.scale[columns]
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (lists of floats)."""
        return {
            "lower": self.lower.tolist(),
            "upper": self.upper.tolist(),
            "center": self.center.tolist(),
            "scale": self.scale.tolist(),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> RobustScaler:
        """Inverse of :meth:`to_dict`."""
        return RobustScaler(
            *(np.asarray(d[k], dtype=np.float64) for k in ("lower", "upper", "center", "scale"))
        )
