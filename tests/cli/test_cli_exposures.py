"""experiment assign --log-exposures writes exposure records to the store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cohortlens.experiments.assignment import EXPOSURE_SCHEMA
from cohortlens.store import DuckDBStore


def test_assign_logs_one_exposure_per_assigned_learner(tmp_path: Path) -> None:
    learners = tmp_path / "learners.parquet"
    pq.write_table(pa.table({"learner_id": [f"u{i}" for i in range(500)]}), learners)
    db = tmp_path / "s.duckdb"
    args = [
        sys.executable,
        "-m",
        "cohortlens",
        "experiment",
        "assign",
        str(learners),
        "--experiment",
        "onboarding-v2",
        "--out",
        str(tmp_path / "a.parquet"),
        "--log-exposures",
        "--db",
        str(db),
        "--json",
    ]
    r = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["exposures_logged"] == 500
    with DuckDBStore(db) as store:
        logged = store.read_exposures("onboarding-v2")
    assert logged.num_rows == 500
    assert logged.column_names == EXPOSURE_SCHEMA.names
    assigned = pq.read_table(tmp_path / "a.parquet")
    by_learner = dict(
        zip(assigned["learner_id"].to_pylist(), assigned["variant"].to_pylist(), strict=True)
    )
    assert all(
        by_learner[lid] == v
        for lid, v in zip(
            logged["learner_id"].to_pylist(), logged["variant"].to_pylist(), strict=True
        )
    )
