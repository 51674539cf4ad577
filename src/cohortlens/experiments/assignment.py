"""Deterministic assignment of learners to variants by salted hashing.

The hash (``HASH_VERSION = "fnv1a64-fmix64/v1"``) is fixed by specification, not by Python's
``hash`` (which is salted per process), so a learner gets the same bucket in every process,
on every machine and in every release; the test vectors in
``tests/experiments/test_assignment.py`` pin it.

**Bucket of a learner** for a salt ``s`` (``s`` must not contain a NUL character):

1. ``key = utf8(s) + b"\\x00" + utf8(learner_id)``;
2. ``h = FNV-1a-64(key)``: start at ``0xcbf29ce484222325``; for each byte ``b``:
   ``h = (h XOR b) * 0x100000001b3 mod 2**64``;
3. ``h = fmix64(h)`` (MurmurHash3's finaliser, for avalanche on short, similar ids):
   ``h ^= h >> 33; h *= 0xff51afd7ed558ccd; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53; h ^= h >> 33``
   (multiplications mod 2**64);
4. ``bucket = ((h >> 32) * 10000) >> 32``, an integer in ``[0, 10000)``.

**From bucket to variant.** With normalised weights ``w_i`` (``W_{<i}`` the sum of the earlier
ones) and traffic fraction ``t``, variant ``i`` owns the buckets ``b`` with
``10000·W_{<i} <= b < 10000·W_{<i} + 10000·t·w_i``; other buckets are not in the experiment.
Raising ``t`` therefore only adds learners: nobody changes variant.

**Layers.** Experiments in one :class:`Layer` are mutually exclusive: each owns a disjoint
range of the *layer's* bucket (hashed with the layer's salt), and the variant is then drawn
from the experiment's own bucket (the experiment's salt), independent of the layer's.

**Targeting.** An experiment may be restricted to learners of given cohorts; the others are
reported as ``not_targeted`` and get no variant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from itertools import pairwise

import numba
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

#: Name of the hashing scheme; stored with every exposure record.
HASH_VERSION = "fnv1a64-fmix64/v1"
#: Buckets per hash space (0.01 % traffic granularity).
N_BUCKETS = 10_000

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1
_FMIX_1 = 0xFF51AFD7ED558CCD
_FMIX_2 = 0xC4CEB9FE1A85EC53


class AssignmentStatus(StrEnum):
    """Why a learner did or did not get a variant (the ``status`` column)."""

    ASSIGNED = "assigned"
    #: The experiment targets cohorts this learner is not in.
    NOT_TARGETED = "not_targeted"
    #: The learner's layer bucket belongs to another experiment of the layer.
    OUTSIDE_LAYER_RANGE = "outside_layer_range"
    #: The learner's bucket falls outside the experiment's traffic allocation.
    OUTSIDE_TRAFFIC = "outside_traffic"


#: Columns of :func:`assign`'s result.
ASSIGNMENT_SCHEMA = pa.schema(
    [
        pa.field("learner_id", pa.string(), nullable=False),
        pa.field("experiment", pa.string(), nullable=False),
        pa.field("variant", pa.string(), nullable=True),
        pa.field("bucket", pa.int32(), nullable=False),
        pa.field("layer_bucket", pa.int32(), nullable=True),
        pa.field("status", pa.string(), nullable=False),
    ]
)

#: Columns of :func:`exposure_records` (what the store keeps per exposed learner).
EXPOSURE_SCHEMA = pa.schema(
    [
        pa.field("learner_id", pa.string(), nullable=False),
        pa.field("experiment", pa.string(), nullable=False),
        pa.field("variant", pa.string(), nullable=False),
        pa.field("layer", pa.string(), nullable=True),
        pa.field("bucket", pa.int32(), nullable=False),
        pa.field("hash_version", pa.string(), nullable=False),
        pa.field("exposed_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment and its relative weight (any positive scale)."""

    name: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a variant needs a non-empty name")
        if not (self.weight > 0.0 and np.isfinite(self.weight)):
            raise ValueError(
                f"variant {self.name!r}: weight == {self.weight}, must be finite and > 0"
            )


