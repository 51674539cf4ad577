"""Global statistics as JSON, kept with a feature table so new learners can be scored later.

The service computes features of learners it has not seen (``POST /v1/cohorts/assign`` with
events) against the *same* item difficulties, retention and velocity populations as the
stored run (runs written before the velocity population existed decode with its defaults); the
feature table carries them in its schema metadata under :data:`STATS_KEY`. Encoding is
generic over the dataclass fields (NumPy arrays, Arrow arrays, scalars, tuples), so a new
field in :class:`~cohortlens.features.stats.ItemStats` needs no change here.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pyarrow as pa

from cohortlens.features.stats import (
    GlobalStats,
    ItemStats,
    RetentionPopulation,
    VelocityPopulation,
)

#: Schema-metadata key of the encoded :class:`GlobalStats`.
STATS_KEY = b"cohortlens.global_stats"


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"numpy": str(value.dtype), "values": value.tolist()}
    if isinstance(value, pa.Array | pa.ChunkedArray):
        return {"arrow": str(value.type), "values": value.to_pylist()}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "numpy" in value:
            return np.asarray(value["values"], dtype=np.dtype(value["numpy"]))
        if "arrow" in value:
            typ = {"string": pa.string(), "large_string": pa.large_string()}.get(value["arrow"])
            return pa.array(value["values"], typ)
        if "tuple" in value:
            return tuple(_decode(v) for v in value["tuple"])
    return value


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def stats_to_json(stats: GlobalStats) -> str:
    """One JSON document holding every field of ``stats``."""
    return json.dumps(
        {
            "items": _fields(stats.items),
            "retention": _fields(stats.retention),
            "velocity": _fields(stats.velocity),
        }
    )


def stats_from_json(text: str | bytes) -> GlobalStats:
    """The inverse of :func:`stats_to_json`."""
    raw = json.loads(text)
    items = ItemStats(**{k: _decode(v) for k, v in raw["items"].items()})
    retention = RetentionPopulation(**{k: _decode(v) for k, v in raw["retention"].items()})
    velocity = VelocityPopulation(**{k: _decode(v) for k, v in raw.get("velocity", {}).items()})
    return GlobalStats(items=items, retention=retention, velocity=velocity)


def attach_stats(features: pa.Table, stats: GlobalStats) -> pa.Table:
    """``features`` with ``stats`` in its schema metadata (kept by Parquet and the store)."""
    meta = dict(features.schema.metadata or {})
    meta[STATS_KEY] = stats_to_json(stats).encode()
    return features.replace_schema_metadata(meta)


def stats_of(features: pa.Table) -> GlobalStats | None:
    """The global statistics a feature table was computed with, if it carries them."""
    meta = features.schema.metadata or {}
    text = meta.get(STATS_KEY)
    return stats_from_json(text) if text is not None else None
