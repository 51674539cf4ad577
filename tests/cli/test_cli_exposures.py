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


def test_analyze_reads_exposures_joined_with_outcomes_from_the_store(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    n = 2000
    ids = [f"u{i}" for i in range(n)]
    outcomes = tmp_path / "outcomes.parquet"
    pq.write_table(
        pa.table(
            {
                "learner_id": ids,
                "completed": [i % 3 == 0 for i in range(n)],
                "churned": [i % 5 == 0 for i in range(n)],
                "revenue": [float(i % 7) for i in range(n)],
            }
        ),
        outcomes,
    )
    learners = tmp_path / "learners.parquet"
    pq.write_table(pa.table({"learner_id": ids}), learners)
    base = [sys.executable, "-m", "cohortlens"]
    r = subprocess.run(
        [
            *base,
            "experiment",
            "assign",
            str(learners),
            "--experiment",
            "e1",
            "--out",
            str(tmp_path / "a.parquet"),
            "--log-exposures",
            "--db",
            str(db),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    with DuckDBStore(db) as store, store.ingest_session() as s:
        s.put_outcomes(
            pq.read_table(outcomes).append_column(
                "as_of", pa.array([None] * n, pa.timestamp("us", tz="UTC"))
            )
        )
        s.resolve()
        s.commit({"totals": {}})
    r = subprocess.run(
        [
            *base,
            "experiment",
            "analyze",
            "store:e1",
            "--db",
            str(db),
            "--metric",
            "completed:binary",
            "--metric",
            "revenue:mean",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    text = json.dumps(report)
    assert "completed" in text
    assert "revenue" in text
    missing = subprocess.run(
        [
            *base,
            "experiment",
            "analyze",
            "store:nope",
            "--db",
            str(db),
            "--metric",
            "completed:binary",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert missing.returncode == 2
    assert "no exposures of experiment 'nope'" in missing.stderr
