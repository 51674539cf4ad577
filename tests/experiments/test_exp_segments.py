"""Per-cohort analysis (issue 14 §3): segments, corrections, heterogeneity, the report."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cohortlens.cli.experiment import app
from cohortlens.experiments import MetricKind, MetricSpec
from cohortlens.experiments.reduce import reduce_data
from cohortlens.experiments.segments import analyze_segments, cohort_at_exposure

runner = CliRunner()


def _data(seed: int, effect_cohort: str | None, n: int = 40_000) -> pa.Table:
    rng = np.random.default_rng(seed)
    cohort = rng.integers(0, 4, n).astype(str)
    variant = np.where(rng.random(n) < 0.5, "control", "treatment")
    lift = 0.08 * ((cohort == effect_cohort) & (variant == "treatment"))
    completed = rng.random(n) < 0.3 + lift
    revenue = rng.lognormal(1.0, 1.0, n) * (1 + lift)
    cohort_col = np.where(rng.random(n) < 0.01, None, cohort)
    return pa.table(
        {"variant": variant, "cohort": cohort_col, "completed": completed, "revenue": revenue}
    )


SPECS = [MetricSpec("completed", MetricKind.BINARY), MetricSpec("revenue", MetricKind.MEAN)]


def test_segments_add_up_to_the_total_exactly() -> None:
    table = _data(1, "2")
    r = reduce_data(table, variant_col="variant", metrics=SPECS, segment_col="cohort")
    plain = reduce_data(table, variant_col="variant", metrics=SPECS).periods[0]
    assert "(none)" in r.segments  # learners without a cohort are kept, not lost
    total = r.periods[0]
    assert total.units == plain.units
    for m in ("completed", "revenue"):
        for v in ("control", "treatment"):
            seg_sum = sum(s[0].metrics[m][v].n for s in r.segments.values())
            assert seg_sum == total.metrics[m][v].n == plain.metrics[m][v].n
            assert total.metrics[m][v].sum_y == pytest.approx(plain.metrics[m][v].sum_y, rel=1e-12)
    report = analyze_segments(SPECS, r.segments, by="cohort")
    assert report.total.units == dict(total.units)


def test_effect_in_one_cohort_is_found_and_heterogeneity_flags_it() -> None:
    r = reduce_data(_data(2, "2"), variant_col="variant", metrics=SPECS, segment_col="cohort")
    report = analyze_segments(SPECS[:1], r.segments, by="cohort")
    flagged = {
        n
        for n, rep in report.segments.items()
        if rep.effects[0].verdict.value != "no_significant_change"
    }
    assert flagged == {"2"}
    assert report.heterogeneity[0].pvalue < 0.01
    assert report.warning is not None
    assert analyze_segments(SPECS[:1], r.segments, preregistered=True).warning is None


def test_cli_by_cohort_json_and_report(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(_data(3, "1", n=20_000), path)
    html = tmp_path / "r.html"
    args = ["analyze", str(path), "--metric", "completed:binary", "--by", "cohort"]
    result = runner.invoke(app, [*args, "--report", str(html), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["by"] == "cohort"
    assert doc["segment_correction"] == "bh"
    assert set(doc["segments"]) == {"0", "1", "2", "3", "(none)"}
    assert doc["warning"]
    seg_units = sum(sum(s["units"].values()) for s in doc["segments"].values())
    assert seg_units == sum(doc["total"]["units"].values()) == 20_000
    text = html.read_text()
    assert "were not declared before the experiment" in text
    assert text.count("forest plot") >= 2
    assert "cohort 1 (" in text  # one forest row per segment, with its learners
    result = runner.invoke(app, [*args, "--segments-preregistered"])
    assert result.exit_code == 0, result.output
    assert "heterogeneity completed" in result.stdout
    assert "were not declared" not in result.stdout


def test_cohort_comes_from_the_model_active_at_exposure() -> None:
    t0, t1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    outcomes = pa.table(
        {
            "learner_id": ["a", "b", "c"],
            "exposed_at": pa.array(
                [datetime(2026, 1, 15, tzinfo=UTC), datetime(2026, 2, 15, tzinfo=UTC), t0],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    history = [
        {"at": t0, "routing": {"stable_model_id": 1}},
        {"at": t1, "routing": {"stable_model_id": 2}},
    ]
    assignments = {
        1: pa.table(
            {"learner_id": ["a", "b", "c"], "cohort_id": [0, 0, 1], "archetype": ["x", "x", "y"]}
        ),
        2: pa.table({"learner_id": ["a", "b"], "cohort_id": [5, 6], "archetype": ["p", "q"]}),
    }
    out = cohort_at_exposure(outcomes, history, assignments, fallback_model=2)
    assert out.column("cohort").to_pylist() == ["0:x", "6:q", "1:y"]


def test_segment_verdicts_respect_lower_is_better_and_guardrails() -> None:
    """A significant drop of churn (lower is better) is an improvement in its segment; a
    significant rise of a guardrail fails it there (the old code called both by the sign)."""
    rng = np.random.default_rng(7)
    n = 40_000
    cohort = rng.integers(0, 3, n).astype(str)
    variant = np.where(rng.random(n) < 0.5, "control", "treatment")
    t = variant == "treatment"
    churned = rng.random(n) < 0.3 - 0.08 * ((cohort == "0") & t)
    errors = rng.random(n) < 0.1 + 0.08 * ((cohort == "1") & t)
    table = pa.table({"variant": variant, "cohort": cohort, "churned": churned, "errors": errors})
    specs = [
        MetricSpec("churned", MetricKind.BINARY, lower_is_better=True),
        MetricSpec("errors", MetricKind.BINARY, role="guardrail", lower_is_better=True),
    ]
    r = reduce_data(table, variant_col="variant", metrics=specs, segment_col="cohort")
    report = analyze_segments(specs, r.segments, by="cohort")
    churn = report.segments["0"].effect("churned")
    assert churn.effect_size < 0
    assert churn.verdict.value == "improvement"
    guard = report.segments["1"].effect("errors")
    assert guard.verdict.value == "regression"
    assert guard.guardrail_failed is True
    assert report.segments["1"].status.value == "guardrail_failed"
    assert report.segments["2"].effect("errors").guardrail_failed is False


def test_simulate_only_cohort_plants_the_effect_there(tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    args = ["simulate", "--learners", "3000", "--weeks", "1", "--effect", "0.5", "--json"]
    result = runner.invoke(app, [*args, "--only-cohort", "crammer", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    by_cohort = doc["cohort_true_effects"]
    assert set(by_cohort) == {"fast_specialist", "steady_generalist", "crammer", "disengaging"}
    for name, effects in by_cohort.items():
        if name == "crammer":
            assert effects["revenue"] > 0
        else:
            assert set(effects.values()) == {0.0}, (name, effects)
    truth = json.loads((tmp_path / "s.truth.json").read_text())
    assert truth["cohort_true_effects"] == by_cohort
    bad = runner.invoke(app, [*args, "--only-cohort", "crammers", "--out", str(out)])
    assert bad.exit_code == 2
    assert "unknown cohort(s) crammers" in bad.output


def test_canary_learners_get_the_cohort_of_the_candidate_that_served_them() -> None:
    """During a canary the service routes a learner to the candidate iff its bucket under the
    release salt is below round(weight × 10000); --by cohort follows the same rule."""
    from cohortlens.experiments.assignment import bucket_of
    from cohortlens.serve.routing import Role, candidate_threshold, route

    salt = "0123456789abcdef"
    t0, t1, t2 = (datetime(2026, 3, d, tzinfo=UTC) for d in (1, 10, 20))
    history = [
        {"at": t0, "routing": {"stable_model_id": 1, "candidate_model_id": None}},
        {
            "at": t1,
            "routing": {
                "stable_model_id": 1,
                "candidate_model_id": 2,
                "candidate_weight": 0.3,
                "salt": salt,
            },
        },
        {"at": t2, "routing": {"stable_model_id": 2, "candidate_model_id": None, "salt": "f" * 16}},
    ]
    ids = [f"learner-{i}" for i in range(3000)]
    during = datetime(2026, 3, 15, tzinfo=UTC)
    after = datetime(2026, 3, 25, tzinfo=UTC)
    exposed = [during if i % 3 else after for i in range(3000)]
    outcomes = pa.table(
        {"learner_id": ids, "exposed_at": pa.array(exposed, pa.timestamp("us", tz="UTC"))}
    )
    assignments = {
        m: pa.table({"learner_id": ids, "cohort_id": [m] * 3000, "archetype": [f"model{m}"] * 3000})
        for m in (1, 2)
    }
    out = cohort_at_exposure(outcomes, history, assignments)
    got = dict(zip(out["learner_id"].to_pylist(), out["cohort"].to_pylist(), strict=True))
    roles = dict(zip(out["learner_id"].to_pylist(), out["cohort_role"].to_pylist(), strict=True))
    threshold = candidate_threshold(0.3)
    n_candidate = 0
    for i, learner in enumerate(ids):
        if exposed[i] == after:
            assert got[learner] == "2:model2"
            assert roles[learner] == "stable"
            continue
        role = route(bucket_of(learner, salt), threshold, has_candidate=True)
        n_candidate += role is Role.CANDIDATE
        assert got[learner] == ("2:model2" if role is Role.CANDIDATE else "1:model1"), learner
        assert roles[learner] == role.value
    assert 0.25 < n_candidate / 2000 < 0.35


def test_cli_store_by_cohort_follows_the_canary(tmp_path: Path) -> None:
    """store:EXPERIMENT --by cohort end to end: during a 50 % canary, half the learners get
    the candidate model's cohort."""
    from datetime import timedelta

    from cohortlens.experiments import ExperimentDesign, Variant, assign, exposure_records
    from cohortlens.store import DuckDBStore

    db = tmp_path / "s.duckdb"
    n = 2000
    ids = [f"u{i}" for i in range(n)]

    def cohorts(cohort_id: int, name: str) -> pa.Table:
        return pa.table(
            {
                "learner_id": ids,
                "cohort_id": pa.array([cohort_id] * n, pa.int32()),
                "archetype": [name] * n,
                "distance": [0.0] * n,
            }
        )

    with DuckDBStore(db) as store:
        stable = store.save_model({"test": "stable"}, feature_run_id=None, activate=True)
        store.save_assignments(stable, cohorts(0, "old"))
        candidate = store.save_model({"test": "candidate"}, feature_run_id=None, activate=False)
        store.save_assignments(candidate, cohorts(1, "new"))
        store.start_release(candidate, actor="test", salt="00112233445566aa")
        store.set_candidate_weight(0.5, actor="test")
        design = ExperimentDesign("e1", (Variant("control"), Variant("treatment")))
        exposed_at = datetime.now(UTC) + timedelta(minutes=1)
        store.log_exposures(exposure_records(assign(ids, design), exposed_at, design))
        with store.ingest_session() as s:
            s.put_outcomes(
                pa.table(
                    {
                        "learner_id": ids,
                        "completed": [i % 3 == 0 for i in range(n)],
                        "churned": [False] * n,
                        "revenue": [1.0] * n,
                        "as_of": pa.array([None] * n, pa.timestamp("us", tz="UTC")),
                    }
                )
            )
            s.resolve()
            s.commit({"totals": {}})
    args = ["analyze", "store:e1", "--db", str(db), "--metric", "completed:binary"]
    result = runner.invoke(app, [*args, "--by", "cohort", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    sizes = {k: sum(s["units"].values()) for k, s in doc["segments"].items()}
    assert set(sizes) == {"0:old", "1:new"}
    assert sum(sizes.values()) == n
    assert 0.45 < sizes["1:new"] / n < 0.55
