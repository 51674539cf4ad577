"""Report fixtures: the demo data (the simulator, as ``cohortlens demo`` runs it) and OULAD.

Each dataset gives a fitted cohort model with its feature table and outcomes, and an
experiment analysed in full and per segment; the reports are rendered once per session.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from tests.cohorts.conftest import FAST_SELECTION
from tests.conftest import shared_data

from cohortlens.cohorts import CohortModel, FeatureSpec, render_report
from cohortlens.experiments import AnalysisConfig, MetricKind, MetricSpec, analyze
from cohortlens.experiments.reduce import reduce_data
from cohortlens.experiments.report import render_html, render_segments_html
from cohortlens.experiments.segments import analyze_segments
from cohortlens.experiments.sequential import SequentialParams
from cohortlens.experiments.spec import MetricRole
from cohortlens.reports import ReportMeta

#: Learners embedded per cohort in the test reports (small, so the sampled path is used).
DRILLDOWN_ROWS = 300


@dataclass(frozen=True)
class Dataset:
    """One dataset's model, inputs and rendered reports (HTML strings)."""

    name: str
    model: CohortModel
    features: pa.Table
    outcomes: pa.Table
    reports: dict[str, str]


def _experiment_reports(
    table: pa.Table, specs: list[MetricSpec], period: str, segment: str, units: dict[str, str]
) -> dict[str, str]:
    red = reduce_data(
        table, variant_col="variant", metrics=specs, period_col=period, segment_col=segment
    )
    config = AnalysisConfig(sequential=SequentialParams(tuning_n=table.num_rows))
    report = analyze(specs, red.periods, config)
    seg = analyze_segments(specs, red.segments, config, by=segment)
    meta = ReportMeta(
        command="cohortlens experiment analyze data.parquet --sequential --report r.html",
        data_range=(red.periods[0].label, red.periods[-1].label),
        data_basis="periods",
    )
    return {
        "experiment": render_html(report, title="Experiment report", meta=meta, units=units),
        "segments": render_segments_html(seg, title="Experiment by cohort", meta=meta, units=units),
    }


@pytest.fixture(scope="session")
def demo() -> Dataset:
    """The demo: 5,000 simulated learners (seed 7), cohorts fitted twice (so the report has
    drift against the first fit), and a simulated A/B test of 20,000 learners."""
    from cohortlens.experiments.simulation import (
        SIMULATED_METRICS,
        ExperimentSimulationParams,
        simulate_experiment,
    )
    from cohortlens.features import compute_features
    from cohortlens.simulate import SimulationParams, simulate

    sim = simulate(SimulationParams(n_learners=5_000, seed=7))
    features = compute_features(sim.events)
    first = CohortModel(selection=FAST_SELECTION, random_state=7).fit(
        features, outcomes=sim.outcomes, feature_run="demo-1"
    )
    # a second run on 90 % of the learners, matched to the first: the report has a drift section
    keep = np.sort(np.random.default_rng(1).choice(features.num_rows, features.num_rows * 9 // 10))
    model = CohortModel(selection=FAST_SELECTION, random_state=8).fit(
        features.take(pa.array(np.unique(keep))),
        outcomes=sim.outcomes,
        previous=first,
        feature_run="demo-2",
    )
    assert model.drift_ is not None
    cohort_html = render_report(
        model,
        features,
        title="Learner cohorts (demo)",
        outcomes=sim.outcomes,
        revenue_unit="currency units",
        command="cohortlens discover --report report.html --revenue-unit 'currency units'",
        drilldown_rows=DRILLDOWN_ROWS,
    )
    exp = simulate_experiment(
        ExperimentSimulationParams(n_learners=20_000, completion_logit_shift=0.15, seed=7)
    ).data
    reports = {"cohorts": cohort_html}
    reports |= _experiment_reports(
        exp, list(SIMULATED_METRICS), "day", "cohort", {"revenue": "currency units"}
    )
    return Dataset("demo", model, features, sim.outcomes, reports)


#: Cohort features for OULAD (graded assessments only: no domains, no repeated items).
OULAD_FEATURES = (
    FeatureSpec("engagement_events_per_week", "log"),
    FeatureSpec("active_weeks"),
    FeatureSpec("n_events", "log"),
    FeatureSpec("ability_logit"),
)


@pytest.fixture(scope="session")
def oulad() -> Dataset:
    """OULAD (../shared/data/oulad): one learner per registration; an A/A split of them."""
    from cohortlens.events.readers import open_source
    from cohortlens.events.source import ReadOptions
    from cohortlens.events.validate import validate_batch
    from cohortlens.experiments.assignment import ExperimentDesign, Variant, assign
    from cohortlens.features import compute_features

    root = shared_data("oulad")
    src = open_source(root, "oulad", ReadOptions(mapping={"learner_id": "registration"}))
    events = pa.concat_tables([validate_batch(b).accepted for b in src.batches()])
    assert src.outcomes is not None
    outcomes = src.outcomes()
    features = compute_features(events)
    model = CohortModel(
        features=OULAD_FEATURES, min_events=1, selection=FAST_SELECTION, random_state=0
    ).fit(features, outcomes=outcomes, feature_run="oulad")
    cohort_html = render_report(
        model,
        features,
        title="OULAD registrations",
        outcomes=outcomes,
        command="cohortlens discover --report oulad.html",
        drilldown_rows=DRILLDOWN_ROWS,
    )
    # an A/A test on the registrations: real outcomes, a hash split, looks per presentation
    design = ExperimentDesign("oulad-aa", (Variant("control", 1), Variant("treatment", 1)))
    ids = features.column("learner_id")
    split = assign(ids, design)
    pos = pc.index_in(ids, value_set=outcomes["learner_id"])
    table = pa.table(
        {
            "variant": split.column("variant"),
            "cohort": pa.array(model.predict(features).astype(str)),
            "presentation": pc.list_element(pc.split_pattern(ids, ":"), 2),
            "completed": outcomes["completed"].take(pos),
            "churned": outcomes["churned"].take(pos),
            "assessments": features.column("n_events").cast(pa.float64()),
        }
    )
    specs = [
        MetricSpec("completed", MetricKind.BINARY),
        MetricSpec("assessments", MetricKind.MEAN),
        MetricSpec("churned", MetricKind.BINARY, role=MetricRole.GUARDRAIL, lower_is_better=True),
    ]
    reports = {"cohorts": cohort_html}
    reports |= _experiment_reports(
        table, specs, "presentation", "cohort", {"assessments": "submissions"}
    )
    assert np.isfinite(model.quality_.silhouette)
    return Dataset("oulad", model, features, outcomes, reports)


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the rendered reports are written for the browser."""
    return tmp_path_factory.mktemp("reports")