@dataclass(frozen=True)
class Layer:
    """A namespace of mutually exclusive experiments, hashed with its own salt."""

    name: str
    salt: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a layer needs a non-empty name")
        _check_salt(self.hash_salt)

    @property
    def hash_salt(self) -> str:
        """The salt of the layer's bucket (``"layer:" + name`` when no salt is given)."""
        return self.salt or f"layer:{self.name}"


@dataclass(frozen=True)
class ExperimentDesign:
    """How learners are split in one experiment.

    Attributes:
        name: the experiment's name (and default salt).
        variants: the arms with their weights (at least two; names unique).
        salt: hash salt; defaults to ``name``. Change it to reshuffle learners.
        traffic_fraction: share of eligible learners in the experiment, in (0, 1].
        layer: the layer this experiment belongs to, if any.
        layer_buckets: ``(start, end)`` range of the layer's buckets owned, ``0 <= start <
            end <= 10000``; only meaningful with ``layer``.
        target_cohorts: cohorts eligible for the experiment (``None``: everybody).
        hash_version: ``fnv1a64-fmix64/v1`` (default), or ``growthbook/v1`` /
            ``growthbook/v2`` to split learners exactly as GrowthBook's SDKs do (with the
            salt as GrowthBook's ``seed``; a learner's bucket is ``hash · 10000``).
    """

    name: str
    variants: tuple[Variant, ...]
    salt: str = ""
    traffic_fraction: float = 1.0
    layer: Layer | None = None
    layer_buckets: tuple[int, int] = (0, N_BUCKETS)
    target_cohorts: frozenset[str] | None = field(default=None)
    hash_version: str = HASH_VERSION

    @property
    def paused(self) -> bool:
        """Coverage 0: nobody is in the experiment (GrowthBook's "coverage 0" pause)."""
        return self.traffic_fraction == 0.0

    def __post_init__(self) -> None:
        problems = []
        if not self.name:
            problems.append("an experiment needs a non-empty name")
        names = [v.name for v in self.variants]
        if len(names) < 2:
            problems.append(
                f"experiment {self.name!r}: at least two variants are needed, got {len(names)}"
            )
        if len(set(names)) != len(names):
            problems.append(f"experiment {self.name!r}: variant names must be unique, got {names}")
        if not 0.0 <= self.traffic_fraction <= 1.0:
            problems.append(
                f"traffic_fraction == {self.traffic_fraction}, must be in [0, 1] (0 pauses)"
            )
        if self.hash_version not in HASH_VERSIONS:
            problems.append(
                f"hash_version == {self.hash_version!r}, must be one of {', '.join(HASH_VERSIONS)}"
            )
        start, end = self.layer_buckets
        if not 0 <= start < end <= N_BUCKETS:
            problems.append(
                f"layer_buckets == {self.layer_buckets}, need 0 <= start < end <= {N_BUCKETS}"
            )
        if self.layer is None and self.layer_buckets != (0, N_BUCKETS):
            problems.append("layer_buckets needs a layer")
        if self.target_cohorts is not None and not self.target_cohorts:
            problems.append(
                "target_cohorts is empty: nobody would be eligible (use None for everybody)"
            )
        if problems:
            raise ValueError("; ".join(problems))
        _check_salt(self.hash_salt)
        if self.target_cohorts is not None:
            object.__setattr__(
                self, "target_cohorts", frozenset(str(c) for c in self.target_cohorts)
            )

    @property
    def hash_salt(self) -> str:
        """The salt of the experiment's bucket (the name when no salt is given)."""
        return self.salt or self.name

    def bucket_ranges(self) -> tuple[tuple[str, float, float], ...]:
        """``(variant, start, end)`` bucket ranges, as defined in the module docstring."""
        weights = np.array([v.weight for v in self.variants], dtype=np.float64)
        total = float(weights.sum())
        out = []
        before = 0.0
        for v in self.variants:
            start = N_BUCKETS * (before / total)
            out.append(
                (v.name, start, start + N_BUCKETS * self.traffic_fraction * (v.weight / total))
            )
            before += v.weight
        return tuple(out)


