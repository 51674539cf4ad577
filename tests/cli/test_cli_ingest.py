"""The CLI end to end: real process, exit codes, --json shape, no tracebacks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tests._cli import run_cli
from tests.conftest import REPO

DATA = REPO / "tests" / "data"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, timeout=120)


def test_ingest_json_summary_and_idempotence(tmp_path: Path) -> None:
    db = str(tmp_path / "s.duckdb")
    first = cli("ingest", str(DATA / "oulad"), "--format", "oulad", "--db", db, "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert set(report) >= {"rows_read", "accepted", "rejected", "duplicates", "rejected_by_reason"}
    assert report["rows_read"] == report["accepted"] + report["rejected"] + report["duplicates"]
    assert report["accepted"] > 0
    again = json.loads(cli("ingest", str(DATA / "oulad"), "--db", db, "--json").stdout)
    assert again["accepted"] == 0
    assert again["duplicates"] == report["accepted"]


def test_missing_file_fails_with_exit_2_and_a_message(tmp_path: Path) -> None:
    r = cli("ingest", str(tmp_path / "nope.csv"), "--db", str(tmp_path / "s.duckdb"))
    assert r.returncode == 2
    assert "nope.csv" in r.stderr
    assert "no such file" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_bad_map_and_format_options_exit_2(tmp_path: Path) -> None:
    db = str(tmp_path / "s.duckdb")
    r = cli("ingest", str(DATA / "oulad"), "--map", "learner=id", "--db", db)
    assert r.returncode == 2
    assert "not a canonical column" in r.stderr
    r = cli("ingest", str(DATA / "oulad"), "--format", "excel", "--db", db)
    assert r.returncode == 2
    assert "expected one of" in r.stderr


def test_same_source_twice_is_refused(tmp_path: Path) -> None:
    p = str(DATA / "oulad")
    r = cli("ingest", p, p, "--db", str(tmp_path / "s.duckdb"))
    assert r.returncode == 2
    assert "more than once" in r.stderr


def test_a_store_newer_than_the_code_exits_3(tmp_path: Path) -> None:
    import duckdb

    db = tmp_path / "s.duckdb"
    assert cli("ingest", str(DATA / "oulad"), "--db", str(db)).returncode == 0
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO schema_migrations VALUES (999, now())").fetchall()
    con.close()
    r = cli("quarantine", "--db", str(db))
    assert r.returncode == 3
    assert "newer than this release" in r.stderr


@pytest.mark.parametrize("fmt", ["ednet", "kddcup2015"])
def test_dataset_slices_ingest(tmp_path: Path, fmt: str) -> None:
    r = cli(
        "ingest",
        str(DATA / ("ednet" if fmt == "ednet" else "kddcup2015")),
        "--db",
        str(tmp_path / "s.duckdb"),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["accepted"] > 0
    assert rep["rows_read"] == rep["accepted"] + rep["rejected"] + rep["duplicates"]
