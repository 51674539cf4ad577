"""``models``, ``discover --candidate`` (its id, no duplicates), ``rollout init`` and
``rollout status`` on a store without rollouts, through the real CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests._cli import run_cli

from cohortlens.store import open_store


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, columns=200)  # table rows on one line each


def ok(*args: str, cwd: Path | None = None) -> Any:
    r = cli(*args, "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def features_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with events, outcomes and one feature run, no model yet."""
    d = tmp_path_factory.mktemp("models")
    db = d / "s.duckdb"
    for args in (
        ("simulate", "--learners", "1200", "--weeks", "12", "--seed", "5", "--out", str(d / "sim")),
        (
            "ingest",
            str(d / "sim" / "events.parquet"),
            "--outcomes",
            str(d / "sim" / "outcomes.parquet"),
            "--db",
            str(db),
        ),
        ("features", "--db", str(db)),
    ):
        r = cli(*args)
        assert r.returncode == 0, r.stderr
    return db


@pytest.fixture
def db(features_store: Path, tmp_path: Path) -> Path:
    """A private copy of the feature store (each test adds its own models)."""
    copy = tmp_path / "s.duckdb"
    shutil.copy(features_store, copy)
    return copy


def test_models_on_a_store_without_models(db: Path) -> None:
    assert ok("models", "--db", str(db)) == []
    r = cli("models", "--db", str(db))
    assert r.returncode == 0, r.stderr
    assert "no cohort models" in r.stdout
    assert "cohortlens discover" in r.stdout


def test_models_lists_ids_status_k_feature_run_and_role(db: Path) -> None:
    active = ok("discover", "--db", str(db))
    assert active["status"] == "active"
    candidate = ok("discover", "--candidate", "--seed", "1", "--db", str(db))
    assert candidate["status"] == "candidate"
    assert candidate["reused"] is False
    assert candidate["model_id"] != active["model_id"]

    rows = ok("models", "--db", str(db))
    assert [r["model_id"] for r in rows] == [candidate["model_id"], active["model_id"]]
    by_id = {r["model_id"]: r for r in rows}
    a, c = by_id[active["model_id"]], by_id[candidate["model_id"]]
    assert (a["status"], a["role"], a["traffic_share"]) == ("active", "stable", 1.0)
    assert (c["status"], c["role"], c["traffic_share"]) == ("candidate", None, 0.0)
    assert a["k"] == active["n_cohorts"]
    assert c["k"] == candidate["n_cohorts"]
    assert a["feature_run_id"] == c["feature_run_id"] == 1
    assert a["learners"] == sum(x["size"] for x in active["cohorts"])
    assert a["created_at"] <= c["created_at"]

    # On a release at 10 %, the table and JSON say who serves how much.
    with open_store(db) as store:
        store.start_release(candidate["model_id"], actor="test")
        store.set_candidate_weight(0.1, actor="test")
    rows = ok("models", "--db", str(db))
    roles = {r["model_id"]: (r["role"], r["traffic_share"]) for r in rows}
    assert roles[candidate["model_id"]] == ("candidate", 0.1)
    assert roles[active["model_id"]][0] == "stable"
    assert roles[active["model_id"]][1] == pytest.approx(0.9)
    table = cli("models", "--db", str(db))
    assert table.returncode == 0, table.stderr
    assert "stable, 90 % of learners" in table.stdout
    assert "candidate, 10 % of learners" in table.stdout


def test_models_is_read_only_and_never_creates_a_store(db: Path, tmp_path: Path) -> None:
    before = db.read_bytes()
    assert cli("models", "--db", str(db)).returncode == 0
    assert db.read_bytes() == before
    typo = tmp_path / "typo.duckdb"
    r = cli("models", "--db", str(typo))
    assert r.returncode == 3
    assert "no store at" in r.stderr
    assert not typo.exists()


def test_discover_candidate_prints_its_id_and_is_not_stored_twice(db: Path) -> None:
    first = cli("discover", "--candidate", "--db", str(db))
    assert first.returncode == 0, first.stderr
    (model_id,) = [m["model_id"] for m in ok("models", "--db", str(db))]
    assert f"stored candidate model {model_id} (not serving)" in first.stdout

    again = cli("discover", "--candidate", "--db", str(db))
    assert again.returncode == 0, again.stderr
    assert f"reused candidate model {model_id}" in again.stdout
    assert "nothing new was stored" in again.stdout
    payload = ok("discover", "--candidate", "--db", str(db))
    assert (payload["model_id"], payload["reused"]) == (model_id, True)
    assert [m["model_id"] for m in ok("models", "--db", str(db))] == [model_id]


