"""String columns -> dense int32 codes, hashed straight from the Arrow buffers (numba).

Why: dictionary-encoding learner, item and domain strings through pyarrow (then sorting the
dictionary and re-indexing) was the largest cost of the feature pipeline. Here each chunk is
encoded by one pass over its offsets and UTF-8 bytes with an open-addressing hash table that
compares the *bytes* of colliding entries, so codes are exact (no reliance on a 64-bit hash
being collision-free). Consecutive equal strings (learner-clustered logs) skip the hash; in
plain string columns made of long runs only each run's first row is coded.
Chunks are merged at the end, and codes are renumbered to the rank of the value among the
sorted distinct values, i.e. exactly the codes of ``pc.dictionary_encode`` + a sorted dictionary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@nb.njit(cache=True, nogil=True, inline="always")
def _load8(data: np.ndarray, j: int) -> np.uint64:  # pragma: no cover - jit
    """8 bytes at ``data[j:]`` as a little-endian word (LLVM combines this into one load)."""
    return (
        np.uint64(data[j])
        | (np.uint64(data[j + 1]) << np.uint64(8))
        | (np.uint64(data[j + 2]) << np.uint64(16))
        | (np.uint64(data[j + 3]) << np.uint64(24))
        | (np.uint64(data[j + 4]) << np.uint64(32))
        | (np.uint64(data[j + 5]) << np.uint64(40))
        | (np.uint64(data[j + 6]) << np.uint64(48))
        | (np.uint64(data[j + 7]) << np.uint64(56))
    )


@nb.njit(cache=True, nogil=True, inline="always")
def _load_tail(data: np.ndarray, j: int, k: int) -> np.uint64:  # pragma: no cover - jit
    """``k`` < 8 bytes at ``data[j:]`` as a little-endian word."""
    w = np.uint64(0)
    for t in range(k):
        w |= np.uint64(data[j + t]) << np.uint64(8 * t)
    return w


@nb.njit(cache=True, nogil=True, inline="always")
def _bytes_hash(data: np.ndarray, a: int, b: int) -> np.uint64:  # pragma: no cover - jit
    """Word-at-a-time multiply-xorshift hash (only for table placement; bytes are compared)."""
    h = np.uint64(b - a) * np.uint64(0x9E3779B97F4A7C15)
    j = a
    while j + 8 <= b:
        h = (h ^ _load8(data, j)) * np.uint64(0xBF58476D1CE4E5B9)
        h = h ^ (h >> np.uint64(31))
        j += 8
    if j < b:
        h = (h ^ _load_tail(data, j, b - j)) * np.uint64(0x94D049BB133111EB)
    h = h ^ (h >> np.uint64(32))
    h = h * np.uint64(0xD6E8FEB86659FD93)
    h = h ^ (h >> np.uint64(32))
    return h


@nb.njit(cache=True, nogil=True, inline="always")
def _same_bytes(data: np.ndarray, a: int, b: int, c: int, d: int) -> bool:  # pragma: no cover
    if b - a != d - c:
        return False
    k = 0
    n = b - a
    while k + 8 <= n:
        if _load8(data, a + k) != _load8(data, c + k):
            return False
        k += 8
    return _load_tail(data, a + k, n - k) == _load_tail(data, c + k, n - k)


@nb.njit(cache=True, nogil=True)
def _encode_chunk(
    offsets: np.ndarray, data: np.ndarray, base: int
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - jit
    """Codes (``base`` + first-appearance index) and the first row of each distinct string."""
    n = offsets.shape[0] - 1
    codes = np.empty(n, np.int32)
    cap = 1024
    slots = np.full(cap, -1, np.int32)
    shash = np.zeros(cap, np.uint64)
    uhash = np.empty(256, np.uint64)
    first = np.empty(256, np.int64)
    nu = 0
    for i in range(n):
        a = offsets[i]
        b = offsets[i + 1]
        if i > 0 and _same_bytes(data, a, b, offsets[i - 1], a):
            codes[i] = codes[i - 1]
            continue
        h = _bytes_hash(data, a, b)
        mask = cap - 1
        s = np.int64(h & np.uint64(mask))
        while True:
            c = slots[s]
            if c < 0:
                if nu == uhash.shape[0]:
                    uhash2 = np.empty(2 * nu, np.uint64)
                    uhash2[:nu] = uhash
                    uhash = uhash2
                    first2 = np.empty(2 * nu, np.int64)
                    first2[:nu] = first
                    first = first2
                slots[s] = nu
                shash[s] = h
                uhash[nu] = h
                first[nu] = i
                codes[i] = base + nu
                nu += 1
                if 2 * nu > cap:  # keep the load factor <= 1/2
                    cap *= 2
                    slots = np.full(cap, -1, np.int32)
                    shash = np.zeros(cap, np.uint64)
                    m2 = cap - 1
                    for k in range(nu):
                        t = np.int64(uhash[k] & np.uint64(m2))
                        while slots[t] >= 0:
                            t = (t + 1) & m2
                        slots[t] = k
                        shash[t] = uhash[k]
                break
            if shash[s] == h:
                f = first[c]
                if _same_bytes(data, offsets[f], offsets[f + 1], a, b):
                    codes[i] = base + c
                    break
            s = (s + 1) & mask
    return codes, first[:nu].copy()


@nb.njit(cache=True, nogil=True, parallel=True)
def _remap(codes: np.ndarray, table: np.ndarray) -> None:  # pragma: no cover - jit
    for i in nb.prange(codes.shape[0]):
        codes[i] = table[codes[i]]


def _buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (int32/int64 as stored, sliced to the array) and UTF-8 bytes of a string array."""
    off_dtype = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=off_dtype)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


