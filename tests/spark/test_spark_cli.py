"""``cohortlens features --engine spark``: a real process writes the local engine's features."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from tests.spark.conftest import PANDAS_WARNING
from tests.spark.test_spark_features import assert_same_features
from typer.testing import CliRunner

from cohortlens.cli.main import app
from cohortlens.features import compute_features
from cohortlens.store import open_store

pytestmark = pytest.mark.filterwarnings(PANDAS_WARNING)


runner = CliRunner()


def test_cli_spark_engine_writes_the_local_features(
    spark: Any, few_learners: pa.Table, tmp_path: Path
) -> None:
    """In process (the CLI picks up the active session, as under spark-submit)."""
    events = tmp_path / "events.parquet"
    pq.write_table(few_learners, events)
    out = tmp_path / "features.parquet"
    db = str(tmp_path / "s.duckdb")
    args = ["features", "--engine", "spark", "--events", str(events), "--out", str(out)]
    r = runner.invoke(app, [*args, "--db", db, "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    expected = compute_features(few_learners)
    assert summary["learners"] == expected.num_rows
    assert summary["run_id"] is not None  # a local output is also saved as a feature run
    assert sum(summary["velocity_status"].values()) == expected.num_rows
    assert_same_features(pq.read_table(out), expected)
    with open_store(db) as store:
        run_id, stored = store.read_features(summary["run_id"])
    assert run_id == summary["run_id"]
    assert_same_features(stored, expected)


def test_missing_events_path_exits_2(tmp_path: Path) -> None:
    r = runner.invoke(
        app,
        [
            "features",
            "--engine",
            "spark",
            "--events",
            str(tmp_path / "nope.parquet"),
            "--out",
            str(tmp_path / "o.parquet"),
            "--db",
            str(tmp_path / "s.duckdb"),
        ],
    )
    assert r.exit_code == 2
    assert "nope.parquet: no such file or directory" in r.output


def test_engine_options_are_checked(tmp_path: Path, events_dir: Path) -> None:
    db = str(tmp_path / "s.duckdb")
    r = runner.invoke(
        app, ["features", "--engine", "spark", "--events", str(events_dir), "--db", db]
    )
    assert r.exit_code == 2
    assert "--engine spark needs --events" in r.output
    r = runner.invoke(
        app, ["features", "--engine", "dask", "--events", str(events_dir), "--db", db]
    )
    assert r.exit_code == 2
    assert "expected local or spark" in r.output


def test_missing_columns_exit_2_with_the_column_named(
    spark: Any, sim_events: pa.Table, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.parquet"
    pq.write_table(sim_events.drop_columns(["item_id"]).slice(0, 50), bad)
    r = runner.invoke(
        app,
        [
            "features",
            "--engine",
            "spark",
            "--events",
            str(bad),
            "--out",
            str(tmp_path / "o"),
            "--db",
            str(tmp_path / "s.duckdb"),
        ],
    )
    assert r.exit_code == 2, r.output
    assert "missing required column(s) item_id" in r.output
    assert "Traceback" not in r.output


def test_remote_output_is_summarized_by_spark_and_not_saved(
    spark: Any, few_learners: pa.Table, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An --out the driver cannot read locally (s3a://...): counts come from Spark, no run."""
    import cohortlens.features.spark as spark_engine

    events = tmp_path / "events.parquet"
    pq.write_table(few_learners, events)
    out = tmp_path / "remote.parquet"
    monkeypatch.setattr(spark_engine, "is_local_path", lambda path: path == str(events))
    db = tmp_path / "s.duckdb"
    args = ["features", "--engine", "spark", "--events", str(events), "--out", str(out)]
    r = runner.invoke(app, [*args, "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    expected = compute_features(few_learners)
    assert summary["run_id"] is None
    assert not db.exists()
    assert summary["learners"] == expected.num_rows
    assert summary["retention_status"] == {
        str(p["values"]): p["counts"]
        for p in pc.value_counts(expected.column("retention_status")).to_pylist()
    }


def test_memory_limit_too_small_for_spark_exits_2_with_the_minimum(
    spark: Any, few_learners: pa.Table, tmp_path: Path
) -> None:
    events = tmp_path / "events.parquet"
    pq.write_table(few_learners, events)
    args = ["features", "--engine", "spark", "--events", str(events), "--out", str(tmp_path / "f")]
    r = runner.invoke(app, [*args, "--db", str(tmp_path / "s.duckdb"), "--memory-limit", "1MiB"])
    assert r.exit_code == 2
    assert "--memory-limit 1.0 MiB is too small for Spark with 2 concurrent task(s)" in r.output
    assert "at least 164.0 MiB" in r.output
    r = runner.invoke(app, [*args, "--db", str(tmp_path / "s.duckdb"), "--memory-limit", "lots"])
    assert r.exit_code == 2
    assert "expected a positive number of bytes" in r.output