def test_another_seed_or_k_is_another_candidate(db: Path) -> None:
    base = ok("discover", "--candidate", "--db", str(db))["model_id"]
    seeded = ok("discover", "--candidate", "--seed", "9", "--db", str(db))
    fixed_k = ok("discover", "--candidate", "--k", "3", "--db", str(db))
    assert not seeded["reused"]
    assert not fixed_k["reused"]
    assert len({base, seeded["model_id"], fixed_k["model_id"]}) == 3
    # ... and each is then reused for its own inputs.
    assert (
        ok("discover", "--candidate", "--k", "3", "--db", str(db))["model_id"]
        == (fixed_k["model_id"])
    )


def test_a_new_active_model_or_new_outcomes_make_a_new_candidate(db: Path, tmp_path: Path) -> None:
    """Ids are matched to the active model and outcomes name the cohorts: both are inputs."""
    first = ok("discover", "--candidate", "--db", str(db))["model_id"]
    ok("discover", "--db", str(db))  # a new active model
    second = ok("discover", "--candidate", "--db", str(db))
    assert not second["reused"]
    assert second["model_id"] != first
    outcomes = tmp_path / "o.csv"
    outcomes.write_text("learner_id,completed\nu0001,true\nnew-learner,false\n")
    r = cli("ingest", "--outcomes", str(outcomes), "--db", str(db))
    if r.returncode != 0:  # older ingest needs an events path: give it an empty events file
        events = tmp_path / "none.csv"
        events.write_text("learner_id,ts,item_id\n")
        r = cli("ingest", str(events), "--outcomes", str(outcomes), "--db", str(db))
    assert r.returncode == 0, r.stderr
    third = ok("discover", "--candidate", "--db", str(db))
    assert not third["reused"]
    assert third["model_id"] != second["model_id"]


def test_a_retired_candidate_is_not_reused(db: Path) -> None:
    first = ok("discover", "--candidate", "--db", str(db))["model_id"]
    with open_store(db) as store:
        store.set_model_status(first, "retired", actor="test")
    again = ok("discover", "--candidate", "--db", str(db))
    assert not again["reused"]
    assert again["model_id"] != first


def test_rollout_init_without_a_candidate_says_how_to_make_one(db: Path) -> None:
    r = cli("rollout", "init", "--db", str(db))
    assert r.returncode == 2
    assert r.stdout == ""
    assert "no candidate model" in r.stderr
    assert "cohortlens discover --candidate" in r.stderr


def test_rollout_init_uses_the_newest_candidate_and_prints_only_yaml(db: Path) -> None:
    older = ok("discover", "--candidate", "--seed", "2", "--db", str(db))["model_id"]
    newer = ok("discover", "--candidate", "--seed", "3", "--db", str(db))["model_id"]
    assert newer > older
    r = cli("rollout", "init", "--db", str(db))
    assert r.returncode == 0, r.stderr
    spec = yaml.safe_load(r.stdout)
    assert spec["candidate_model_id"] == newer
    assert spec["name"] == "cohort-model"
    assert f"candidate model {newer}" in r.stderr
    # An explicit --candidate still needs no store at all.
    r = cli("rollout", "init", "--candidate", str(older), "--db", str(db.parent / "none.duckdb"))
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["candidate_model_id"] == older
    assert not (db.parent / "none.duckdb").exists()


def test_rollout_init_with_the_default_store_as_the_readme_shows(db: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(db, work / "cohortlens.duckdb")
    candidate = ok("discover", "--candidate", cwd=work)["model_id"]
    r = subprocess.run(
        f'"{sys.executable}" -m cohortlens rollout init > rollout.yaml',
        shell=True,
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    spec = yaml.safe_load((work / "rollout.yaml").read_text())
    assert spec["candidate_model_id"] == candidate


def test_rollout_status_without_rollouts_says_so(db: Path) -> None:
    r = cli("rollout", "status", "--db", str(db))
    assert r.returncode == 0, r.stderr
    assert "no rollouts in" in r.stdout
    assert "cohortlens rollout init" in r.stdout
    assert ok("rollout", "status", "--db", str(db)) == []
