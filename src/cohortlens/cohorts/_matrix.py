"""Feature table -> float matrix on the analysis scale (NaN = null), vectorized."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cohortlens.cohorts.params import FeatureSpec
from cohortlens.errors import InputError

#: Anything column-addressable: an Arrow table or record batch, a pandas DataFrame, or a
#: mapping of column name -> array-like.
FeatureTable: TypeAlias = pa.Table | pa.RecordBatch | Mapping[str, Any]

_LOG_FLOOR = 1e-6
_LOGIT_EPS = 1e-3


def column_names(table: FeatureTable) -> list[str]:
    """Column names of any supported table."""
    if isinstance(table, pa.Table | pa.RecordBatch):
        return list(table.column_names)
    return [str(c) for c in table]


def n_rows(table: FeatureTable) -> int:
    """Row count of any supported table."""
    if isinstance(table, pa.Table | pa.RecordBatch):
        return int(table.num_rows)
    names = column_names(table)
    return len(table[names[0]]) if names else 0


def float_column(table: FeatureTable, name: str) -> np.ndarray:
    """One column as float64, nulls as NaN (raises :class:`InputError` when absent)."""
    if name not in column_names(table):
        raise InputError(
            f"feature table: missing column {name!r}; found {', '.join(column_names(table))}"
        )
    col = table[name]
    if isinstance(col, pa.ChunkedArray | pa.Array):
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.int64())
        filled = pc.fill_null(col.cast(pa.float64()), np.nan)
        return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.float64)
    arr = np.asarray(col, dtype=np.float64)
    return arr.astype(np.float64, copy=True)


def string_column(table: FeatureTable, name: str) -> np.ndarray:
    """One column as a numpy array of Python strings (None for null)."""
    col = table[name]
    if isinstance(col, pa.ChunkedArray | pa.Array):
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)
    return np.asarray(col, dtype=object)


def apply_transform(x: np.ndarray, transform: str) -> np.ndarray:
    """Map raw values to the analysis scale (NaN stays NaN)."""
    if transform == "log":
        return np.log(np.maximum(x, _LOG_FLOOR))
    if transform == "logit":
        p = np.clip(x, _LOGIT_EPS, 1.0 - _LOGIT_EPS)
        return np.log(p / (1.0 - p))
    return x


def invert_transform(z: np.ndarray, transform: str) -> np.ndarray:
    """Back from the analysis scale to original units."""
    if transform == "log":
        return np.exp(z)
    if transform == "logit":
        return 1.0 / (1.0 + np.exp(-z))
    return z


def raw_matrix(table: FeatureTable, specs: Sequence[FeatureSpec]) -> np.ndarray:
    """Columns of ``specs`` in original units, shape (n, d), NaN for null."""
    n = n_rows(table)
    out = np.empty((n, len(specs)), dtype=np.float64)
    for j, spec in enumerate(specs):  # loop over features (a handful), not learners
        out[:, j] = float_column(table, spec.column)
    return out


def analysis_matrix(table: FeatureTable, specs: Sequence[FeatureSpec]) -> np.ndarray:
    """Columns of ``specs`` on their analysis scale, shape (n, d), NaN for null or inf."""
    raw = raw_matrix(table, specs)
    for j, spec in enumerate(specs):
        raw[:, j] = apply_transform(raw[:, j], spec.transform)
    raw[~np.isfinite(raw)] = np.nan
    return raw


def array_matrix(x: np.ndarray, specs: Sequence[FeatureSpec]) -> np.ndarray:
    """A raw-units array whose columns follow ``specs`` -> analysis scale."""
    arr = np.array(x, dtype=np.float64, ndmin=2)
    if arr.shape[1] != len(specs):
        raise InputError(
            f"feature array has {arr.shape[1]} columns; the model expects {len(specs)} "
            f"({', '.join(s.column for s in specs)})"
        )
    for j, spec in enumerate(specs):
        arr[:, j] = apply_transform(arr[:, j], spec.transform)
    arr[~np.isfinite(arr)] = np.nan
    return arr