def bucket_of(learner_id: str, salt: str) -> int:
    """Bucket in ``[0, 10000)`` of one learner (pure-Python reference of :func:`buckets`)."""
    _check_salt(salt)
    h = hash64(salt.encode() + b"\x00" + learner_id.encode())
    return ((h >> 32) * N_BUCKETS) >> 32


def hash64(key: bytes) -> int:
    """``fmix64(FNV-1a-64(key))``: the 64-bit hash behind :func:`bucket_of`."""
    return _fmix64(_fnv1a64(key))


def buckets(
    learner_ids: pa.Array | pa.ChunkedArray | Sequence[str], salt: str
) -> npt.NDArray[np.int32]:
    """Buckets of many learners at once (vectorised, numba over the Arrow string buffers).

    Raises:
        ValueError: a null learner id, or a salt containing NUL.
    """
    _check_salt(salt)
    arr = _as_large_string(learner_ids)
    if arr.null_count:
        raise ValueError(f"{arr.null_count} learner id(s) are null")
    prefix = _fnv1a64(salt.encode() + b"\x00")
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    )
    out = np.empty(len(arr), dtype=np.int32)
    _bucket_kernel(data, offsets, np.uint64(prefix), out)
    return out


def assign(
    learner_ids: pa.Array | pa.ChunkedArray | Sequence[str],
    design: ExperimentDesign,
    cohorts: pa.Array | pa.ChunkedArray | Sequence[str | int] | None = None,
) -> pa.Table:
    """Assign learners to the design's variants (``ASSIGNMENT_SCHEMA``, one row per input).

    Args:
        learner_ids: the learners (no nulls).
        design: the experiment.
        cohorts: each learner's cohort, aligned with ``learner_ids``; required when the
            design targets cohorts (cast to strings for matching).

    Raises:
        ValueError: null ids, misaligned cohorts, or targeting without cohorts.
    """
    ids = _as_large_string(learner_ids)
    n = len(ids)
    if design.hash_version == HASH_VERSION:
        bucket = buckets(ids, design.hash_salt)
    else:
        if ids.null_count:
            raise ValueError(f"{ids.null_count} learner id(s) are null")
        bucket = _gb_buckets(ids, design.hash_salt, design.hash_version)
    status = np.full(n, 0, dtype=np.int8)  # index into _STATUS_NAMES
    layer_bucket: npt.NDArray[np.int32] | None = None
    if design.layer is not None:
        layer_bucket = buckets(ids, design.layer.hash_salt)
        start, end = design.layer_buckets
        status[(layer_bucket < start) | (layer_bucket >= end)] = 2
    if design.target_cohorts is not None:
        if cohorts is None:
            raise ValueError(
                f"experiment {design.name!r} targets cohorts; pass each learner's cohort"
            )
        coh = pc.cast(_as_array(cohorts), pa.string())
        if len(coh) != n:
            raise ValueError(f"cohorts has {len(coh)} entries, learner_ids has {n}")
        targeted = pc.fill_null(
            pc.is_in(coh, value_set=pa.array(sorted(design.target_cohorts))), False
        )
        status[~np.asarray(targeted.to_numpy(zero_copy_only=False), dtype=bool)] = 1
    ranges = design.bucket_ranges()
    starts = np.array([r[1] for r in ranges])
    ends = np.array([r[2] for r in ranges])
    idx = np.searchsorted(starts, bucket.astype(np.float64), side="right") - 1
    in_traffic = bucket < ends[idx]
    status[(status == 0) & ~in_traffic] = 3
    names = pa.array([r[0] for r in ranges], pa.string())
    variant = pc.take(names, pa.array(idx.astype(np.int32), mask=status != 0))
    status_names = pa.array([s.value for s in _STATUS_ORDER], pa.string())
    return pa.table(
        {
            "learner_id": pc.cast(ids, pa.string()),
            "experiment": pa.repeat(pa.scalar(design.name, pa.string()), n),
            "variant": variant,
            "bucket": pa.array(bucket, pa.int32()),
            "layer_bucket": pa.array(layer_bucket, pa.int32())
            if layer_bucket is not None
            else pa.nulls(n, pa.int32()),
            "status": pc.take(status_names, pa.array(status.astype(np.int32))),
        },
        schema=ASSIGNMENT_SCHEMA,
    )


