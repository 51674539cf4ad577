"""``cohortlens rollout ...`` through the CLI: init, run --once, status, pause/resume, abort,
history, retry, promote --full, simulate; exit codes and one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from typer.testing import CliRunner

from cohortlens.cli.main import app
from cohortlens.rollout.spec import load_spec
from cohortlens.store.duckdb import DuckDBStore

runner = CliRunner()
ROUTE = "/v1/learners/{learner_id}/cohort"


def cli(*args: str) -> Any:
    return runner.invoke(app, ["rollout", *args], catch_exceptions=False)


@pytest.fixture
def metrics_url() -> Iterator[str]:
    reg = CollectorRegistry()
    req = Counter(
        "cohortlens_http_requests",
        "r",
        ["route", "method", "status", "model_role", "model_version"],
        registry=reg,
    )
    Histogram(
        "cohortlens_http_request_duration_seconds",
        "l",
        ["route", "model_role", "model_version"],
        registry=reg,
    )
    Counter("cohortlens_model_failures", "f", ["model_role", "model_version"], registry=reg)
    req.labels(ROUTE, "GET", "200", "stable", "1").inc(5)
    server, _ = start_http_server(0, addr="127.0.0.1", registry=reg)
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()
    server.server_close()


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = tmp_path / "cl.duckdb"
    with DuckDBStore(path) as s:
        s.save_model({"m": "stable"}, feature_run_id=None, activate=True)
        s.save_model({"m": "candidate"}, feature_run_id=None, activate=False)
    return str(path)


def test_init_writes_the_default_spec(tmp_path: Path) -> None:
    r = cli("init", "--candidate", "2", "--name", "ship-2")
    assert r.exit_code == 0
    data = yaml.safe_load(r.stdout)
    assert data["candidate_model_id"] == 2
    assert data["name"] == "ship-2"
    assert [s.get("set_weight") for s in data["steps"] if "set_weight" in s] == [1.0, 10.0, 100.0]
    out = tmp_path / "spec.yaml"
    assert cli("init", "--candidate", "2", "--out", str(out)).exit_code == 0
    assert load_spec(out).candidate_model_id == 2
    bad = cli("init", "--candidate", "2", "--name", "No Spaces")
    assert bad.exit_code == 2
    assert "--name 'No Spaces'" in bad.stderr


def test_bad_spec_exits_2_naming_the_field(tmp_path: Path, db: str) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: x\ncandidate_model_id: 2\nsteps:\n  - set_weight: 5\n  - pause: {duration_s: -1}\n"
    )
    r = cli("run", str(spec), "--db", db)
    assert r.exit_code == 2
    assert "steps[1].pause.duration_s: Input should be greater than 0" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli("status", "nope", "--db", db)
    assert r.exit_code == 2
    assert "no rollout named 'nope'" in r.stderr


def test_operator_commands_drive_a_rollout(tmp_path: Path, db: str, metrics_url: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "ship-2",
                "candidate_model_id": 2,
                "metrics": {"kind": "service", "urls": [metrics_url]},
                # Test artifacts are not cohort models and the stand-in /metrics has no
                # model_info: readiness has tests of its own.
                "readiness": {"store": False, "replicas": False},
                "steps": [{"set_weight": 5}, {"pause": {}}, {"set_weight": 50}, {"pause": {}}],
            }
        )
    )
    for _ in range(3):
        r = cli("run", str(spec), "--db", db, "--once")
        assert r.exit_code == 0, r.stderr
    st = json.loads(cli("status", "ship-2", "--db", db, "--json").stdout)
    assert st["status"]["phase"] == "Paused"
    assert st["status"]["step_index"] == 1
    assert st["routing"]["candidate_weight_percent"] == 5.0
    assert cli("status", "ship-2", "--db", db).exit_code == 0
    listing = json.loads(cli("status", "--db", db, "--json").stdout)
    assert [r["name"] for r in listing] == ["ship-2"]

    assert cli("resume", "ship-2", "--db", db).exit_code == 2  # a pause step needs promote
    r = cli("promote", "ship-2", "--db", db, "--json")
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert out["status"]["step_index"] == 3
    assert out["status"]["weight"] == 0.5
    with DuckDBStore(db) as s:
        assert s.routing().candidate_weight == 0.5  # applied by the command itself

    assert cli("pause", "ship-2", "--db", db, "--reason", "lunch").exit_code == 0
    assert cli("pause", "ship-2", "--db", db).exit_code == 2
    assert cli("resume", "ship-2", "--db", db).exit_code == 0

    r = cli("abort", "ship-2", "--db", db, "--reason", "cohorts look odd")
    assert r.exit_code == 0
    with DuckDBStore(db) as s:
        assert s.routing().candidate_weight == 0.0
    assert cli("promote", "ship-2", "--db", db).exit_code == 2
    hist = json.loads(cli("history", "ship-2", "--db", db, "--json").stdout)
    aborted = [e for e in hist if e["kind"] == "aborted"]
    assert aborted[0]["reason"] == "manual_abort"
    assert aborted[0]["detail"]["message"] == "cohorts look odd"
    assert [e["seq"] for e in hist] == list(range(1, len(hist) + 1))
    assert cli("history", "ship-2", "--db", db, "--limit", "3", "--no-measurements").exit_code == 0

    # run on an aborted rollout keeps it aborted and says so (exit 4).
    r = cli("run", str(spec), "--db", db)
    assert r.exit_code == 4
    assert "Aborted" in r.stdout

    assert cli("retry", "ship-2", "--db", db).exit_code == 0
    assert cli("run", str(spec), "--db", db, "--once").exit_code == 0
    r = cli("promote", "ship-2", "--db", db, "--full", "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["status"]["phase"] == "Promoted"
    with DuckDBStore(db) as s:
        routing = s.routing()
    assert (routing.stable_model_id, routing.candidate_model_id) == (2, None)


def test_simulate_command() -> None:
    r = cli("simulate", "--fault", "latency@canary", "--json", "--seed", "4")
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert out["phase"] == "Aborted"
    assert out["rollback_s"] <= out["bound_s"]
    text = cli("simulate", "--fault", "controller_crash@ramp", "--seed", "4")
    assert text.exit_code == 0
    assert "successor resumed" in text.stdout
    assert "Promoted" in text.stdout
    bad = cli("simulate", "--fault", "meteor@canary")
    assert bad.exit_code == 2
    assert "fault kind 'meteor'" in bad.stderr