def _as_string(arr: pa.Array, fill: str | None, name: str) -> pa.Array:
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.string())
    if arr.null_count:
        if fill is None:
            raise ValueError(f"{name} must not contain nulls")
        arr = arr.fill_null(fill)
    return arr


@dataclass
class StringCoder:
    """Accumulates chunk codes of one string column; :meth:`finish` gives the sorted ranks.

    Not thread-safe; one coder per column. ``fill`` replaces nulls (None: nulls are an error).
    """

    name: str
    fill: str | None = None
    _uniques: list[pa.Array] = field(default_factory=list)
    _n_local: int = 0
    _last_key: tuple[int, ...] = ()
    _last_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    _last_dict: pa.Array | None = None

    def add(self, arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Provisional int32 codes of ``arr`` (renumber them with the table from :meth:`finish`).

        Plain string chunks are dictionary-encoded by Arrow (C++ hash table) first; dictionary
        chunks (e.g. Parquet read with ``read_dictionary``) are used as they are, so only their
        small dictionaries are hashed here (and chunks sharing a dictionary reuse its codes).
        """
        if isinstance(arr, pa.ChunkedArray):
            # one output array filled chunk by chunk: the per-chunk codes are small and their
            # memory is reused, where concatenating them would fault in a second full column
            out = np.empty(len(arr), np.int32)
            pos = 0
            for chunk in arr.chunks:
                out[pos : pos + len(chunk)] = self.add(chunk)
                pos += len(chunk)
            return out
        if len(arr) == 0:
            return np.zeros(0, np.int32)
        if not pa.types.is_dictionary(arr.type):
            plain = _as_string(arr, self.fill, self.name)
            heads = _long_run_heads(plain)
            if heads is not None:  # learner-clustered logs: code one row per run
                codes = self.add(pc.dictionary_encode(plain.take(pa.array(heads))))
                return np.repeat(codes, np.diff(np.append(heads, len(plain))))
            arr = pc.dictionary_encode(plain)
        assert isinstance(arr, pa.DictionaryArray)
        dcodes = self._dictionary_codes(arr.dictionary)
        indices = arr.indices
        if indices.null_count:
            if self.fill is None:
                raise ValueError(f"{self.name} must not contain nulls")
            fill_code = self._dictionary_codes(pa.array([self.fill], pa.string()))[0]
            null = np.asarray(indices.is_null().to_numpy(zero_copy_only=False), dtype=bool)
            idx = np.asarray(indices.fill_null(0).to_numpy(), dtype=np.int64)
            codes = dcodes[idx] if len(dcodes) else np.zeros(len(idx), np.int32)
            codes[null] = fill_code
            return codes
        return dcodes[np.asarray(indices.to_numpy())]

    def _dictionary_codes(self, dictionary: pa.Array) -> np.ndarray:
        key = (
            len(dictionary),
            dictionary.offset,
            *(b.address if b else 0 for b in dictionary.buffers()),
        )
        if key == self._last_key:
            return self._last_codes
        d = _as_string(dictionary, self.fill, self.name)
        offsets, data = _buffers(d)
        codes, first = _encode_chunk(offsets, data, self._n_local)
        self._uniques.append(d.take(pa.array(first)))
        self._n_local += len(first)
        # keep the dictionary alive: its buffer addresses must not be reused by another one
        self._last_key, self._last_codes, self._last_dict = key, codes, dictionary
        return codes

    def finish(self) -> tuple[np.ndarray, pa.Array]:
        """(provisional code -> rank among the sorted distinct values, sorted distinct values)."""
        if not self._uniques:
            return np.zeros(0, np.int32), pa.array([], pa.string())
        allu = pa.concat_arrays([u.cast(pa.large_string()) for u in self._uniques])
        if len(self._uniques) == 1:
            gcode, first = np.arange(len(allu), dtype=np.int32), np.arange(len(allu))
        else:
            off, data = _buffers(allu)
            gcode, first = _encode_chunk(off, data, 0)
        distinct = allu.take(pa.array(first)).cast(pa.string())
        sorted_pos = np.asarray(pc.array_sort_indices(distinct).to_numpy(), dtype=np.int64)
        rank = np.empty(len(sorted_pos), np.int32)
        rank[sorted_pos] = np.arange(len(sorted_pos), dtype=np.int32)
        return rank[gcode], distinct.take(pa.array(sorted_pos))


_RUN_PROBE_ROWS = 1 << 16


def _run_heads(arr: pa.Array) -> np.ndarray:
    """Rows whose value differs from the previous row's (row 0 included)."""
    n = len(arr)
    starts = np.ones(n, np.bool_)
    if n > 1:
        differs = pc.not_equal(arr.slice(1), arr.slice(0, n - 1))
        starts[1:] = differs.to_numpy(zero_copy_only=False)
    return np.flatnonzero(starts)


def _long_run_heads(arr: pa.Array) -> np.ndarray | None:
    """Run starts when equal values mostly come in runs (a probe of the first rows decides:
    at most one row in four starts a run), else None."""
    probe = arr.slice(0, _RUN_PROBE_ROWS)
    if len(arr) < 2 or 4 * len(_run_heads(probe)) > len(probe):
        return None
    return _run_heads(arr)


def remap_codes(codes: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``codes[i] = table[codes[i]]`` in place (int32); returns ``codes``.

    An identity table (values first seen in sorted order, e.g. learner ids of a sorted export)
    leaves the codes as they are without a pass over them.
    """
    if len(codes) and not np.array_equal(table, np.arange(len(table), dtype=table.dtype)):
        _remap(codes, table)
    return codes


def encode_strings(
    col: pa.Array | pa.ChunkedArray, fill: str | None = None
) -> tuple[np.ndarray, pa.Array]:
    """Codes (int32, rank among sorted distinct values) and the sorted distinct values."""
    coder = StringCoder("column", fill)
    codes = coder.add(col)
    table, distinct = coder.finish()
    return remap_codes(codes, table), distinct