def exposure_records(
    assignments: pa.Table, exposed_at: datetime, design: ExperimentDesign | None = None
) -> pa.Table:
    """Exposure rows (``EXPOSURE_SCHEMA``) for the assigned learners of ``assignments``.

    Pure: the caller (the store) persists them. ``exposed_at`` must be timezone-aware.

    Raises:
        ValueError: a naive ``exposed_at`` or a table without the assignment columns.
    """
    if exposed_at.tzinfo is None:
        raise ValueError("exposed_at must be timezone-aware (UTC)")
    missing = [
        c
        for c in ("learner_id", "experiment", "variant", "bucket", "status")
        if c not in assignments.column_names
    ]
    if missing:
        raise ValueError(f"assignments lack column(s) {', '.join(missing)}")
    kept = assignments.filter(pc.equal(assignments["status"], AssignmentStatus.ASSIGNED.value))
    n = kept.num_rows
    layer = design.layer.name if design is not None and design.layer is not None else None
    return pa.table(
        {
            "learner_id": kept["learner_id"],
            "experiment": kept["experiment"],
            "variant": kept["variant"],
            "layer": pa.repeat(pa.scalar(layer, pa.string()), n),
            "bucket": kept["bucket"],
            "hash_version": pa.repeat(
                pa.scalar(design.hash_version if design else HASH_VERSION, pa.string()), n
            ),
            "exposed_at": pa.repeat(
                pa.scalar(exposed_at.astimezone(UTC), pa.timestamp("us", tz="UTC")), n
            ),
        },
        schema=EXPOSURE_SCHEMA,
    )


def check_layer(designs: Iterable[ExperimentDesign]) -> None:
    """Raise ``ValueError`` if experiments of one layer claim overlapping layer buckets."""
    by_layer: dict[str, list[ExperimentDesign]] = {}
    for d in designs:
        if d.layer is not None:
            by_layer.setdefault(d.layer.name, []).append(d)
    problems = []
    for layer, members in by_layer.items():
        salts = {m.layer.hash_salt for m in members if m.layer is not None}
        if len(salts) > 1:
            problems.append(f"layer {layer!r} is used with different salts")
        ordered = sorted(members, key=lambda d: d.layer_buckets)
        for a, b in pairwise(ordered):
            if b.layer_buckets[0] < a.layer_buckets[1]:
                problems.append(
                    f"layer {layer!r}: {a.name!r} {a.layer_buckets} "
                    f"overlaps {b.name!r} {b.layer_buckets}"
                )
    if problems:
        raise ValueError("; ".join(problems))


# ---------------------------------------------------------------------------- internals

_STATUS_ORDER = (
    AssignmentStatus.ASSIGNED,
    AssignmentStatus.NOT_TARGETED,
    AssignmentStatus.OUTSIDE_LAYER_RANGE,
    AssignmentStatus.OUTSIDE_TRAFFIC,
)


def _fnv1a64(key: bytes, h: int = _FNV_OFFSET) -> int:
    """FNV-1a, 64-bit, continued from state ``h``."""
    for byte in key:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    return h


def _fmix64(h: int) -> int:
    h ^= h >> 33
    h = (h * _FMIX_1) & _MASK64
    h ^= h >> 33
    h = (h * _FMIX_2) & _MASK64
    h ^= h >> 33
    return h


# ---------------------------------------------------------------------------- GrowthBook hashing

_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193
_MASK32 = 0xFFFFFFFF
#: Hash versions an :class:`ExperimentDesign` accepts (``hash_version``).
HASH_VERSIONS = (HASH_VERSION, "growthbook/v1", "growthbook/v2")


def fnv1a32(data: bytes) -> int:
    """FNV-1a, 32-bit."""
    h = _FNV32_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV32_PRIME) & _MASK32
    return h


def gb_hash(seed: str, value: str, version: int) -> float | None:
    """GrowthBook's SDK hash in ``[0, 1)`` (``hash`` of the SDK spec ``cases.json``).

    * version 1: ``(fnv1a32(value + seed) mod 1000) / 1000``;
    * version 2: ``(fnv1a32(str(fnv1a32(seed + value))) mod 10000) / 10000``;
    * any other version: ``None`` (the SDKs skip the experiment).
    """
    if version == 1:
        return (fnv1a32((value + seed).encode()) % 1000) / 1000
    if version == 2:
        return (fnv1a32(str(fnv1a32((seed + value).encode())).encode()) % 10000) / 10000
    return None


