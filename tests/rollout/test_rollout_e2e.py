"""End to end on 127.0.0.1 with real processes: ``cohortlens serve`` on a PostgreSQL store,
live look-up traffic, and ``cohortlens rollout run`` as the controller.

1. A candidate made faulty during the canary is rolled back by itself: weight 0 within one
   analysis interval of the failure limit being reached, and the history says why.
2. The same candidate, healthy, is shipped to 100 % by a new rollout; its controller is
   killed (SIGKILL) during the ramp, and its successor resumes at the same step and weight
   (the routing weight never goes back down), then promotes it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.rollout.conftest import PG_URL, pg_admin, with_schema
from tests.serve._server import Server, running_server
from tests.serve.conftest import Built, build_store

from cohortlens.experiments.assignment import bucket_of
from cohortlens.store import open_store

INTERVAL_S = 1.5
ROUTE = "/v1/learners/{learner_id}/cohort"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Built, Server]]:
    conn = pg_admin()
    schema = f"cl_rollout_e2e_{uuid.uuid4().hex[:8]}"
    url = with_schema(PG_URL, schema)
    root = tmp_path_factory.mktemp("rollout_e2e")
    try:
        built = build_store(root, url)
        with running_server(
            url, root, "--routing-poll-s", "0.3", "--enable-fault-injection"
        ) as server:
            yield url, built, server
    finally:
        poll = _POLL_STORES.pop(url, None)
        if poll is not None:
            poll.close()
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()


class Load:
    """Look-ups of random known learners from two threads, until stopped."""

    def __init__(self, server: Server, ids: list[str]) -> None:
        self.server, self.ids = server, ids
        self.stop = threading.Event()
        self.sent = 0
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(2)
        ]

    def _run(self, seed: int) -> None:
        i = seed * 7919
        with httpx.Client(base_url=self.server.url, timeout=5.0) as c:
            while not self.stop.is_set():
                i = (i + 104_729) % len(self.ids)
                try:
                    c.get(f"/v1/learners/{self.ids[i]}/cohort")
                    self.sent += 1
                except httpx.HTTPError:
                    time.sleep(0.05)
                time.sleep(0.004)  # about 150-200 look-ups/s per thread: leave CPU to the rest

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)


def _spec(path: Path, name: str, candidate: int, server: Server) -> Path:
    path.write_text(
        json.dumps(
            {
                "name": name,
                "candidate_model_id": candidate,
                "router": {"kind": "store"},
                "metrics": {
                    "kind": "service",
                    "urls": [f"{server.url}/metrics"],
                    "routes": [ROUTE],
                },
                "analysis": {"interval_s": INTERVAL_S, "error_retry_interval_s": 0.5},
                "lease_ttl_s": 3,
                # Keep the aborted candidate loaded: the healthy rollout adopts its release.
                "abort_scale_down_delay_s": 0,
                "readiness": {"interval_s": 0.5},
                "checks": [
                    {
                        "type": "error_rate",
                        "name": "candidate-error-rate",
                        "max_error_rate": 0.05,
                        "min_requests": 15,
                        "consecutive_success_limit": 2,
                    },
                    {
                        "type": "compare_errors",
                        "name": "errors-vs-stable",
                        "min_requests": 15,
                        "consecutive_success_limit": 2,
                    },
                    {
                        "type": "latency",
                        "name": "candidate-p99-latency",
                        "max_latency_s": 2.0,
                        "min_requests": 15,
                        "consecutive_success_limit": 2,
                    },
                ],
                "steps": [
                    {"set_weight": 10},
                    {"analysis": {}},
                    {"set_weight": 30},
                    {"analysis": {}},
                    {"set_weight": 100},
                    {"analysis": {}},
                ],
            }
        )
    )
    return path


def _controller(spec: Path, db: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORTLENS_")}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cohortlens", "rollout", "run", str(spec), "--db", db, *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


_POLL_STORES: dict[str, Any] = {}


def _status(db: str, name: str) -> dict[str, Any] | None:
    """The persisted status, read through one polling connection per store."""
    if db not in _POLL_STORES:
        _POLL_STORES[db] = open_store(db)
    got = _POLL_STORES[db].rollout_status(name)
    return None if got is None else got[1]


def _wait(what: str, pred: Any, timeout_s: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    pytest.fail(
        f"timed out waiting for {what}; controller log:\n{log.read_text(errors='replace')[-3000:]}"
    )


def test_faulty_canary_is_rolled_back_then_a_healthy_release_survives_a_controller_kill(
    world: tuple[str, Built, Server], tmp_path: Path
) -> None:
    db, built, server = world
    cand = built.candidate_id
    ids = [str(x) for x in built.stable.column("learner_id").to_pylist()]
    admin = server.admin()
    with Load(server, ids) as load:
        # ---- 1. faulty during the canary -------------------------------------------------
        log1 = tmp_path / "controller-faulty.log"
        proc = _controller(_spec(tmp_path / "faulty.json", "e2e-faulty", cand, server), db, log1)
        _wait(
            "a successful canary measurement",
            lambda: (
                (st := _status(db, "e2e-faulty")) is not None
                and st["analysis"] is not None
                and st["analysis"]["checks"]["candidate-error-rate"]["successes"] >= 1
            ),
            60,
            log1,
        )
        fault_at = datetime.now(UTC)
        r = admin.put(
            "/v1/admin/faults", json={"candidate_error_rate": 0.6, "candidate_latency_ms": 0}
        )
        assert r.status_code == 200, r.text
        try:
            code = proc.wait(timeout=30)
        finally:
            admin.put(
                "/v1/admin/faults", json={"candidate_error_rate": 0.0, "candidate_latency_ms": 0}
            )
        assert code == 4, log1.read_text()
        with open_store(db) as s:
            events = s.rollout_events("e2e-faulty")
            routing = s.routing()
            history = s.routing_history()
        assert routing.candidate_model_id == cand
        assert routing.candidate_weight == 0.0
        aborted = next(e for e in events if e.kind == "aborted")
        assert aborted.reason == "failure_limit_exceeded"
        assert aborted.detail["check"] in ("candidate-error-rate", "errors-vs-stable")
        assert "failed 2 time(s) (failure_limit 1)" in aborted.detail["message"]
        failed = [e for e in events if e.kind == "measurement" and e.reason == "failed"]
        assert len(failed) >= 2
        limit_reached = failed[1].at
        zeroed = next(
            h for h in history if h["at"] >= fault_at and h["routing"]["candidate_weight"] == 0.0
        )
        # Weight 0 within one analysis interval after the failure limit is reached.
        assert (zeroed["at"] - limit_reached).total_seconds() <= INTERVAL_S
        assert (aborted.at - fault_at).total_seconds() <= INTERVAL_S * (1 + 1) + INTERVAL_S + 1.0
        # The service serves the stable model to the canary's learners again.
        salt = routing.salt
        canary = [i for i in ids if bucket_of(i, salt) < 1000][:10]
        time.sleep(0.8)
        with server.client() as c:
            roles = {c.get(f"/v1/learners/{i}/cohort").json()["model_role"] for i in canary}
        assert roles == {"stable"}

        # ---- 2. healthy, with the controller killed during the ramp -----------------------
        spec2 = _spec(tmp_path / "healthy.json", "e2e-healthy", cand, server)
        log2 = tmp_path / "controller-healthy.log"
        first = _controller(spec2, db, log2, "--metrics-port", "0")
        _wait(
            "the ramp analysis to be under way",
            lambda: (
                (s := _status(db, "e2e-healthy")) is not None
                and s["step_index"] == 3
                and s["analysis"] is not None
                and s["analysis"]["measurements"] >= 1
                and s
            ),
            60,
            log2,
        )
        port = re.search(
            r"controller metrics on http://127\.0\.0\.1:(\d+)/metrics", log2.read_text()
        )
        assert port is not None
        exported = httpx.get(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=5).text
        assert 'cohortlens_rollout_weight{rollout="e2e-healthy"} 0.3' in exported
        assert 'cohortlens_rollout_phase{phase="Progressing",rollout="e2e-healthy"} 1.0' in exported
        first.kill()
        first.wait(timeout=10)
        killed = _status(db, "e2e-healthy")
        assert killed is not None
        with open_store(db) as s:
            assert s.routing().candidate_weight == 0.3
        second = _controller(spec2, db, log2)
        code = second.wait(timeout=60)
        assert code == 0, log2.read_text()
        assert load.sent > 200
    with open_store(db) as s:
        final = s.rollout_status("e2e-healthy")
        events = s.rollout_events("e2e-healthy")
        routing = s.routing()
        history = s.routing_history()
    assert final is not None
    assert final[1]["phase"] == "Promoted"
    assert routing.stable_model_id == cand
    assert routing.candidate_model_id is None
    attached = [e for e in events if e.kind == "controller_attached"]
    assert len(attached) == 2
    resumed = attached[1].detail
    assert resumed["step"] == killed["step_index"] == 3
    assert resumed["weight"] == killed["weight"] == 0.3
    # Adopted the release the faulty rollout had left at weight 0 (same salt), and the
    # weight only rose from then on.
    adopted = next(e for e in events if e.kind == "release_started")
    assert adopted.reason == "release_adopted"
    weights = [
        h["routing"]["candidate_weight"]
        for h in history
        if h["at"] >= attached[0].at and h["routing"]["candidate_model_id"] == cand
    ]
    assert weights == [0.1, 0.3, 1.0]
    with server.client() as c:
        time.sleep(0.8)
        body = c.get(f"/v1/learners/{ids[0]}/cohort").json()
    assert body["model_role"] == "stable"
    assert body["model_version"] in (cand, str(cand))
