"""The CLI on ``--db postgresql://...``: the simulated pipeline gives what it gives on DuckDB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cohortlens.events.ingest import ingest
from cohortlens.store import open_store

LEARNERS = 300


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cohortlens", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def ok(*args: str) -> Any:
    r = cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    r = cli("simulate", "--learners", str(LEARNERS), "--seed", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


def test_ingest_and_features_match_duckdb_and_discover_runs(
    sim: Path, pg_url: str, tmp_path: Path
) -> None:
    events, outcomes = str(sim / "events.parquet"), str(sim / "outcomes.parquet")
    duck = str(tmp_path / "d.duckdb")
    first = ok("ingest", events, "--outcomes", outcomes, "--db", pg_url)
    again = ok("ingest", events, "--db", pg_url)
    assert first == ok("ingest", events, "--outcomes", outcomes, "--db", duck)
    assert first["accepted"] > 0
    assert (again["accepted"], again["duplicates"]) == (0, first["accepted"])

    tables = {}
    for name, db in (("postgres", pg_url), ("duckdb", duck)):
        out = tmp_path / f"{name}.parquet"
        run = ok("features", "--db", db, "--workers", "1", "--out", str(out))
        assert run["run_id"] == 1
        tables[name] = pq.read_table(out)
    assert tables["postgres"].num_rows > 0
    assert tables["postgres"].equals(tables["duckdb"])

    found = ok("discover", "--db", pg_url)
    cards = ok("cohorts", "--db", pg_url)
    assert cards["model_id"] == found["model_id"]
    assert sum(c["size"] for c in cards["cohorts"]) == tables["postgres"].num_rows
    with open_store(pg_url) as store:
        assert store.routing().stable_model_id == found["model_id"]
        assigned = store.read_assignments(found["model_id"])
        assert assigned.num_rows == tables["postgres"].num_rows
        assert store.feature_runs()[0]["source"] == f"store:{pg_url}"
    rejected = ok("quarantine", "--db", pg_url, "--limit", "5")
    assert rejected["total"] == first["rejected"]
    assert len(rejected["rows"]) == rejected["shown"] == min(5, first["rejected"])


def test_experiment_exposures_and_analysis_from_the_store(
    sim: Path, pg_url: str, tmp_path: Path
) -> None:
    outcomes = pq.read_table(sim / "outcomes.parquet")
    learners = tmp_path / "learners.parquet"
    pq.write_table(pa.table({"learner_id": outcomes["learner_id"]}), learners)
    with open_store(pg_url) as store:  # outcomes only, in-process
        ingest(store, [], outcomes=[sim / "outcomes.parquet"])
    assigned = ok(
        "experiment",
        "assign",
        str(learners),
        "--experiment",
        "e1",
        "--out",
        str(tmp_path / "a.parquet"),
        "--log-exposures",
        "--db",
        pg_url,
    )
    assert assigned["exposures_logged"] == LEARNERS
    report = ok("experiment", "analyze", "store:e1", "--db", pg_url, "--metric", "completed:binary")
    assert "completed" in json.dumps(report)
    with open_store(pg_url) as store:
        joined = store.experiment_outcomes("e1")
    assert joined.num_rows == LEARNERS
    variants = pq.read_table(tmp_path / "a.parquet")
    expected = dict(
        zip(variants["learner_id"].to_pylist(), variants["variant"].to_pylist(), strict=True)
    )
    assert (
        dict(zip(joined["learner_id"].to_pylist(), joined["variant"].to_pylist(), strict=True))
        == expected
    )


def test_an_unreachable_postgres_store_exits_3_without_a_traceback() -> None:
    r = cli("cohorts", "--db", "postgresql://u:pw@127.0.0.1:1/x?connect_timeout=3")
    assert r.returncode == 3
    assert "cannot connect to the PostgreSQL store" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert ":pw@" not in r.stderr
