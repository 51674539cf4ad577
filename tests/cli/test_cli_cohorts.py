"""simulate -> ingest -> features -> discover -> cohorts -> assign, through the real CLI."""

from __future__ import annotations

import html
import json
import shlex
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tests._cli import run_cli


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pipeline")
    db = d / "s.duckdb"
    for args in (
        ("simulate", "--learners", "1500", "--seed", "3", "--out", str(d / "sim")),
        (
            "ingest",
            str(d / "sim" / "events.parquet"),
            "--outcomes",
            str(d / "sim" / "outcomes.parquet"),
            "--db",
            str(db),
        ),
        ("features", "--db", str(db), "--out", str(d / "features.parquet")),
    ):
        r = cli(*args)
        assert r.returncode == 0, r.stderr
    return db


def test_cohort_commands_before_any_model_exit_3(tmp_path: Path) -> None:
    db = tmp_path / "empty.duckdb"
    r = cli("ingest", str(tmp_path / "none.csv"), "--db", str(db))  # exit 2, store created
    assert r.returncode == 2
    r = cli("cohorts", "--db", str(db))
    assert r.returncode == 3
    assert "no active cohort model" in r.stderr


@pytest.mark.parametrize(
    "command",
    [("cohorts",), ("quarantine",), ("discover",), ("features",), ("assign", "--features", "x")],
)
def test_commands_needing_a_store_never_create_one(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """A typo in --db names a missing store (exit 3); no empty file is left behind."""
    db = tmp_path / "typo.duckdb"
    r = cli(*command, "--db", str(db))
    assert r.returncode in (2, 3), r.stderr
    assert not db.exists()
    if r.returncode == 3:
        assert "no store at" in r.stderr


def test_discover_cards_and_assign(store: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    args = ("discover", "--db", str(store), "--report", str(report), "--revenue-unit", "EUR")
    r = cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    sizes = {c["cohort_id"]: c["size"] for c in found["cohorts"]}
    assert found["n_cohorts"] >= 2
    page = report.read_text()
    assert page.count("<svg") >= 1
    # the header names the command that made the report, and revenue has its unit
    assert f"<code>{html.escape(shlex.join(['cohortlens', *args, '--json']))}</code>" in page
    assert "revenue per learner (EUR)" in page
    # each learner's outcomes are in the drill-down tables
    assert '"key":"churned","kind":"bool"' in page
    cards = json.loads(cli("cohorts", "--db", str(store), "--json").stdout)
    assert cards["model_id"] == found["model_id"]
    out = tmp_path / "a.parquet"
    features = store.parent / "features.parquet"
    r = cli("assign", "--features", str(features), "--out", str(out), "--db", str(store))
    assert r.returncode == 0, r.stderr
    assigned = pq.read_table(out)
    assert assigned.column_names == ["learner_id", "cohort_id", "archetype", "distance"]
    assert assigned.num_rows == pq.read_metadata(features).num_rows
    counts = dict(
        zip(
            *[
                assigned.group_by("cohort_id").aggregate([("learner_id", "count")])[c].to_pylist()
                for c in ("cohort_id", "learner_id_count")
            ],
            strict=True,
        )
    )
    assert counts == sizes


def test_rediscovery_keeps_cohort_ids(store: Path) -> None:
    first = json.loads(cli("discover", "--db", str(store), "--json").stdout)
    again = json.loads(cli("discover", "--db", str(store), "--seed", "9", "--json").stdout)
    assert again["model_id"] > first["model_id"]
    assert [c["name"] for c in again["cohorts"]] == [c["name"] for c in first["cohorts"]]
    assert again["drift"] is not None


def test_bad_k_exits_2(store: Path) -> None:
    r = cli("discover", "--db", str(store), "--k", "many")
    assert r.returncode == 2
    assert "--k" in r.stderr
