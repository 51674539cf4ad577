"""Two ``cohortlens rollout run`` processes on one PostgreSQL store (Argo Rollouts' leader
election): the follower takes over within ``lease_ttl_s`` + one interval after the leader
is SIGKILLed, and after a controller's error exit the lease is free at once.

The service is stood in for by a prometheus_client registry on 127.0.0.1 with the service's
metric names (traffic routed by the store's routing row, the candidate reported loaded).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from cohortlens.store import open_store

INTERVAL_S = 2.0
LEASE_TTL_S = 3.0
ROUTE = "/v1/learners/{learner_id}/cohort"


class Service:
    """The service's metrics, fed by a thread that routes look-ups by the store's routing."""

    def __init__(self, db: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cohortlens_http_requests",
            "r",
            ["route", "method", "status", "model_role", "model_version"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cohortlens_http_request_duration_seconds",
            "l",
            ["route", "model_role", "model_version"],
            buckets=(0.005, 0.01, 0.05, 0.1),
            registry=self.registry,
        )
        Counter(
            "cohortlens_model_failures",
            "f",
            ["model_role", "model_version"],
            registry=self.registry,
        )
        self.info = Gauge(
            "cohortlens_model_info", "m", ["model_role", "model_version"], registry=self.registry
        )
        self.server, _ = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        self.store = open_store(db)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            r = self.store.routing()
            self.info.clear()
            if r.stable_model_id is not None:
                self.info.labels("stable", str(r.stable_model_id)).set(1)
            if r.candidate_model_id is not None:
                self.info.labels("candidate", str(r.candidate_model_id)).set(1)
            n = 40
            k = round(n * r.candidate_weight) if r.candidate_model_id is not None else 0
            for role, version, count in (
                ("candidate", str(r.candidate_model_id), k),
                ("stable", str(r.stable_model_id), n - k),
            ):
                if count:
                    self.requests.labels(ROUTE, "GET", "200", role, version).inc(count)
                    for _ in range(count):
                        self.latency.labels(ROUTE, role, version).observe(0.003)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.store.close()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def world(pg_url: str, tmp_path: Path) -> Iterator[tuple[str, Service, Path]]:
    with open_store(pg_url) as s:
        s.save_model({"m": "stable"}, feature_run_id=None, activate=True)
        cand = s.save_model({"m": "candidate"}, feature_run_id=None, activate=False)
    svc = Service(pg_url)
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "name": "ha",
                "candidate_model_id": cand,
                "metrics": {"kind": "service", "urls": [svc.url]},
                "analysis": {"interval_s": INTERVAL_S, "error_retry_interval_s": 0.5},
                "lease_ttl_s": LEASE_TTL_S,
                "readiness": {"store": False, "interval_s": 0.5},  # test artifacts
                "checks": [
                    {
                        "type": "error_rate",
                        "name": "errors",
                        "max_error_rate": 0.05,
                        "min_requests": 10,
                        "consecutive_success_limit": 2,
                    }
                ],
                "steps": [
                    {"set_weight": 10},
                    {"analysis": {}},
                    {"set_weight": 50},
                    {"pause": {"duration_s": 600}},
                ],
            }
        )
    )
    try:
        yield pg_url, svc, spec
    finally:
        svc.close()


def _run(spec: Path, db: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORTLENS_")}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cohortlens", "rollout", "run", str(spec), "--db", db, *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _wait(what: str, pred: Any, timeout_s: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}; logs:\n{log.read_text(errors='replace')[-3000:]}")


def _holder(db: str) -> str | None:
    with open_store(db) as s:
        rows = s._q("SELECT holder FROM leases WHERE name = 'rollout/ha'")
    return str(rows[0][0]) if rows else None


def test_follower_takes_over_a_killed_leader_and_an_error_exit_frees_the_lease(
    world: tuple[str, Service, Path], tmp_path: Path
) -> None:
    db, _svc, spec = world
    log = tmp_path / "controllers.log"
    # Given a leader in the middle of the rollout and a follower waiting for the lease
    leader = _run(spec, db, log)
    poll = open_store(db)
    try:

        def status() -> dict[str, Any] | None:
            got = poll.rollout_status("ha")
            return None if got is None else got[1]

        _wait(
            "the leader's pause at 50 %", lambda: (s := status()) and s["step_index"] == 3, 90, log
        )
        leader_holder = _holder(db)
        assert leader_holder is not None
        follower_log = tmp_path / "follower.log"
        follower = _run(spec, db, follower_log, "--metrics-port", "0")
        port = _wait(
            "the follower's metrics port",
            lambda: re.search(r"metrics on http://127\.0\.0\.1:(\d+)/", follower_log.read_text()),
            30,
            follower_log,
        ).group(1)
        _wait(
            "the follower to poll for the lease",
            lambda: (
                'cohortlens_rollout_lease_held{rollout="ha"} 0.0'
                in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            ),
            30,
            follower_log,
        )
        assert _holder(db) == leader_holder
        # When the leader is SIGKILLed
        leader.kill()
        leader.wait(timeout=10)
        killed_at = datetime.now(UTC)
        # Then the follower takes over within lease_ttl_s + one interval
        attached = _wait(
            "the follower to attach",
            lambda: [
                e
                for e in poll.rollout_events("ha")
                if e.kind == "controller_attached" and e.detail["holder"] != leader_holder
            ],
            30,
            log,
        )[0]
        takeover_s = (attached.at - killed_at).total_seconds()
        print(f"takeover {takeover_s:.2f} s (bound {LEASE_TTL_S + INTERVAL_S:g} s)")
        assert takeover_s <= LEASE_TTL_S + INTERVAL_S, takeover_s
        # resuming at the leader's step and weight
        assert (attached.detail["step"], attached.detail["weight"]) == (3, 0.5)
        follower_holder = _holder(db)
        assert follower_holder not in (None, leader_holder)

        # Given the follower now leading, when it meets an error (the stored spec is one this
        # version refuses, e.g. written by a newer cohortlens) and exits
        for _attempt in range(20):
            rev, st = poll.rollout_status("ha")
            bad = poll.rollout_spec("ha") | {"steps": []}
            poll.put_rollout_spec("ha", bad)
            try:
                poll.record_rollout(
                    "ha",
                    st | {"spec_hash": "written-by-another-version"},
                    [],
                    expected_revision=rev,
                    at=datetime.now(UTC),
                )
                break
            except Exception:
                time.sleep(0.05)
        code = follower.wait(timeout=30)
        # Then it exits with an error, and the lease is free at once
        assert code == 2, follower_log.read_text()
        assert "steps: at least one step is needed" in follower_log.read_text()
        assert _holder(db) is None
        # and a `run --once` right after does act (no "another controller holds the lease")
        once = subprocess.run(
            [
                sys.executable,
                "-m",
                "cohortlens",
                "rollout",
                "run",
                str(spec),
                "--db",
                db,
                "--once",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("COHORTLENS_")},
        )
        assert once.returncode == 0, once.stderr
        assert "held_by_another" not in once.stdout
        assert json.loads(once.stdout)["step_index"] == 3
    finally:
        for p in (leader, locals().get("follower")):
            if p is not None and p.poll() is None:
                p.kill()
        poll.close()
