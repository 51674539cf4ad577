"""One embedded store, many processes: the service and the daily commands side by side.

A real ``cohortlens serve`` process runs on a DuckDB file while other real processes use the
same file: read-only commands, ingest, features, discover, ``rollout run``, and a process that
holds the file for a while (a long ingest). Nothing may fail because the service is up, the
service must pick up what the others wrote within its poll interval, and no exposure or
posted event may be lost or applied twice, even when the service is killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from tests._cli import run_cli
from tests.serve._server import Server, running_server
from tests.serve.conftest import Built, fresh_copy

from cohortlens.store import DuckDBStore
from cohortlens.store.duckdb import connect

EXPERIMENTS = "experiments:\n  - name: onboarding\n    variants: {control: 1, treatment: 1}\n"
POLL = "0.2"
#: Generous bound for "eventually" (a liveness bound, not a speed assertion).
EVENTUALLY_S = 60.0


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env)


def eventually(check: object, what: str) -> object:
    deadline = time.monotonic() + EVENTUALLY_S
    while True:
        got = check()  # type: ignore[operator]
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {EVENTUALLY_S:g} s: {what}")
        time.sleep(0.1)


@contextmanager
def held(db: Path) -> Iterator[None]:
    """Hold the DuckDB file from this process for the block, as a long ingest would."""
    con = connect(str(db), wait_s=EVENTUALLY_S)
    try:
        yield
    finally:
        con.close()


@pytest.fixture
def shared(built: Built, tmp_path: Path) -> Iterator[tuple[Path, Server]]:
    (tmp_path / "experiments.yaml").write_text(EXPERIMENTS)
    db = fresh_copy(built, tmp_path)
    with running_server(
        str(db),
        tmp_path,
        "--routing-poll-s",
        POLL,
        "--exposure-flush-s",
        "0.2",
        "--store-wait-s",
        "1",
        "--experiments",
        str(tmp_path / "experiments.yaml"),
    ) as srv:
        yield db, srv


def _events_csv(path: Path, learners: list[str], domain: str = "algebra") -> Path:
    lines = ["learner_id,ts,domain,item_id,outcome,duration_s"]
    for lid in learners:
        for day in range(1, 9):
            lines.append(f"{lid},2025-03-0{day % 9 + 1}T10:00:00Z,{domain},q{day},{day % 2},30")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_command_works_while_the_service_runs(
    shared: tuple[Path, Server], built: Built, tmp_path: Path
) -> None:
    db, server = shared
    before = server.client().get("/v1/models").json()["routing"]["revision"]
    reads = [
        ("cohorts", "--json"),
        ("quarantine", "--json"),
        ("experiment", "analyze", "store:onboarding", "--metric", "completed:binary"),
    ]
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def run(key: str, *args: str) -> None:
        results[key] = cli(*args, "--db", str(db))

    threads = [threading.Thread(target=run, args=(a[0] + str(i), *a)) for i, a in enumerate(reads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key, r in results.items():
        # No exposures yet: the analysis says so (exit 2); nobody fails on the lock (exit 3).
        assert r.returncode in (0, 2) if key.startswith("experiment") else r.returncode == 0, (
            key,
            r.stderr,
        )
        assert "lock" not in r.stderr.lower(), r.stderr

    new = _events_csv(tmp_path / "new.csv", ["sharing-new-1"])
    for args in (
        ("ingest", str(new)),
        ("features",),
        ("discover", "--k", "3"),
    ):
        r = cli(*args, "--db", str(db))
        assert r.returncode == 0, (args, r.stderr)
        assert "Could not set lock" not in r.stderr
    with DuckDBStore(db, read_only=True, wait_s=EVENTUALLY_S) as store:
        active = store.active_model()
    assert active is not None
    model_id = active[0]
    assert model_id != built.stable_id
    # The service serves the newly activated model within its poll interval.
    with server.client() as c:
        eventually(
            lambda: (
                c.get(f"/v1/learners/{built.stable['learner_id'][0].as_py()}/cohort")
                .json()
                .get("model_version")
                == model_id
            ),
            "the service serves the model discover activated",
        )
        assert c.get("/v1/models").json()["routing"]["revision"] > before


def test_rollout_controller_and_service_share_the_file(
    shared: tuple[Path, Server], built: Built, tmp_path: Path
) -> None:
    db, server = shared
    spec = tmp_path / "rollout.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "share",
                "candidate_model_id": built.candidate_id,
                "router": {"kind": "store"},
                "metrics": {"kind": "service", "urls": [server.url + "/metrics"]},
                "steps": [{"set_weight": 30}, {"pause": {}}],
            }
        )
    )
    r = cli("rollout", "run", str(spec), "--once", "--db", str(db))
    assert r.returncode == 0, r.stderr
    with server.client() as c:
        eventually(
            lambda: c.get("/v1/models").json()["routing"]["candidate_weight_percent"] == 30,
            "the service sees the weight the controller set",
        )
        ids = [str(x) for x in built.stable.column("learner_id").to_pylist()[:300]]
        roles = {c.get(f"/v1/learners/{i}/cohort").json()["model_role"] for i in ids}
    assert roles == {"stable", "candidate"}
    st = cli("rollout", "status", "share", "--db", str(db), "--json")
    assert st.returncode == 0, st.stderr


def test_a_learner_ingested_by_the_cli_is_found_within_the_poll_interval(
    shared: tuple[Path, Server], tmp_path: Path
) -> None:
    db, server = shared
    with server.client() as c:
        assert c.get("/v1/learners/cli-new-1/cohort").status_code == 404
        r = cli("ingest", str(_events_csv(tmp_path / "a.csv", ["cli-new-1"])), "--db", str(db))
        assert r.returncode == 0, r.stderr
        body = eventually(
            lambda: (
                (resp := c.get("/v1/learners/cli-new-1/cohort")).status_code == 200 and resp.json()
            ),
            "a learner ingested by the CLI is answered",
        )
    assert body["provisional"] is True  # type: ignore[index]
    assert body["model_role"] == "stable"  # type: ignore[index]


def test_posted_events_count_at_once_or_wait_in_the_spool(
    shared: tuple[Path, Server],
) -> None:
    db, server = shared
    event = {
        "learner_id": "api-new-1",
        "ts": "2025-03-01T10:00:00Z",
        "domain": "algebra",
        "item_id": "q1",
        "outcome": 1,
    }
    with server.client() as c:
        r = c.post("/v1/events", json={"events": [event]})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "stored"
        # Visible when the POST returns (this replica), provisionally.
        found = c.get("/v1/learners/api-new-1/cohort")
        assert found.status_code == 200
        assert found.json()["provisional"] is True
        with held(db):  # a long ingest holds the file
            queued = c.post("/v1/events", json={"events": [event | {"learner_id": "api-new-2"}]})
            assert queued.status_code == 202, queued.text
            assert queued.json() | {"rejected_by_reason": {}} == {
                "rows_read": 1,
                "accepted": 1,
                "rejected": 0,
                "duplicates": None,
                "rejected_by_reason": {},
                "status": "queued",
            }
            assert c.get("/readyz").status_code == 200  # serving from memory meanwhile
            assert c.get("/v1/learners/api-new-2/cohort").status_code == 404
            assignments = [
                c.get(
                    "/v1/experiments/onboarding/assignment", params={"learner_id": f"x{i}"}
                ).json()
                for i in range(20)
            ]
            assert all(a["variant"] for a in assignments)
        eventually(
            lambda: c.get("/v1/learners/api-new-2/cohort").status_code == 200,
            "the queued learner is stored and answered once the file is free",
        )

        def exposures() -> int:
            with DuckDBStore(db, read_only=True, wait_s=EVENTUALLY_S) as store:
                return int(store.read_exposures("onboarding").num_rows)

        eventually(lambda: exposures() == 20, "the exposures held back are written")
    time.sleep(1.0)  # a few more flushes: nothing is written twice
    assert exposures() == 20
    with DuckDBStore(db, read_only=True, wait_s=EVENTUALLY_S) as store:
        n = store.connection.execute(
            "SELECT count(*) FROM events WHERE learner_id IN ('api-new-1', 'api-new-2')"
        ).fetchall()
    assert n == [(2,)]


def test_sigkill_during_flushes_loses_and_duplicates_nothing(built: Built, tmp_path: Path) -> None:
    """Kill the service with SIGKILL while it flushes, over and over; every exposure whose
    variant was handed out is stored exactly once, and every posted event once."""
    (tmp_path / "experiments.yaml").write_text(EXPERIMENTS)
    db = fresh_copy(built, tmp_path)
    handed_out: list[str] = []
    posted: list[str] = []
    args = (
        "--exposure-flush-s",
        "0.05",
        "--routing-poll-s",
        "0.05",
        "--experiments",
        str(tmp_path / "experiments.yaml"),
    )
    for round_ in range(4):
        with running_server(str(db), tmp_path, *args) as server:
            stop = time.monotonic() + 1.5 + 0.37 * round_
            with server.client() as c:
                i = 0
                while time.monotonic() < stop:
                    lid = f"k{round_}-{i}"
                    try:
                        r = c.get(
                            "/v1/experiments/onboarding/assignment", params={"learner_id": lid}
                        )
                        if r.status_code == 200:
                            handed_out.append(lid)
                        if i % 10 == 0:
                            ev = {"learner_id": lid, "ts": "2025-03-01T10:00:00Z", "item_id": "q"}
                            p = c.post("/v1/events", json={"events": [ev]})
                            if p.status_code in (200, 202):
                                posted.append(lid)
                    except httpx.TransportError:
                        break
                    i += 1
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=30)
    # A last, clean run applies whatever the killed ones left in the spool.
    with running_server(str(db), tmp_path, *args):
        pass
    assert len(handed_out) > 50
    with DuckDBStore(db, read_only=True, wait_s=EVENTUALLY_S) as store:
        con = store.connection
        rows = dict(
            con.sql(
                "SELECT learner_id, count(*) FROM exposures WHERE experiment = 'onboarding' "
                "GROUP BY learner_id"
            ).fetchall()
        )
        events = dict(
            con.sql(
                "SELECT learner_id, count(*) FROM events WHERE learner_id LIKE 'k%' "
                "GROUP BY learner_id"
            ).fetchall()
        )
        pending = list(Path(f"{db}.spool").glob("*.*"))
    missing = [lid for lid in handed_out if lid not in rows]
    twice = {lid: n for lid, n in rows.items() if n != 1}
    assert not missing, f"{len(missing)} handed-out exposures lost, e.g. {missing[:5]}"
    assert not twice, f"exposures applied more than once: {list(twice.items())[:5]}"
    assert all(events.get(lid) == 1 for lid in posted), json.dumps(
        {lid: events.get(lid) for lid in posted if events.get(lid) != 1}
    )
    assert [p.name for p in pending if p.is_file()] == []
