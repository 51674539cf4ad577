"""Stability (issue 15): new learners in new domains change no existing learner's features or
cohort; ``discover`` says how many learners changed cohort and why."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from tests._cli import run_cli

from cohortlens.cohorts import CohortModel
from cohortlens.events.schema import EVENT_SCHEMA
from cohortlens.features import compute_features
from cohortlens.simulate import SimulationParams, simulate


def _newcomers(after_us: int) -> pa.Table:
    """Two new learners, two new domains, four events (graded and not)."""
    ts = pa.array([after_us + k * 3_600_000_000 for k in range(4)], pa.int64())
    return pa.table(
        {
            "event_id": ["new-1", "new-2", "new-3", "new-4"],
            "learner_id": ["newcomer-a", "newcomer-a", "newcomer-b", "newcomer-b"],
            "ts": ts.cast(pa.timestamp("us", tz="UTC")),
            "domain": ["astronomy", "astronomy", "latin", "latin"],
            "item_id": ["astro-1", "astro-2", "latin-1", "latin-1"],
            "outcome": [1.0, 0.0, None, 1.0],
            "duration_s": [30.0, 45.0, 60.0, None],
        },
        schema=EVENT_SCHEMA,
    )


def test_two_learners_in_two_new_domains_change_no_feature_and_no_assignment() -> None:
    sim = simulate(SimulationParams(n_learners=1500, seed=21))
    before = compute_features(sim.events)
    last = pc.max(sim.events["ts"]).cast(pa.int64()).as_py()
    after = compute_features(pa.concat_tables([sim.events, _newcomers(last)]))
    old = pc.is_in(after["learner_id"], value_set=before["learner_id"])
    assert after.num_rows == before.num_rows + 2
    # bit-identical rows (NaN-aware, float bits included)
    assert after.filter(old).equals(before)
    model = CohortModel(4, random_state=0).fit(before)
    np.testing.assert_array_equal(model.predict(after.filter(old)), model.predict(before))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=600)


def test_discover_reports_who_changed_cohort_and_why(tmp_path: Path) -> None:
    sim = simulate(SimulationParams(n_learners=800, seed=22))
    events = tmp_path / "events.parquet"
    pq.write_table(sim.events, events)
    more = tmp_path / "more.parquet"
    last = pc.max(sim.events["ts"]).cast(pa.int64()).as_py()
    pq.write_table(_newcomers(last), more)
    db = str(tmp_path / "s.duckdb")
    for args in (("ingest", str(events)), ("features",)):
        r = _cli(*args, "--db", db)
        assert r.returncode == 0, r.stderr
    first = json.loads(_cli("discover", "--k", "4", "--db", db, "--json").stdout)
    assert first["changed"] is None  # no previous model
    for args in (("ingest", str(more)), ("features",)):
        r = _cli(*args, "--db", db)
        assert r.returncode == 0, r.stderr
    r = _cli("discover", "--k", "4", "--db", db, "--json")
    assert r.returncode == 0, r.stderr
    changed = json.loads(r.stdout)["changed"]
    assert changed["basis"] == "assignments"
    assert changed["n_compared"] == len(pc.unique(sim.events["learner_id"]))
    assert changed["n_new"] == 2
    # the newcomers moved nobody's features (the previous model keeps every old assignment);
    # whatever changed, changed because the model was refitted on 802 learners
    assert changed["changed_by_features"] == 0
    assert changed["n_changed"] == changed["changed_by_refit"]
    # another seed refits the centroids: any change is a refit, never a feature change
    r = _cli("discover", "--k", "4", "--seed", "5", "--db", db)
    assert r.returncode == 0, r.stderr
    assert "changed cohort since the previous model:" in r.stdout
    assert "0 by feature change" in r.stdout


@pytest.mark.shared_data
def test_discover_on_oulad_reports_changes_against_the_previous_model(tmp_path: Path) -> None:
    from tests.conftest import shared_data

    root = shared_data("oulad")
    db = str(tmp_path / "oulad.duckdb")
    r = _cli("ingest", str(root), "--format", "oulad", "--db", db)
    assert r.returncode == 0, r.stderr
    assert _cli("features", "--db", db).returncode == 0
    assert _cli("discover", "--db", db).returncode == 0
    r = _cli("discover", "--seed", "1", "--db", db, "--json")
    assert r.returncode == 0, r.stderr
    changed = json.loads(r.stdout)["changed"]
    assert changed["n_compared"] > 15_000
    assert changed["changed_by_features"] == 0  # same feature run
    assert changed["n_changed"] == changed["changed_by_refit"]
