"""Ground truth: cohorts recover the simulator's latent types; ids survive re-runs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import adjusted_rand_score
from tests.cohorts.conftest import FAST_SELECTION, SimData

from cohortlens.cohorts import INSUFFICIENT_COHORT, CohortModel, drift_report

pytestmark = pytest.mark.slow


def test_cohorts_recover_the_latent_types(fitted: CohortModel, sim: SimData) -> None:
    assert fitted.n_cohorts_ == 4  # chosen automatically over 3..7
    assert adjusted_rand_score(sim.types, fitted.labels_) >= 0.8
    names = set(fitted.names_.values())
    assert "fast-learning specialists with strong retention" in names
    assert any(n.startswith("disengaging") for n in names)
    assert fitted.n_insufficient_ == int((fitted.labels_ == INSUFFICIENT_COHORT).sum())


def test_quality_and_outcome_association(fitted: CohortModel) -> None:
    q = fitted.quality_
    assert q.stability_ari >= 0.9
    assert 0.3 < q.silhouette < 0.7
    assoc = {o.outcome: o for o in q.outcomes}
    assert set(assoc) == {"completed", "churned"}
    churn = assoc["churned"]
    assert churn.cramers_v > 0.3
    assert 0.7 < churn.auc_cohort < churn.auc_features  # the ceiling is above the cohort id
    rates = {c: a.outcomes["churned"].value for c, a in fitted.archetypes_.items() if a.size}
    disengaging = next(c for c, n in fitted.names_.items() if n.startswith("disengaging"))
    assert rates[disengaging] == max(v for c, v in rates.items() if c != INSUFFICIENT_COHORT)


def test_ids_survive_another_seed(fitted: CohortModel, sim: SimData) -> None:
    again = CohortModel(selection=FAST_SELECTION, random_state=11).fit(
        sim.features, previous=fitted
    )
    assert (again.labels_ == fitted.labels_).mean() >= 0.95
    assert again.drift_ is not None
    assert again.drift_.changed_share <= 0.05
    assert all(m.carried for m in again.drift_.matches)
    assert again.drift_.retired_ids == ()
    assert all(f.status == "stable" for f in again.drift_.features)


def test_ids_survive_a_90_percent_subsample(fitted: CohortModel, sim: SimData) -> None:
    rows = np.sort(np.random.default_rng(1).choice(sim.features.num_rows, 8856, replace=False))
    sub = sim.features.take(pa.array(rows))
    again = CohortModel(selection=FAST_SELECTION, random_state=12).fit(sub, previous=fitted)
    assert (again.labels_ == fitted.labels_[rows]).mean() >= 0.95
    # stored assignments of the previous run give the same share as the reassignment
    prev = pa.table(
        {"learner_id": sim.features["learner_id"], "cohort_id": pa.array(fitted.labels_)}
    )
    rep = drift_report(fitted, again, sub, previous_assignments=prev)
    assert rep.changed_basis == "assignments"
    assert rep.n_compared == len(rows)
    assert rep.changed_share == pytest.approx(1 - (again.labels_ == fitted.labels_[rows]).mean())


def test_a_shifted_population_shows_drift(fitted: CohortModel, sim: SimData) -> None:
    feats = sim.features
    hl = feats["half_life_days"].to_numpy(zero_copy_only=False) * 4.0
    shifted = feats.set_column(
        feats.schema.get_field_index("half_life_days"), "half_life_days", pa.array(hl)
    )
    again = CohortModel(fitted.n_cohorts_, random_state=0).fit(shifted, previous=fitted)
    assert again.drift_ is not None
    status = {f.column: f.status for f in again.drift_.features}
    assert status["half_life_days"] == "shift"
    assert status["active_weeks"] == "stable"
