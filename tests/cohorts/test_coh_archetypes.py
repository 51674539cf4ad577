"""The naming rule, the cohort profiles and the outcome estimates of the cards."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cohortlens.cohorts import FeatureSpec, name_cohort
from cohortlens.cohorts.archetypes import (
    FeatureProfile,
    label_archetypes,
    outcome_estimates,
    population_moments,
    profile_cohorts,
)
from cohortlens.cohorts.params import INSUFFICIENT_COHORT, INSUFFICIENT_NAME

P5 = (math.nan,) * 5


def prof(centre: float = math.nan, z: float = 0.0, coverage: float = 1.0) -> FeatureProfile:
    return FeatureProfile(centre, z, coverage, P5)


@pytest.mark.parametrize(
    ("profile", "name"),
    [
        (
            {
                "velocity_logit_per_week": prof(z=0.9),
                "affinity_effective_domains": prof(1.5),
                "affinity_top_share": prof(0.85),
                "half_life_days": prof(30, z=1.1),
            },
            "fast-learning specialists with strong retention",
        ),
        (
            {"active_weeks": prof(z=-1.2), "affinity_effective_domains": prof(4.2)},
            "disengaging generalists",
        ),
        (
            {
                "engagement_events_per_week": prof(z=0.8),
                "affinity_effective_domains": prof(2.6),
                "affinity_top_share": prof(0.5),
                "half_life_days": prof(2, z=-1.0),
            },
            "intensive focused learners with weak retention",
        ),
        (
            {"engagement_events_per_week": prof(z=-0.7), "velocity_logit_per_week": prof(z=-0.6)},
            "occasional slow-learning learners",
        ),
        # |z| below 0.5 names nothing; a z on under half the cohort is ignored
        (
            {"active_weeks": prof(z=-0.49), "half_life_days": prof(z=2.0, coverage=0.4)},
            "learners",
        ),
        # top-domain share alone makes a specialist; fewer than 1.75 effective domains as well
        ({"affinity_effective_domains": prof(2.5), "affinity_top_share": prof(0.7)}, "specialists"),
        ({"affinity_effective_domains": prof(1.74)}, "specialists"),
        ({"affinity_effective_domains": prof(3.5)}, "focused learners"),
        # recency: many days since the last event reads as disengaging
        ({"days_since_last_event": prof(z=0.6)}, "disengaging learners"),
    ],
)
def test_naming_rule(profile: dict[str, FeatureProfile], name: str) -> None:
    assert name_cohort(profile) == name


def test_affinity_noun_needs_varying_affinity() -> None:
    profile = {"affinity_effective_domains": prof(4.0)}
    assert name_cohort(profile, affinity_varies=False) == "learners"


def test_duplicate_names_are_told_apart() -> None:
    a = {"n_events": prof(z=1.5), "reuse_rate": prof(z=0.1)}
    b = {"n_events": prof(z=-0.2), "reuse_rate": prof(z=-0.9)}
    c = {"n_events": prof(z=0.1)}
    labels = np.array([1, 2, 3, 0])
    cards = label_archetypes(labels, [0, 1, 2, 3], np.zeros(4, bool), {0: {}, 1: a, 2: b, 3: c})
    assert cards[1].name == "learners (more events)"
    assert cards[2].name == "learners (less revisiting)"
    assert cards[3].name == "learners"  # already unique once the others are qualified
    assert cards[INSUFFICIENT_COHORT].name == INSUFFICIENT_NAME
    assert [cards[i].share for i in range(4)] == [0.25] * 4
    # nothing distinctive left: the ids tell them apart
    twins = label_archetypes(np.array([1, 2]), [1, 2], np.zeros(2, bool), {1: c, 2: c})
    assert [twins[1].name, twins[2].name] == ["learners (cohort 1)", "learners (cohort 2)"]


def test_profile_matches_a_naive_computation() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(1, 4, 500)
    x = np.column_stack([rng.normal(size=500), np.log(rng.lognormal(size=500))])
    x[::5, 1] = np.nan
    specs = [FeatureSpec("a"), FeatureSpec("b", "log")]
    moments = population_moments(x)
    out = profile_cohorts(labels, [1, 2, 3], x, specs, moments)
    for c in (1, 2, 3):
        member = labels == c
        col_b = x[member, 1]
        have = col_b[np.isfinite(col_b)]
        assert out[c]["b"].centre == pytest.approx(math.exp(have.mean()))
        assert out[c]["b"].coverage == pytest.approx(len(have) / member.sum())
        assert out[c]["b"].z == pytest.approx((have.mean() - moments[0][1]) / moments[1][1])
        pct = np.exp(np.percentile(have, [10, 25, 50, 75, 90]))
        assert out[c]["b"].percentiles == pytest.approx(tuple(pct))
        assert out[c]["a"].centre == pytest.approx(x[member, 0].mean())


def test_population_moments_winsorize() -> None:
    x = np.concatenate([np.zeros(999), [1e9]])[:, None]
    mean, sd = population_moments(x)
    # the single outlier is clipped to the 99.5th percentile (0): mean and sd stay 0
    assert (mean[0], sd[0]) == (0.0, 0.0)


def test_outcome_estimates_per_cohort() -> None:
    labels = np.array([1, 1, 1, 2, 2])
    completed = np.array([1.0, 0.0, np.nan, 1.0, 1.0])
    revenue = np.array([10.0, 20.0, 30.0, np.nan, 5.0])
    est = outcome_estimates(labels, [1, 2], {"completed": completed, "revenue": revenue})
    assert (est[1]["completed"].value, est[1]["completed"].n) == (0.5, 2)
    assert est[2]["completed"].value == 1.0
    assert (est[1]["revenue"].value, est[1]["revenue"].n) == (20.0, 3)
    assert est[2]["revenue"].n == 1


def test_card_round_trip() -> None:
    labels = np.array([1, 1, 2])
    profile = {"a": FeatureProfile(1.0, 0.5, 1.0, (0.0, 0.5, 1.0, 1.5, 2.0))}
    cards = label_archetypes(labels, [1, 2], np.array([True, False, False]), {1: profile, 2: {}})
    from cohortlens.cohorts import Archetype

    back = Archetype.from_dict(cards[1].to_dict())
    assert back == cards[1]
    assert back.partial_share == 0.5
