"""The estimator's shape (issue 15): parameters declared once, fit = validate, seed, iterate,
set; the diagnostics are functions that reproduce what fit recorded."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from tests.cohorts.conftest import blobs

from cohortlens.cohorts import (
    CohortModel,
    FeatureSpec,
    SelectionParams,
    cohort_quality,
    describe_cohorts,
    drift_report,
)
from cohortlens.errors import InputError

AB = (FeatureSpec("a"), FeatureSpec("b"))


def test_every_constructor_parameter_is_declared_once() -> None:
    names = set(inspect.signature(CohortModel.__init__).parameters) - {"self"}
    assert set(CohortModel._parameter_constraints) == names


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"n_cohorts": 1.5}, "n_cohorts == 1.5, must be None or an int >= 1"),
        ({"n_init": True}, "n_init == True, must be an int >= 1"),
        ({"tol": -1.0}, "tol == -1.0, must be a number >= 0"),
        ({"clip_quantile": 0.25}, "clip_quantile == 0.25, must be a number in [0, 0.25)"),
        ({"match_ratio": 0.0}, "match_ratio == 0.0, must be a number > 0"),
        ({"features": ()}, "features == (), must be a non-empty sequence"),
        ({"selection": {"k_min": 3}}, "must be a SelectionParams"),
        ({"random_state": -1}, "random_state == -1, must be an int >= 0"),
        ({"max_null_share": float("nan")}, "max_null_share == nan, must be a number in [0, 1]"),
    ],
)
def test_constraint_messages_name_the_value_and_the_rule(kw: dict, message: str) -> None:
    with pytest.raises(InputError) as err:
        CohortModel(**{"features": AB, "profile_features": AB, **kw}).fit(blobs())
    assert message in str(err.value)


def test_numpy_integers_are_ints() -> None:
    m = CohortModel(np.int64(3), features=AB, profile_features=AB, n_init=np.int32(2))
    assert m.fit(blobs()).n_cohorts_ == 3


def test_diagnostic_functions_reproduce_what_fit_recorded() -> None:
    data = blobs()
    outcomes_free = CohortModel(3, features=AB, profile_features=AB, random_state=4).fit(data)
    # fit draws two seeds (selection, k-means) before the diagnostics use the generator
    rng = np.random.default_rng(4)
    rng.integers(2**31)
    rng.integers(2**31)
    assert cohort_quality(outcomes_free, data, rng=rng) == outcomes_free.quality_
    described = describe_cohorts(outcomes_free, data)
    assert described.archetypes == outcomes_free.archetypes_
    assert described.reference_bins == outcomes_free.reference_bins_
    assert described.population_moments == outcomes_free.population_moments_
    other = CohortModel(3, features=AB, profile_features=AB, random_state=5).fit(
        data, previous=outcomes_free
    )
    assert drift_report(outcomes_free, other, data) == other.drift_


def test_selection_params_instance_is_required() -> None:
    assert isinstance(CohortModel().selection, SelectionParams)
