"""Robust scaling and feature transforms: hand-computed values and scikit-learn as reference."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.preprocessing import RobustScaler as SkRobustScaler

from cohortlens.cohorts import FeatureSpec
from cohortlens.cohorts._matrix import analysis_matrix, apply_transform, invert_transform
from cohortlens.cohorts.scaling import RobustScaler
from cohortlens.errors import InputError


def test_median_and_iqr_by_hand() -> None:
    x = np.array([[1.0], [2.0], [3.0], [4.0], [100.0]])
    s = RobustScaler.fit(x, clip_quantile=0.0)
    # numpy linear quantiles: q25 = 2, median = 3, q75 = 4 -> IQR 2
    assert s.center.tolist() == [3.0]
    assert s.scale.tolist() == [2.0]
    assert s.transform(np.array([[100.0]])).item() == pytest.approx(48.5)


def test_winsorizing_caps_the_tail() -> None:
    x = np.array([[1.0], [2.0], [3.0], [4.0], [100.0]])
    s = RobustScaler.fit(x, clip_quantile=0.25)
    # bounds are the 25th/75th percentiles (2, 4); clipped data [2,2,3,4,4]: median 3, IQR 2
    assert (s.lower.item(), s.upper.item()) == (2.0, 4.0)
    assert s.transform(np.array([[100.0]])).item() == pytest.approx(0.5)


def test_zero_iqr_falls_back_to_sd_then_one() -> None:
    x = np.array([[5.0, 7.0], [5.0, 7.0], [5.0, 7.0], [5.0, 7.0], [9.0, 7.0]])
    s = RobustScaler.fit(x, clip_quantile=0.0)
    # column 0: IQR 0 and MAD 0 -> population sd of [5,5,5,5,9] = 1.6; column 1 constant -> 1
    assert s.scale.tolist() == pytest.approx([1.6, 1.0])


def test_nan_is_ignored_and_kept() -> None:
    x = np.array([[1.0], [np.nan], [3.0]])
    s = RobustScaler.fit(x, clip_quantile=0.0)
    assert s.center.item() == 2.0
    out = s.transform(x)
    assert math.isnan(out[1, 0])


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=10_000))
def test_matches_sklearn_robust_scaler(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.lognormal(size=(200, 3))
    ours = RobustScaler.fit(x, clip_quantile=0.0)
    ref = SkRobustScaler().fit(x)
    np.testing.assert_allclose(ours.center, ref.center_)
    np.testing.assert_allclose(ours.scale, ref.scale_)
    np.testing.assert_allclose(ours.transform(x), ref.transform(x))
    np.testing.assert_allclose(ours.inverse_transform(ours.transform(x)), x)


def test_dict_round_trip() -> None:
    s = RobustScaler.fit(np.arange(20.0).reshape(10, 2))
    back = RobustScaler.from_dict(s.to_dict())
    for a, b in zip(
        (s.lower, s.upper, s.center, s.scale),
        (back.lower, back.upper, back.center, back.scale),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_transforms_by_hand_and_inverse() -> None:
    x = np.array([0.0, 1.0, math.e, np.nan])
    logged = apply_transform(x, "log")
    assert logged[1:3].tolist() == [0.0, 1.0]
    assert logged[0] == pytest.approx(math.log(1e-6))  # floored, not -inf
    p = np.array([0.0, 0.5, 0.75, 1.0])
    lg = apply_transform(p, "logit")
    assert lg[1] == 0.0
    assert lg[2] == pytest.approx(math.log(3.0))
    assert lg[0] == pytest.approx(math.log(1e-3 / (1 - 1e-3)))
    np.testing.assert_allclose(invert_transform(apply_transform(p[1:3], "logit"), "logit"), p[1:3])
    np.testing.assert_allclose(invert_transform(logged[1:3], "log"), x[1:3])


def test_analysis_matrix_reads_arrow_nulls_and_rejects_missing_columns() -> None:
    table = pa.table({"a": pa.array([1.0, None, 4.0]), "n": pa.array([1, 2, None], pa.int64())})
    m = analysis_matrix(table, [FeatureSpec("a", "log"), FeatureSpec("n")])
    assert m[0].tolist() == [0.0, 1.0]
    assert math.isnan(m[1, 0])
    assert math.isnan(m[2, 1])
    assert m[2, 0] == pytest.approx(math.log(4.0))
    with pytest.raises(InputError, match="missing column 'zzz'"):
        analysis_matrix(table, [FeatureSpec("zzz")])


def test_feature_spec_validation() -> None:
    with pytest.raises(InputError, match="transform == 'sqrt'"):
        FeatureSpec("a", "sqrt")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="column must not be empty"):
        FeatureSpec("")
