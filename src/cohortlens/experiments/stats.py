"""Sufficient statistics: small frozen records that add together.

Every analysis in :mod:`cohortlens.experiments` runs on these records, never on raw rows, so
the same numbers can come from DuckDB over per-learner data, from a JSON file, or from a
nightly rollup, and shards or days merge by ``+``.

Per unit (learner) of one arm, a metric observes up to four values:

* ``y``: the metric value (a 0/1 outcome for binary metrics) or a ratio's numerator;
* ``d``: a ratio metric's denominator (absent for binary and mean metrics);
* ``x``: a pre-period covariate for CUPED (absent when there is none), or the numerator of
  a *ratio* covariate;
* ``w``: the denominator of a ratio covariate (CUPED of a ratio metric by its pre-period
  ratio; absent otherwise).

:class:`SufficientStats` keeps ``n`` and the sums and cross sums of those values, which is all
the delta method needs (means, variances and covariances of ``(y, d, x, w)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from cohortlens.experiments import _moments

FloatArray = npt.NDArray[np.float64]

_RATIO_FIELDS = ("sum_d", "sum_dd", "sum_yd")
_COVARIATE_FIELDS = ("sum_x", "sum_xx", "sum_xy")
_COVARIATE_RATIO_FIELDS = ("sum_w", "sum_ww", "sum_yw", "sum_xw")


@dataclass(frozen=True, slots=True)
class SufficientStats:
    """Sums over the units of one arm for one metric; ``a + b`` pools two disjoint sets.

    Attributes:
        n: number of units (learners) with a value for this metric.
        sum_y: Σy (for a binary metric: the number of successes).
        sum_yy: Σy² (equals ``sum_y`` for a binary metric).
        sum_d: Σd, ratio denominator (``None`` for binary and mean metrics).
        sum_dd: Σd².
        sum_yd: Σy·d.
        sum_x: Σx, pre-period covariate (``None`` without CUPED).
        sum_xx: Σx².
        sum_xy: Σx·y.
        sum_xd: Σx·d (only when there is both a denominator and a covariate).
        sum_w: Σw, denominator of a ratio covariate (``None`` otherwise; needs ``x``).
        sum_ww: Σw².
        sum_yw: Σy·w.
        sum_xw: Σx·w.
        sum_dw: Σd·w (only when there is both a denominator and ``w``).

    Raises:
        TypeError: ``n`` is not an integer.
        ValueError: a count or sum of squares is negative, or the optional groups are
            incomplete (e.g. ``sum_d`` without ``sum_dd``).
    """

    n: int
    sum_y: float
    sum_yy: float
    sum_d: float | None = None
    sum_dd: float | None = None
    sum_yd: float | None = None
    sum_x: float | None = None
    sum_xx: float | None = None
    sum_xy: float | None = None
    sum_xd: float | None = None
    sum_w: float | None = None
    sum_ww: float | None = None
    sum_yw: float | None = None
    sum_xw: float | None = None
    sum_dw: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int | np.integer):
            raise TypeError(f"n must be an int, got {type(self.n).__name__}")
        if self.n < 0:
            raise ValueError(f"n == {self.n}, must be >= 0")
        for group in (_RATIO_FIELDS, _COVARIATE_FIELDS, _COVARIATE_RATIO_FIELDS):
            present = [getattr(self, f) is not None for f in group]
            if any(present) and not all(present):
                raise ValueError(f"{', '.join(group)} must be given together or not at all")
        if self.has_covariate_ratio and not self.has_covariate:
            raise ValueError(
                "a covariate denominator (sum_w, ...) needs the covariate (sum_x, ...)"
            )
        needs_xd = self.has_ratio and self.has_covariate
        if needs_xd != (self.sum_xd is not None):
            raise ValueError(
                "sum_xd is required exactly when both a denominator and a covariate exist"
            )
        needs_dw = self.has_ratio and self.has_covariate_ratio
        if needs_dw != (self.sum_dw is not None):
            raise ValueError(
                "sum_dw is required exactly when both a denominator and a covariate "
                "denominator exist"
            )
        for name in ("sum_yy", "sum_dd", "sum_xx", "sum_ww"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} == {value}, must be >= 0 (it is a sum of squares)")
        for f in fields(self)[1:]:
            value = getattr(self, f.name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{f.name} == {value}, must be finite")
        if self.n == 0 and any(
            getattr(self, f.name) not in (None, 0, 0.0) for f in fields(self)[1:]
        ):
            raise ValueError("an empty arm (n == 0) must have all sums equal to 0")
        if self.n > 0:
            problem = _moments.impossible(self.n, *_moments.raw_sums(self), self.columns)
            if problem:
                raise ValueError(f"impossible sums: {problem}")

    # ------------------------------------------------------------------ shape
    @property
    def has_ratio(self) -> bool:
        """True when the record carries a ratio denominator ``d``."""
        return self.sum_d is not None

    @property
    def has_covariate(self) -> bool:
        """True when the record carries a pre-period covariate ``x`` (CUPED)."""
        return self.sum_x is not None

    @property
    def has_covariate_ratio(self) -> bool:
        """True when the covariate is a ratio ``x / w`` (CUPED of a ratio by a ratio)."""
        return self.sum_w is not None

    @property
    def columns(self) -> tuple[str, ...]:
        """The per-unit values summarised, in the order used by :meth:`moments`."""
        return (
            ("y",)
            + (("d",) if self.sum_d is not None else ())
            + (("x",) if self.sum_x is not None else ())
            + (("w",) if self.sum_w is not None else ())
        )

    # ------------------------------------------------------------------ algebra
    def __add__(self, other: object) -> SufficientStats:
        """Pool two disjoint sets of units (shards, days) exactly: every sum adds."""
        if not isinstance(other, SufficientStats):
            return NotImplemented
        if self.columns != other.columns:
            raise ValueError(f"cannot add statistics over {self.columns} and {other.columns}")
        out = object.__new__(SufficientStats)
        for name in _FIELD_NAMES:
            a, b = getattr(self, name), getattr(other, name)
            value = None if a is None else a + b
            if value is not None and name != "n" and not math.isfinite(value):
                raise ValueError(f"{name} overflows: {a!r} + {b!r}")
            object.__setattr__(out, name, value)
        # Sums of two valid records are valid (a pooled covariance is a sum of positive
        # semi-definite terms), so the checks of __post_init__ are not repeated.
        return out

    @classmethod
    def empty_like(cls, other: SufficientStats) -> SufficientStats:
        """The zero record with the same columns as ``other`` (neutral element of ``+``)."""
        zeros: dict[str, Any] = {
            f.name: None if getattr(other, f.name) is None else 0.0 for f in fields(other)
        }
        return cls(**(zeros | {"n": 0}))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        y: npt.ArrayLike,
        d: npt.ArrayLike | None = None,
        x: npt.ArrayLike | None = None,
        w: npt.ArrayLike | None = None,
    ) -> SufficientStats:
        """Reduce per-unit arrays (same length, no NaN) to sufficient statistics.

        Meant for tests and small in-memory data; large data goes through
        :mod:`cohortlens.experiments.reduce` (DuckDB).
        """
        arrays = {"y": np.asarray(y, dtype=np.float64)}
        for name, arr in (("d", d), ("x", x), ("w", w)):
            if arr is not None:
                arrays[name] = np.asarray(arr, dtype=np.float64)
        if "w" in arrays and "x" not in arrays:
            raise ValueError("w (a covariate denominator) needs x")
        for name, arr in arrays.items():
            if arr.shape != arrays["y"].shape:
                raise ValueError(f"{name} has shape {arr.shape}, y has {arrays['y'].shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} contains NaN or infinite values")
        out: dict[str, Any] = {"n": int(arrays["y"].size)}
        names = list(arrays)
        for i, a in enumerate(names):
            out[f"sum_{a}"] = float(arrays[a].sum())
            for b in names[i:]:
                out[_moments.cross_field(a, b)] = float(arrays[a] @ arrays[b])
        return cls(**out)

    def to_dict(self) -> dict[str, float | int]:
        """The JSON shape (docs/EXPERIMENTS.md): absent groups are left out."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, binary: bool = False) -> SufficientStats:
        """Build from the JSON shape; for binary metrics ``sum_yy`` defaults to ``sum_y``.

        Raises:
            ValueError: unknown keys, missing ``n``/``sum_y``, or invalid values.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}"
            )
        values = dict(data)
        if "n" not in values or "sum_y" not in values:
            raise ValueError("statistics need at least 'n' and 'sum_y'")
        n = values["n"]
        if isinstance(n, float) and n.is_integer():
            values["n"] = int(n)
        if "sum_yy" not in values:
            if not binary:
                raise ValueError("'sum_yy' is required for mean and ratio metrics")
            values["sum_yy"] = values["sum_y"]
        if binary and not (0 <= float(values["sum_y"]) <= values["n"]):
            raise ValueError(
                f"binary metric: sum_y == {values['sum_y']} successes, "
                f"must be in [0, n={values['n']}]"
            )
        for key, value in values.items():
            if key != "n" and value is not None:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{key} must be a number, got {value!r}")
                if not math.isfinite(value):
                    raise ValueError(f"{key} == {value}, must be finite")
                values[key] = float(value)
        return cls(**values)

    # ------------------------------------------------------------------ moments
    def moments(self, ddof: int = 1) -> tuple[FloatArray, FloatArray]:
        """Mean vector and covariance matrix of :attr:`columns` (divisor ``n - ddof``).

        Variances that are zero up to floating-point cancellation are returned as exact
        zeros (together with their covariances) so constant data reads as zero variance.
        Requires ``n > ddof``.
        """
        if self.n <= ddof:
            raise ValueError(f"moments need n > ddof; n == {self.n}, ddof == {ddof}")
        mean, cov = _moments.moments(self.n, *_moments.raw_sums(self), ddof)
        return np.asarray(mean, dtype=np.float64), np.asarray(cov, dtype=np.float64)


_FIELD_NAMES = tuple(f.name for f in fields(SufficientStats))


@dataclass(frozen=True)
class ExperimentStats:
    """Everything the analysis needs for one period (or the pooled experiment).

    Attributes:
        units: assigned units per variant (for the SRM check), including units that miss
            some metric values.
        metrics: metric name -> variant -> :class:`SufficientStats`.
        label: a name for the period (for example a date), used on sequential charts.
    """

    units: Mapping[str, int]
    metrics: Mapping[str, Mapping[str, SufficientStats]] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        for variant, count in self.units.items():
            if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
                raise ValueError(f"units[{variant!r}] == {count!r}, must be an int >= 0")
        for metric, arms in self.metrics.items():
            unknown = sorted(set(arms) - set(self.units))
            if unknown:
                raise ValueError(
                    f"metric {metric!r} has statistics for unknown variant(s) {', '.join(unknown)}"
                )

    @property
    def variants(self) -> tuple[str, ...]:
        """Variant names in the order of :attr:`units`."""
        return tuple(self.units)

    def __add__(self, other: object) -> ExperimentStats:
        """Pool two periods: units and every metric's statistics add per variant."""
        if not isinstance(other, ExperimentStats):
            return NotImplemented
        units = dict(self.units)
        for v, c in other.units.items():
            units[v] = units.get(v, 0) + c
        metrics: dict[str, dict[str, SufficientStats]] = {
            m: dict(a) for m, a in self.metrics.items()
        }
        for m, arms in other.metrics.items():
            merged = metrics.setdefault(m, {})
            for v, s in arms.items():
                merged[v] = merged[v] + s if v in merged else s
        label = other.label or self.label
        return ExperimentStats(units=units, metrics=metrics, label=label)


__all__ = ["ExperimentStats", "SufficientStats"]
