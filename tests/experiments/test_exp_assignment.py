"""Deterministic assignment: published test vectors, vectorised == scalar, layers, traffic.

The vectors below pin ``fnv1a64-fmix64/v1`` (docs/EXPERIMENTS.md, "Assignment"): any SDK
or later release must reproduce them exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from cohortlens.experiments import (
    ExperimentDesign,
    Layer,
    Variant,
    assign,
    bucket_of,
    buckets,
    check_layer,
    exposure_records,
)
from cohortlens.experiments.assignment import (
    ASSIGNMENT_SCHEMA,
    EXPOSURE_SCHEMA,
    HASH_VERSION,
    _fnv1a64,
    hash64,
)

#: (salt, learner_id, 64-bit hash of salt + NUL + id, bucket)
TEST_VECTORS = [
    ("exp1", "learner-1", 0xDB61422593FA7C9E, 8569),
    ("exp1", "learner-2", 0x29045EA98D66E01E, 1602),
    ("exp1", "", 0x71776E459CCFC7DF, 4432),
    ("onboarding-v2", "u000001", 0x967259F671D90A0D, 5876),
    ("onboarding-v2", "u000002", 0x261B1B4436411444, 1488),
    ("layer:home", "42", 0x904665D4E258227E, 5635),
    ("salt with spaces", "Zoë-Ünïcødé", 0x42E198AEDBE6DCC8, 2612),
    ("exp1", "学习者-7", 0x0A802D0A438B7DC5, 410),
]


def _reference_hash(key: bytes) -> int:
    """Independent implementation with numpy uint64 wrap-around arithmetic."""
    with np.errstate(over="ignore"):
        h = np.uint64(0xCBF29CE484222325)
        for b in key:
            h = np.uint64(h ^ np.uint64(b)) * np.uint64(0x100000001B3)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xC4CEB9FE1A85EC53)
        h ^= h >> np.uint64(33)
    return int(h)


def test_fnv1a64_published_vectors() -> None:
    # From the FNV reference test suite (Fowler/Noll/Vo), FNV-1a 64-bit.
    assert _fnv1a64(b"") == 0xCBF29CE484222325
    assert _fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert _fnv1a64(b"foobar") == 0x85944171F73967E8


@pytest.mark.parametrize(("salt", "learner", "h", "bucket"), TEST_VECTORS)
def test_vectors(salt: str, learner: str, h: int, bucket: int) -> None:
    key = salt.encode() + b"\x00" + learner.encode()
    assert hash64(key) == h == _reference_hash(key)
    assert ((h >> 32) * 10_000) >> 32 == bucket
    assert bucket_of(learner, salt) == bucket
    assert buckets([learner], salt)[0] == bucket
    assert HASH_VERSION == "fnv1a64-fmix64/v1"


@given(
    st.lists(st.text(max_size=30), min_size=1, max_size=50),
    st.text(max_size=10).filter(lambda s: "\x00" not in s),
)
@settings(max_examples=50, deadline=None)
def test_vectorised_equals_scalar(ids: list[str], salt: str) -> None:
    got = buckets(pa.array(ids, pa.string()), salt)
    assert got.tolist() == [bucket_of(i, salt) for i in ids]


def test_sliced_and_chunked_arrays() -> None:
    ids = [f"u{i}" for i in range(100)]
    arr = pa.array(ids)
    expect = [bucket_of(i, "s") for i in ids]
    assert buckets(arr.slice(10, 20), "s").tolist() == expect[10:30]
    assert buckets(pa.chunked_array([arr.slice(0, 50), arr.slice(50)]), "s").tolist() == expect


def test_buckets_are_uniform() -> None:
    b = buckets(pa.array([f"learner-{i}" for i in range(200_000)]), "uniformity")
    counts = np.bincount(b // 100, minlength=100)  # 100 bins of 100 buckets
    assert sps.chisquare(counts).pvalue > 1e-4


def test_split_weights_and_traffic() -> None:
    ids = pa.array([f"learner-{i}" for i in range(100_000)])
    design = ExperimentDesign("w", (Variant("a", 1), Variant("b", 3)), traffic_fraction=0.5)
    table = assign(ids, design)
    assert table.schema == ASSIGNMENT_SCHEMA
    counts = dict(
        zip(*(c.to_pylist() for c in pc.value_counts(table["variant"]).flatten()), strict=True)
    )
    assert (
        sps.chisquare([counts["a"], counts["b"], counts[None]], [12_500, 37_500, 50_000]).pvalue
        > 1e-4
    )
    ranges = design.bucket_ranges()
    assert ranges == (("a", 0.0, 1250.0), ("b", 2500.0, 6250.0))


@given(st.floats(0.01, 1.0), st.floats(0.01, 1.0))
@settings(max_examples=25, deadline=None)
def test_raising_traffic_never_moves_anybody(t1: float, t2: float) -> None:
    low, high = sorted((t1, t2))
    ids = pa.array([f"u{i}" for i in range(3000)])
    variants = (Variant("control", 1), Variant("treatment", 1))
    a = assign(ids, ExperimentDesign("t", variants, traffic_fraction=low))["variant"].to_pylist()
    b = assign(ids, ExperimentDesign("t", variants, traffic_fraction=high))["variant"].to_pylist()
    assert all(x is None or x == y for x, y in zip(a, b, strict=True))


def test_layers_are_mutually_exclusive() -> None:
    layer = Layer("home")
    variants = (Variant("control"), Variant("treatment"))
    e1 = ExperimentDesign("e1", variants, layer=layer, layer_buckets=(0, 5000))
    e2 = ExperimentDesign("e2", variants, layer=layer, layer_buckets=(5000, 10_000))
    check_layer([e1, e2])
    ids = pa.array([f"u{i}" for i in range(20_000)])
    in1 = pc.is_valid(assign(ids, e1)["variant"]).to_numpy(zero_copy_only=False)
    in2 = pc.is_valid(assign(ids, e2)["variant"]).to_numpy(zero_copy_only=False)
    assert not np.any(in1 & in2)
    assert np.all(in1 | in2)  # the two ranges cover the layer
    # The variant inside each experiment is independent of the layer split.
    v1 = assign(ids, e1)["variant"].to_numpy(zero_copy_only=False)[in1]
    assert abs(np.mean(v1 == "treatment") - 0.5) < 0.02
    with pytest.raises(ValueError, match="overlaps"):
        check_layer([e1, ExperimentDesign("e3", variants, layer=layer, layer_buckets=(4000, 6000))])


def test_targeting_by_cohort() -> None:
    ids = pa.array([f"u{i}" for i in range(1000)])
    cohorts = pa.array([("fast", "slow", None)[i % 3] for i in range(1000)])
    design = ExperimentDesign(
        "tg", (Variant("c"), Variant("t")), target_cohorts=frozenset({"fast"})
    )
    table = assign(ids, design, cohorts)
    status = table["status"].to_pylist()
    assert all((s == "assigned") == (i % 3 == 0) for i, s in enumerate(status))
    assert set(status[1::3]) == {"not_targeted"}
    with pytest.raises(ValueError, match="targets cohorts"):
        assign(ids, design)


def test_exposure_records() -> None:
    ids = pa.array([f"u{i}" for i in range(500)])
    design = ExperimentDesign(
        "x", (Variant("c"), Variant("t")), traffic_fraction=0.3, layer=Layer("L")
    )
    table = assign(ids, design)
    when = datetime(2025, 3, 1, 12, tzinfo=UTC)
    exp = exposure_records(table, when, design)
    assert exp.schema == EXPOSURE_SCHEMA
    assert exp.num_rows == pc.sum(pc.equal(table["status"], "assigned")).as_py()
    assert set(exp["hash_version"].to_pylist()) == {HASH_VERSION}
    assert set(exp["layer"].to_pylist()) == {"L"}
    assert exp["exposed_at"][0].as_py() == when
    with pytest.raises(ValueError, match="timezone-aware"):
        exposure_records(table, datetime(2025, 3, 1), design)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "x", "variants": (Variant("a"),)}, "at least two variants"),
        ({"name": "x", "variants": (Variant("a"), Variant("a"))}, "unique"),
        (
            {"name": "x", "variants": (Variant("a"), Variant("b")), "traffic_fraction": 1.5},
            "traffic_fraction",
        ),
        (
            {"name": "x", "variants": (Variant("a"), Variant("b")), "layer_buckets": (0, 10)},
            "needs a layer",
        ),
        ({"name": "x", "variants": (Variant("a"), Variant("b")), "salt": "a\x00b"}, "NUL"),
    ],
)
def test_invalid_designs(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExperimentDesign(**kwargs)  # type: ignore[arg-type]


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="weight"):
        Variant("a", 0.0)
    with pytest.raises(ValueError, match="null"):
        buckets(pa.array(["a", None]), "s")
    with pytest.raises(TypeError, match="strings"):
        buckets(pa.array([1, 2]), "s")
