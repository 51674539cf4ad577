"""Plain-language summaries: generated from the model's figures, in the features' units."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from cohortlens.cohorts import CohortModel, render_report
from cohortlens.cohorts.matching import DriftReport, FeatureDrift
from cohortlens.cohorts.ood import OODSummary
from cohortlens.cohorts.summary import (
    drift_change_text,
    ood_text,
    ordered_cards,
    outcome_averages,
    population_centre,
    summarize_cohorts,
    value_text,
    velocity_words,
)

NB = "\u00a0"


def test_every_cohort_has_a_summary_in_report_order(fitted: CohortModel) -> None:
    summaries = summarize_cohorts(fitted)
    assert [s.cohort_id for s in summaries] == [c.cohort_id for c in ordered_cards(fitted)]
    for s in summaries:
        card = fitted.archetypes_[s.cohort_id]
        assert s.text.startswith(f"{s.title}: ")
        assert f"({card.size:,})" in s.text
        if s.headline is not None:
            est = card.outcomes[s.headline.outcome]
            assert s.headline.value == est.value
            assert f"{100 * est.value:.0f}{NB}% {s.headline.outcome}" in s.text


def test_summaries_follow_the_data(fitted: CohortModel) -> None:
    """Change a cohort's churn in the artifact: its summary changes with it."""
    before = {s.cohort_id: s for s in summarize_cohorts(fitted)}
    d = fitted.to_dict()
    target = next(a for a in d["archetypes"] if a["cohort_id"] == 1)
    target["outcomes"]["churned"] = {"value": 0.9, "ci_lower": 0.88, "ci_upper": 0.92, "n": 1000}
    target["outcomes"]["completed"] = {"value": 0.4, "ci_lower": 0.38, "ci_upper": 0.42, "n": 1000}
    changed = CohortModel.from_dict(d)
    after = {s.cohort_id: s for s in summarize_cohorts(changed)}
    averages = outcome_averages(ordered_cards(changed))
    s = after[1]
    assert s.text != before[1].text
    assert s.headline is not None
    assert s.headline.outcome == "churned"
    ratio = 0.9 / averages["churned"]
    assert f"90{NB}% churned (95{NB}% interval 88–92{NB}%)" in s.text
    assert re.search(rf"{ratio:.2g}× the average of {100 * averages['churned']:.0f}{NB}%", s.text)


def test_traits_compare_with_all_learners_in_units(fitted: CohortModel) -> None:
    for s in summarize_cohorts(fitted):
        for t in s.traits:
            assert abs(t.z) >= 0.5
            assert t.text.split(" (")[0]  # words first, e.g. "fewer active weeks"
            assert t.average == population_centre(fitted, t.column)


def test_population_centre_undoes_the_analysis_scale(fitted: CohortModel) -> None:
    log_col = next(s.column for s in fitted.profile_features_ if s.transform == "log")
    mean, _ = fitted.population_moments_[log_col]
    assert population_centre(fitted, log_col) == pytest.approx(math.exp(mean))  # geometric
    assert math.isnan(population_centre(fitted, "no_such_feature"))


def test_units_in_words() -> None:
    assert value_text("active_weeks", 7.36) == f"7.36{NB}weeks"
    assert value_text("velocity_logit_per_week", 0.0178) == f"+0.0178{NB}logits a week"
    assert value_text("p_recall_7d", 0.32) == f"32{NB}%"
    # a logit is log-odds: +0.1 a week for 10 weeks lifts 50 % to 1/(1+e^-1) = 73 %
    assert velocity_words(0.1).endswith(f"becomes 73{NB}% after 10 weeks")
    assert velocity_words(-0.1).endswith(f"becomes 27{NB}% after 10 weeks")
    assert velocity_words(float("nan")) == ""


def test_revenue_has_a_unit_or_says_it_has_none(fitted: CohortModel) -> None:
    with_unit = render_report(fitted, revenue_unit="EUR")
    assert "revenue per learner (EUR)" in with_unit
    assert re.search(r"revenue per learner <b>[\d.,]+ EUR</b>", with_unit)
    without = render_report(fitted)
    assert "unit not given: see --revenue-unit" in without


def test_direction_marks_are_neutral_and_explained(fitted: CohortModel) -> None:
    page = render_report(fitted)
    assert "higher than the average learner" in page
    assert "lower than the average learner" in page
    assert 'class="up"' not in page
    assert 'class="down"' not in page
    marks = re.findall(r'<span class="mark"[^>]*>(.)</span>', page)
    assert set(marks) <= {"▲", "▼"}
    assert len(marks) > 4
    assert np.all([m in page for m in ("z +", "z −")])


def _ood(share_beyond: float, n_assessed: int, warning: bool) -> OODSummary:
    feats = (
        FeatureDrift("half_life_days", 0.8, "shift", 0.0, 0.0),
        FeatureDrift("active_weeks", 0.15, "watch", 0.0, 0.0),
        FeatureDrift("ability_logit", 0.02, "stable", 0.0, 0.0),
    )
    n_beyond = round(share_beyond * n_assessed)
    return OODSummary(
        n_assessed, n_assessed, n_beyond, share_beyond, 3.2, 0.10, feats, warning, None
    )


def test_ood_reads_as_share_meaning_and_action() -> None:
    t = ood_text(_ood(0.42, 2000, warning=True))
    assert t.headline.startswith(f"42{NB}% of the 2,000 learners placed in a cohort (840)")
    assert "unlike any learner the model learned from" in t.headline
    assert f"more than the 10{NB}%" in t.meaning
    assert f"about 1{NB}% is normal" in t.meaning
    assert "fit a new model" in t.action
    # the measures that differ, most different first, in words and the report's labels
    assert t.features is not None
    assert t.features.index("memory half-life") < t.features.index("active weeks")
    assert "very different from training" in t.features
    assert "ability" not in t.features
    calm = ood_text(_ood(0.012, 2000, warning=False))
    assert calm.action.startswith("Nothing to do")
    assert "resemble the ones the model was built on" in calm.meaning


def test_drift_reason_says_features_or_refit() -> None:
    d = DriftReport(
        None, (), (), (), 0.0, {}, {}, 0.05, 1000, "assignments", 0.1,
        n_changed=50, changed_by_features=30, changed_by_refit=20,
    )  # fmt: skip
    text = drift_change_text(d)
    assert text.startswith(f"50 of 1,000 learners (5.0{NB}%) are in a different cohort")
    assert "30 of them moved because their own measures changed" in text
    assert "20 moved because the model was refitted" in text
    same = DriftReport(
        None, (), (), (), 0.0, {}, {}, 0.05, 1000, "reassignment", 0.1,
        n_changed=50, changed_by_features=0, changed_by_refit=50,
    )  # fmt: skip
    assert "every one of these moves comes from refitting" in drift_change_text(same)
