"""String columns -> dense int32 codes, hashed straight from the Arrow buffers (numba).

Why: dictionary-encoding learner, item and domain strings through pyarrow (then sorting the
dictionary and re-indexing) was the largest cost of the feature pipeline. Here each chunk is
encoded by one pass over its offsets and UTF-8 bytes with an open-addressing hash table that
compares the *bytes* of colliding entries, so codes are exact (no reliance on a 64-bit hash
being collision-free). Consecutive equal strings (learner-clustered logs) skip the hash.
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
    """8 bytes at ``data[j:]`` as a little-endian word (LLVM combines this into one load).

    Unsigned indices: numba then skips the negative-index fix-up that kept the loads apart.
    """
    u = np.uint64(j)
    return (
        np.uint64(data[u])
        | (np.uint64(data[u + np.uint64(1)]) << np.uint64(8))
        | (np.uint64(data[u + np.uint64(2)]) << np.uint64(16))
        | (np.uint64(data[u + np.uint64(3)]) << np.uint64(24))
        | (np.uint64(data[u + np.uint64(4)]) << np.uint64(32))
        | (np.uint64(data[u + np.uint64(5)]) << np.uint64(40))
        | (np.uint64(data[u + np.uint64(6)]) << np.uint64(48))
        | (np.uint64(data[u + np.uint64(7)]) << np.uint64(56))
    )


@nb.njit(cache=True, nogil=True, inline="always")
def _load_tail(data: np.ndarray, j: int, k: int) -> np.uint64:  # pragma: no cover - jit
    """``k`` < 8 bytes at ``data[j:]`` as a little-endian word."""
    w = np.uint64(0)
    u = np.uint64(j)
    for t in range(k):
        w |= np.uint64(data[u + np.uint64(t)]) << np.uint64(8 * t)
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
    if j < b:  # the last 8 bytes when there are 8 (one load), else the short string bytewise
        tail = _load8(data, b - 8) if b - a >= 8 else _load_tail(data, j, b - j)
        h = (h ^ tail) * np.uint64(0x94D049BB133111EB)
    h = h ^ (h >> np.uint64(32))
    h = h * np.uint64(0xD6E8FEB86659FD93)
    h = h ^ (h >> np.uint64(32))
    return h


@nb.njit(cache=True, nogil=True, inline="always")
def _same_bytes(data: np.ndarray, a: int, b: int, c: int, d: int) -> bool:  # pragma: no cover
    return _same_bytes2(data, a, b, data, c, d)


@nb.njit(cache=True, nogil=True, inline="always")
def _same_bytes2(
    x: np.ndarray, a: int, b: int, y: np.ndarray, c: int, d: int
) -> bool:  # pragma: no cover - jit
    """Whether ``x[a:b]`` and ``y[c:d]`` hold the same bytes."""
    if b - a != d - c:
        return False
    n = b - a
    if n < 8:
        return _load_tail(x, a, n) == _load_tail(y, c, n)
    k = 0
    while k + 8 <= n:
        if _load8(x, a + k) != _load8(y, c + k):
            return False
        k += 8
    # the last 8 bytes (overlapping the words compared) instead of a byte-wise tail
    return k == n or _load8(x, b - 8) == _load8(y, d - 8)


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
    # the distinct strings' bytes, packed: compared there rather than at their first row, which
    # lies anywhere in the chunk's data (a cache miss per row for columns with many values)
    ubytes = np.empty(4096, np.uint8)
    uoff = np.zeros(257, np.int64)
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
                    uoff2 = np.zeros(2 * nu + 1, np.int64)
                    uoff2[: nu + 1] = uoff[: nu + 1]
                    uoff = uoff2
                end = uoff[nu] + (b - a)
                if end > ubytes.shape[0]:
                    ubytes2 = np.empty(max(2 * ubytes.shape[0], end), np.uint8)
                    ubytes2[: uoff[nu]] = ubytes[: uoff[nu]]
                    ubytes = ubytes2
                ubytes[uoff[nu] : end] = data[a:b]
                uoff[nu + 1] = end
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
            if shash[s] == h and _same_bytes2(data, a, b, ubytes, uoff[c], uoff[c + 1]):
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

        Plain string chunks are coded row by row (one numba pass over their buffers);
        dictionary chunks (e.g. Parquet read with ``read_dictionary``) are used as they are, so
        only their small dictionaries are hashed here (and chunks sharing a dictionary reuse
        its codes).
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
            # plain strings are coded row by row in one pass (runs of equal values skip the
            # hash); faster than Arrow's dictionary_encode followed by a gather of the codes
            return self._dictionary_codes(_as_string(arr, self.fill, self.name))
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