def gb_bucket_ranges(
    n_variations: int, coverage: float, weights: Sequence[float] | None = None
) -> list[tuple[float, float]]:
    """GrowthBook's ``getBucketRanges``: coverage clamped to ``[0, 1]``; weights that do
    not fit (wrong length, or a sum outside ``[0.99, 1.01]``) fall back to equal ones."""
    coverage = min(max(coverage, 0.0), 1.0)
    equal = [1.0 / n_variations] * n_variations if n_variations > 0 else []
    w = list(weights) if weights is not None else equal
    if len(w) != n_variations or not 0.99 <= sum(w) <= 1.01:
        w = equal
    out, cumulative = [], 0.0
    for weight in w:
        start = cumulative
        cumulative += weight
        out.append((start, start + coverage * weight))
    return out


def gb_choose_variation(n: float, ranges: Sequence[tuple[float, float]]) -> int:
    """Index of the range holding ``n`` (``start <= n < end``), or -1 (not in the test)."""
    for i, (start, end) in enumerate(ranges):
        if start <= n < end:
            return i
    return -1


def gb_in_namespace(user_id: str, namespace: tuple[str, float, float]) -> bool:
    """GrowthBook namespaces: ``start <= hash("__" + id, user, v1) < end``."""
    name, start, end = namespace
    n = gb_hash("__" + name, user_id, 1)
    return n is not None and start <= n < end


def _gb_buckets(ids: pa.Array, salt: str, version: str) -> npt.NDArray[np.int32]:
    """Buckets in ``[0, 10000)`` from GrowthBook's hash (``floor(hash · 10000)``)."""
    v = 1 if version == "growthbook/v1" else 2
    values = ids.to_pylist()
    out = np.empty(len(values), dtype=np.int32)
    for i, learner in enumerate(values):  # the SDK-compatible path; not the default
        h = gb_hash(salt, learner, v)
        out[i] = round((h or 0.0) * N_BUCKETS)
    return out


def _check_salt(salt: str) -> None:
    if "\x00" in salt:
        raise ValueError("a salt must not contain the NUL character (it separates salt and id)")


def _as_array(values: pa.Array | pa.ChunkedArray | Sequence[str | int]) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    return pa.array(list(values))


def _as_large_string(values: pa.Array | pa.ChunkedArray | Sequence[str]) -> pa.Array:
    arr = _as_array(values)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        raise TypeError(f"learner ids must be strings, got Arrow type {arr.type}")
    return pc.cast(arr, pa.large_string())


@numba.njit(cache=True, nogil=True)
def _bucket_kernel(
    data: np.ndarray, offsets: np.ndarray, prefix: np.uint64, out: np.ndarray
) -> None:
    """FNV-1a-64 continued from ``prefix`` over each string, then fmix64, then the bucket."""
    prime = np.uint64(_FNV_PRIME)
    m1 = np.uint64(_FMIX_1)
    m2 = np.uint64(_FMIX_2)
    s33 = np.uint64(33)
    s32 = np.uint64(32)
    nb = np.uint64(N_BUCKETS)
    for i in range(out.shape[0]):
        h = prefix
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * prime
        h ^= h >> s33
        h *= m1
        h ^= h >> s33
        h *= m2
        h ^= h >> s33
        out[i] = np.int32(((h >> s32) * nb) >> s32)


__all__ = [
    "ASSIGNMENT_SCHEMA",
    "EXPOSURE_SCHEMA",
    "HASH_VERSION",
    "HASH_VERSIONS",
    "N_BUCKETS",
    "AssignmentStatus",
    "ExperimentDesign",
    "Layer",
    "Variant",
    "assign",
    "bucket_of",
    "buckets",
    "check_layer",
    "exposure_records",
    "fnv1a32",
    "gb_bucket_ranges",
    "gb_choose_variation",
    "gb_hash",
    "gb_in_namespace",
    "hash64",
]
