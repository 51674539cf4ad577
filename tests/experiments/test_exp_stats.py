"""Sufficient statistics: construction, exact merging, moments, validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cohortlens.experiments import ExperimentStats, SufficientStats

ints = st.lists(st.integers(-1000, 1000), min_size=2, max_size=60)


def test_from_arrays_hand_computed() -> None:
    # y = [1, 2, 3], d = [1, 1, 2], x = [0, 1, 1]
    s = SufficientStats.from_arrays([1, 2, 3], d=[1, 1, 2], x=[0, 1, 1])
    assert s == SufficientStats(
        n=3,
        sum_y=6.0,
        sum_yy=14.0,
        sum_d=4.0,
        sum_dd=6.0,
        sum_yd=9.0,
        sum_x=2.0,
        sum_xx=2.0,
        sum_xy=5.0,
        sum_xd=3.0,
    )
    assert s.columns == ("y", "d", "x")


@given(ints, st.integers(1, 59))
def test_shards_merge_exactly(values: list[int], cut: int) -> None:
    # Integer-valued data: every sum is exact in float64, so merging must be bit-exact.
    cut = min(cut, len(values) - 1)
    y = np.array(values, dtype=float)
    x = y[::-1] * 2
    whole = SufficientStats.from_arrays(y, x=x)
    parts = SufficientStats.from_arrays(y[:cut], x=x[:cut]) + SufficientStats.from_arrays(
        y[cut:], x=x[cut:]
    )
    assert parts == whole


@given(st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=40))
@settings(max_examples=60)
def test_moments_match_numpy(values: list[float]) -> None:
    y = np.array(values)
    d = np.abs(y) + 1.0
    x = np.sin(y)
    mean, cov = SufficientStats.from_arrays(y, d=d, x=x).moments(ddof=1)
    ref = np.cov(np.vstack([y, d, x]), ddof=1)
    np.testing.assert_allclose(mean, [y.mean(), d.mean(), x.mean()], rtol=1e-9, atol=1e-9)
    # Σz² - n z̄² loses relative precision when the spread is small against the mean.
    np.testing.assert_allclose(cov, ref, rtol=1e-6, atol=1e-6 * (1 + np.abs(ref).max()))


def test_constant_data_reads_as_exact_zero_variance() -> None:
    s = SufficientStats.from_arrays(np.full(1000, 3.7))
    _, cov = s.moments(1)
    assert cov[0, 0] == 0.0


def test_empty_like_is_neutral() -> None:
    s = SufficientStats.from_arrays([1.0, 2.0], d=[3.0, 4.0])
    zero = SufficientStats.empty_like(s)
    assert zero.n == 0
    assert zero.columns == s.columns
    assert s + zero == s


def test_dict_round_trip_and_binary_default() -> None:
    s = SufficientStats.from_arrays([1.0, 0.0, 1.0], x=[2.0, 1.0, 0.0])
    assert SufficientStats.from_dict(s.to_dict()) == s
    b = SufficientStats.from_dict({"n": 10, "sum_y": 4}, binary=True)
    assert b.sum_yy == 4.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": -1, "sum_y": 0.0, "sum_yy": 0.0}, "n == -1"),
        ({"n": 2, "sum_y": 1.0, "sum_yy": -1.0}, "sum_yy == -1.0"),
        ({"n": 2, "sum_y": 1.0, "sum_yy": 1.0, "sum_d": 1.0}, "given together"),
        ({"n": 0, "sum_y": 1.0, "sum_yy": 1.0}, "empty arm"),
        (
            {
                "n": 2,
                "sum_y": 1.0,
                "sum_yy": 1.0,
                "sum_d": 1.0,
                "sum_dd": 1.0,
                "sum_yd": 1.0,
                "sum_x": 1.0,
                "sum_xx": 1.0,
                "sum_xy": 1.0,
            },
            "sum_xd is required",
        ),
    ],
)
def test_invalid_records_raise(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SufficientStats(**kwargs)  # type: ignore[arg-type]


def test_n_must_be_int() -> None:
    with pytest.raises(TypeError, match="n must be an int"):
        SufficientStats(n=2.0, sum_y=1.0, sum_yy=1.0)  # type: ignore[arg-type]


def test_adding_different_columns_raises() -> None:
    with pytest.raises(ValueError, match="cannot add"):
        SufficientStats.from_arrays([1.0, 2.0]) + SufficientStats.from_arrays(
            [1.0, 2.0], x=[1.0, 2.0]
        )


def test_from_dict_rejects_unknown_keys_and_bad_binary() -> None:
    with pytest.raises(ValueError, match="unknown key"):
        SufficientStats.from_dict({"n": 1, "sum_y": 1, "sum_yy": 1, "sum_z": 3})
    with pytest.raises(ValueError, match="successes"):
        SufficientStats.from_dict({"n": 3, "sum_y": 5}, binary=True)
    with pytest.raises(ValueError, match="sum_yy"):
        SufficientStats.from_dict({"n": 3, "sum_y": 5})


def test_experiment_stats_add_per_period() -> None:
    a = ExperimentStats(
        units={"control": 2, "treatment": 1},
        metrics={
            "m": {
                "control": SufficientStats.from_arrays([1.0, 0.0]),
                "treatment": SufficientStats.from_arrays([1.0]),
            }
        },
        label="d1",
    )
    b = ExperimentStats(
        units={"control": 1, "treatment": 2},
        metrics={
            "m": {
                "control": SufficientStats.from_arrays([1.0]),
                "treatment": SufficientStats.from_arrays([0.0, 0.0]),
            }
        },
        label="d2",
    )
    total = a + b
    assert total.units == {"control": 3, "treatment": 3}
    assert total.metrics["m"]["control"] == SufficientStats.from_arrays([1.0, 0.0, 1.0])
    assert total.metrics["m"]["treatment"] == SufficientStats.from_arrays([1.0, 0.0, 0.0])
    assert total.label == "d2"


def test_metric_kinds_are_classes_and_the_pipeline_does_not_branch_on_them() -> None:
    """Issue 14 §6: each kind is a class declaring its sums and analysing them, so adding a
    kind touches kinds.py only; the pipeline modules ask the kind, never name one."""
    import re
    from pathlib import Path

    import cohortlens.experiments as pkg
    from cohortlens.experiments.kinds import Kind, MetricKind, kind_of

    for k in MetricKind:
        assert isinstance(kind_of(k), Kind)
        assert kind_of(k).kind is k
    root = Path(pkg.__file__).parent
    for module in (
        "analysis.py",
        "reduce.py",
        "spec.py",
        "serialize.py",
        "power.py",
        "segments.py",
    ):
        text = (root / module).read_text(encoding="utf-8")
        assert not re.search(r"MetricKind\.(BINARY|MEAN|RATIO)", text), module
    cli = (root.parent / "cli" / "experiment.py").read_text(encoding="utf-8")
    assert not re.search(r"MetricKind\.(BINARY|MEAN|RATIO)", cli)


def test_from_arrays_sums_every_pair_of_columns() -> None:
    rng = np.random.default_rng(3)
    y, d, x, w = (rng.random(50) for _ in range(4))
    s = SufficientStats.from_arrays(y, d=d, x=x, w=w)
    assert s.columns == ("y", "d", "x", "w")
    assert s.sum_dw == pytest.approx(float(d @ w))
    assert s.sum_xw == pytest.approx(float(x @ w))
    assert s.sum_yw == pytest.approx(float(y @ w))
    assert (s + s).sum_ww == pytest.approx(2 * float(w @ w))
    with pytest.raises(ValueError, match="needs x"):
        SufficientStats.from_arrays(y, w=w)
    with pytest.raises(ValueError, match="sum_dw is required"):
        SufficientStats(
            n=2,
            sum_y=1.0,
            sum_yy=1.0,
            sum_d=2.0,
            sum_dd=2.0,
            sum_yd=1.0,
            sum_x=1.0,
            sum_xx=1.0,
            sum_xy=1.0,
            sum_xd=1.0,
            sum_w=2.0,
            sum_ww=2.0,
            sum_yw=1.0,
            sum_xw=1.0,
        )
