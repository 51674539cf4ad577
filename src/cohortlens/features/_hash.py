"""Stable learner hash: FNV-1a 64 over the UTF-8 bytes, then the SplitMix64 finalizer.

Python's ``hash`` is salted per process, so it cannot assign learners to partitions that
must agree across processes, machines and engines. This function depends only on the bytes
of ``learner_id``; a Spark job can reproduce it with a pandas/Arrow UDF (docs/FEATURES.md).
"""

from __future__ import annotations

import numba as nb
import numpy as np
import pyarrow as pa

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@nb.njit(cache=True, nogil=True)
def _fnv_splitmix(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:  # pragma: no cover - jit
    n = offsets.shape[0] - 1
    out = np.empty(n, np.uint64)
    for i in range(n):
        h = np.uint64(0xCBF29CE484222325)
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * np.uint64(0x100000001B3)
        h = h ^ (h >> np.uint64(30))
        h = h * np.uint64(0xBF58476D1CE4E5B9)
        h = h ^ (h >> np.uint64(27))
        h = h * np.uint64(0x94D049BB133111EB)
        h = h ^ (h >> np.uint64(31))
        out[i] = h
    return out


def _string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (int64, rebased to the slice) and UTF-8 bytes of a string array."""
    if pa.types.is_large_string(arr.type):
        off_dtype: type[np.signedinteger] = np.int64
    elif pa.types.is_string(arr.type):
        off_dtype = np.int32
    else:
        arr = arr.cast(pa.string())
        off_dtype = np.int32
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=off_dtype)[arr.offset : arr.offset + len(arr) + 1]
    offsets = offsets.astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


def learner_hash(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """64-bit stable hash of each id (uint64): FNV-1a 64 of the UTF-8 bytes, then SplitMix64."""
    if isinstance(ids, pa.ChunkedArray):
        parts = [learner_hash(c) for c in ids.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    if ids.null_count:
        raise ValueError("learner_id must not contain nulls")
    if len(ids) == 0:
        return np.zeros(0, np.uint64)
    offsets, data = _string_buffers(ids)
    return _fnv_splitmix(offsets, data)


def partition_of(ids: pa.Array | pa.ChunkedArray, n_partitions: int) -> np.ndarray:
    """Partition (bucket) of each learner: ``learner_hash(id) % n_partitions`` as int64."""
    if n_partitions < 1:
        raise ValueError("n_partitions must be >= 1")
    return (learner_hash(ids) % np.uint64(n_partitions)).astype(np.int64)


def in_fit_sample(hashes: np.ndarray, permille: int) -> np.ndarray:
    """Whether a learner belongs to the population-fit sample (``(h >> 32) % 1000 < permille``)."""
    return ((hashes >> np.uint64(32)) % np.uint64(1000)).astype(np.int64) < permille
