"""The controller process against real stores (DuckDB and PostgreSQL) and real HTTP scrapes.

The service is stood in for by a prometheus_client registry served on 127.0.0.1 (the
service's metric names and labels); the test plays the traffic between ticks, routed by the
store's routing row, and drives time with a manual clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from cohortlens.errors import InputError
from cohortlens.rollout.commands import Command
from cohortlens.rollout.providers import ServiceMetricsProvider, StoreOutcomes
from cohortlens.rollout.routers import StoreRouter
from cohortlens.rollout.routing import candidate_mask
from cohortlens.rollout.runner import (
    Controller,
    LeaseLostError,
    execute_actions,
    register,
    run_command,
)
from cohortlens.rollout.simulation import Fault, simulate
from cohortlens.rollout.spec import RolloutSpec, parse_spec
from cohortlens.rollout.state import Phase, SetWeight
from cohortlens.store.base import ConflictError

T0 = datetime(2030, 1, 1, tzinfo=UTC)
ROUTE = "/v1/learners/{learner_id}/cohort"


class ManualClock:
    def __init__(self) -> None:
        self.t = T0

    def now(self) -> datetime:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += timedelta(seconds=max(0.0, seconds))


class FakeService:
    """A registry with the service's metrics, served over HTTP on 127.0.0.1."""

    def __init__(self) -> None:
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
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.failures = Counter(
            "cohortlens_model_failures",
            "f",
            ["model_role", "model_version"],
            registry=self.registry,
        )
        self.server, self.thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        self.error_rate = 0.0

    def serve(self, store: Any, n: int, rng: np.random.Generator) -> None:
        r = store.routing()
        share = r.candidate_weight if r.candidate_model_id is not None else 0.0
        n_cand = round(n * share)
        for role, version, k in (
            ("candidate", str(r.candidate_model_id), n_cand),
            ("stable", str(r.stable_model_id), n - n_cand),
        ):
            if k == 0:
                continue
            self.requests.labels(ROUTE, "GET", "200", role, version).inc(k)
            if role == "candidate" and self.error_rate:
                self.failures.labels(role, version).inc(int(k * self.error_rate))
            for value in rng.uniform(0.001, 0.02, k):
                self.latency.labels(ROUTE, role, version).observe(float(value))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def _service() -> Iterator[FakeService]:
    svc = FakeService()
    yield svc
    svc.close()


@pytest.fixture
def service(_service: FakeService) -> FakeService:
    """One server for the module (model ids repeat across stores; deltas make that harmless)."""
    _service.error_rate = 0.0
    return _service


def _spec(cand: int, url: str, **extra: Any) -> RolloutSpec:
    return parse_spec(
        {
            "name": "ship-model",
            "candidate_model_id": cand,
            "metrics": {"kind": "service", "urls": [url]},
            "analysis": {"interval_s": 10, "error_retry_interval_s": 2},
            "lease_ttl_s": 30,
            "checks": [
                {
                    "type": "error_rate",
                    "name": "err",
                    "max_error_rate": 0.02,
                    "min_requests": 50,
                    "consecutive_success_limit": 2,
                },
                {
                    "type": "compare_latency",
                    "name": "lat",
                    "min_requests": 50,
                    "consecutive_success_limit": 2,
                },
            ],
            "steps": [{"set_weight": 10}, {"analysis": {}}, {"set_weight": 100}, {"analysis": {}}],
            **extra,
        }
    )


def _models(store: Any) -> tuple[int, int]:
    stable = store.save_model({"m": "stable"}, feature_run_id=None, activate=True)
    cand = store.save_model({"m": "candidate"}, feature_run_id=None, activate=False)
    return stable, cand


def _controller(store: Any, spec: RolloutSpec, clock: ManualClock, holder: str) -> Controller:
    return Controller(
        store,
        spec,
        router=StoreRouter(store, holder),
        metrics=ServiceMetricsProvider(spec.metrics.urls, str(spec.candidate_model_id)),
        guardrails=StoreOutcomes(store),
        clock=clock,
        holder=holder,
    )


def _drive(
    ctrl: Controller, store: Any, svc: FakeService, clock: ManualClock, *, max_ticks: int = 60
) -> Any:
    rng = np.random.default_rng(0)
    for _ in range(max_ticks):
        res = ctrl.tick()
        st = res.status
        if st is not None and st.phase in (Phase.PROMOTED, Phase.ABORTED) and res.converged:
            return st
        wake = res.next_wake_at or clock.now() + timedelta(seconds=10)
        delay = max(0.0, min((wake - clock.now()).total_seconds(), 10.0))
        clock.sleep(delay)
        svc.serve(store, int(200 * delay), rng)
    raise AssertionError("rollout did not finish")


def test_controller_promotes_over_http_scrapes(store: Any, service: FakeService) -> None:
    stable, cand = _models(store)
    spec = _spec(cand, service.url)
    clock = ManualClock()
    final = _drive(_controller(store, spec, clock, "c1"), store, service, clock)
    assert final.phase == Phase.PROMOTED
    r = store.routing()
    assert (r.stable_model_id, r.candidate_model_id, r.candidate_weight) == (cand, None, 0.0)
    history = [h for h in store.routing_history() if h["actor"] == "c1"]
    weights = [h["routing"]["candidate_weight"] for h in history]
    assert weights == [0.0, 0.1, 1.0, 0.0]  # release, 10 %, 100 %, promotion
    assert history[-1]["routing"]["stable_model_id"] == cand
    kinds = [e.kind for e in store.rollout_events(spec.name)]
    assert kinds[:4] == ["created", "controller_attached", "preflight_passed", "started"]
    assert kinds.count("analysis_succeeded") == 2
    assert kinds[-1] == "promoted"
    seqs = [e.seq for e in store.rollout_events(spec.name)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert stable != cand


def test_failing_candidate_is_aborted_and_weight_zeroed(store: Any, service: FakeService) -> None:
    _, cand = _models(store)
    spec = _spec(cand, service.url)
    service.error_rate = 0.2
    clock = ManualClock()
    final = _drive(_controller(store, spec, clock, "c1"), store, service, clock)
    assert final.phase == Phase.ABORTED
    assert final.reason == "failure_limit_exceeded"
    assert store.routing().candidate_weight == 0.0
    aborted = next(e for e in store.rollout_events(spec.name) if e.kind == "aborted")
    assert aborted.detail["check"] == "err"


def test_one_controller_acts_and_a_lost_lease_stops_it(store: Any, service: FakeService) -> None:
    _, cand = _models(store)
    spec = _spec(cand, service.url)
    clock = ManualClock()
    a = _controller(store, spec, clock, "a")
    b = _controller(store, spec, clock, "b")
    assert a.tick().lease == "held"
    res_b = b.tick()
    assert res_b.lease == "waiting"
    assert res_b.status is None
    # a stalls past its lease; b takes over; a notices and stops acting.
    clock.sleep(31)
    assert b.tick().lease == "held"
    revision = store.rollout_status(spec.name)[0]
    assert a.tick().lease == "lost"
    assert store.rollout_status(spec.name)[0] == revision  # a wrote nothing
    with pytest.raises(LeaseLostError, match="another controller took the lease"):
        a.run()
    attached = [
        e.detail["holder"]
        for e in store.rollout_events(spec.name)
        if e.kind == "controller_attached"
    ]
    assert attached == ["a", "b"]


def test_a_write_between_read_and_persist_makes_the_tick_start_over(
    store: Any, service: FakeService
) -> None:
    _, cand = _models(store)
    spec = _spec(cand, service.url)
    clock = ManualClock()
    ctrl = _controller(store, spec, clock, "c")
    ctrl.tick()
    ctrl.tick()  # release started, 10 %

    class Racy:
        """The store, with an operator's pause landing just before the controller writes."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.fired = False

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def record_rollout(self, *args: Any, **kwargs: Any) -> int:
            if not self.fired:
                self.fired = True
                run_command(
                    self.inner,
                    spec.name,
                    Command.PAUSE,
                    router_factory=lambda s: StoreRouter(self.inner, "op"),
                    now=clock.now(),
                )
            return int(self.inner.record_rollout(*args, **kwargs))

    ctrl.store = Racy(store)
    clock.sleep(10)
    res = ctrl.tick()
    assert res.conflict
    assert not res.recorded
    res = ctrl.tick()
    assert res.status is not None
    assert res.status.phase == Phase.PAUSED
    assert res.status.hold is not None
    assert res.status.hold.reason.value == "manual"


def test_abort_command_sets_weight_zero_at_once(store: Any, service: FakeService) -> None:
    _, cand = _models(store)
    spec = _spec(cand, service.url)
    clock = ManualClock()
    ctrl = _controller(store, spec, clock, "c")
    ctrl.tick()
    ctrl.tick()
    assert store.routing().candidate_weight == 0.1
    decision, problems = run_command(
        store,
        spec.name,
        Command.ABORT,
        router_factory=lambda s: StoreRouter(store, "op"),
        reason="looks wrong",
    )
    assert problems == []
    assert decision.status.phase == Phase.ABORTED
    assert store.routing().candidate_weight == 0.0
    events = store.rollout_events(spec.name)
    assert [e.kind for e in events[-2:]] == ["command", "aborted"]
    assert events[-2].detail == {"actor": "cli", "reason": "looks wrong"}
    assert events[-1].reason == "manual_abort"
    # The controller keeps it aborted (and exits), the weight stays 0.
    final = ctrl.run()
    assert final is not None
    assert final.phase == Phase.ABORTED
    assert store.routing().candidate_weight == 0.0
    with pytest.raises(InputError, match="nothing to promote"):
        run_command(
            store, spec.name, Command.PROMOTE, router_factory=lambda s: StoreRouter(store, "op")
        )


def test_actions_of_a_superseded_decision_are_not_applied(store: Any) -> None:
    _, cand = _models(store)
    spec = parse_spec({"name": "x", "candidate_model_id": cand})
    register(store, spec, T0)
    store.start_release(cand, actor="t")
    rev = store.rollout_status("x")[0]
    router = StoreRouter(store, "t")
    release = store.routing().release_id
    # A newer status revision exists: the older decision's weight is not applied.
    store.record_rollout("x", store.rollout_status("x")[1], [], expected_revision=rev, at=T0)
    assert execute_actions(store, "x", router, [SetWeight(0.5, release, "old")], rev) == []
    assert store.routing().candidate_weight == 0.0
    # With the current revision it is; for another release it is not.
    rev = store.rollout_status("x")[0]
    execute_actions(store, "x", router, [SetWeight(0.5, release + 1, "not ours")], rev)
    assert store.routing().candidate_weight == 0.0
    execute_actions(store, "x", router, [SetWeight(0.5, release, "ours")], rev)
    assert store.routing().candidate_weight == 0.5
    with pytest.raises(ConflictError):
        store.set_candidate_weight(0.6, actor="t", expected_revision=0)


def test_register_stores_any_new_spec_and_says_what_changed(
    store: Any, service: FakeService
) -> None:
    _, cand = _models(store)
    spec = _spec(cand, service.url)
    clock = ManualClock()
    ctrl = _controller(store, spec, clock, "c")
    ctrl.tick()
    ctrl.tick()
    tuned = _spec(cand, service.url, analysis={"interval_s": 20})
    _, st = register(store, tuned, clock.now())
    assert st.spec_hash == tuned.spec_hash()
    updated = store.rollout_events(spec.name)[-1]
    assert (updated.kind, updated.detail["changed"]) == ("spec_updated", ["analysis"])
    # New steps and a new candidate are stored too: the controller restarts or supersedes.
    new_steps = _spec(cand, service.url, steps=[{"set_weight": 50}, {"analysis": {}}])
    register(store, new_steps, clock.now())
    assert store.rollout_events(spec.name)[-1].detail["changed"] == ["analysis", "steps"]
    assert store.rollout_spec(spec.name)["steps"][0] == {"set_weight": 50.0}


def test_store_outcomes_split_learners_by_the_release(store: Any) -> None:
    _, cand = _models(store)
    store.start_release(cand, actor="t")
    salt = store.routing().salt
    n = 4000
    ids = [f"l{i}" for i in range(n)]
    rng = np.random.default_rng(1)
    completed = rng.random(n) < 0.5
    as_of = [T0 + timedelta(seconds=int(s)) for s in rng.integers(0, 7200, n)]
    table = pa.table(
        {
            "learner_id": ids,
            "completed": completed,
            "churned": ~completed,
            "revenue": rng.random(n),
            "as_of": pa.array(as_of, pa.timestamp("us", tz="UTC")),
        }
    )
    with store.ingest_session() as session:
        session.put_outcomes(table)
        session.commit({"test": True})
    since, until = T0 + timedelta(seconds=600), T0 + timedelta(seconds=3600)
    arms = StoreOutcomes(store).arms("completed", since=since, until=until, salt=salt, weight=0.2)
    mask = candidate_mask(ids, salt, 0.2)
    t = np.array([(a - T0).total_seconds() for a in as_of])
    window = (t >= 600) & (t < 3600)
    assert arms.candidate.n == int((window & mask).sum())
    assert arms.stable.n == int((window & ~mask).sum())
    assert arms.candidate.sum_y == float(completed[window & mask].sum())
    assert arms.stable.sum_y == float(completed[window & ~mask].sum())
    with pytest.raises(KeyError, match="no column 'nope'"):
        StoreOutcomes(store).arms("nope", since=since, until=until, salt=salt, weight=0.2)


def test_simulated_rollouts_on_each_store(store: Any) -> None:
    ok = simulate(seed=5, store=store)
    assert ok.phase == Phase.PROMOTED
    store.close()


def test_simulated_fault_on_postgres(pg_url: str) -> None:
    from cohortlens.store import open_store

    with open_store(pg_url) as s:
        r = simulate(faults=[Fault("error_rate", "ramp")], seed=6, store=s)
    assert r.phase == Phase.ABORTED
    assert r.rollback_s is not None
    assert r.bound_s is not None
    assert r.rollback_s <= r.bound_s


def test_healthy_steps_log_weight_set_and_never_drift(store: Any, service: FakeService) -> None:
    """Issue 17 bug: each healthy step's weight is issued by the step itself (``weight_set``);
    ``routing_reconciled``/``weight_drift`` stays reserved for crash recovery."""
    _, cand = _models(store)
    spec = _spec(cand, service.url)
    clock = ManualClock()
    final = _drive(_controller(store, spec, clock, "c1"), store, service, clock)
    assert final.phase == Phase.PROMOTED
    events = store.rollout_events(spec.name)
    assert [e for e in events if e.kind == "routing_reconciled"] == []
    assert [e.detail["weight"] for e in events if e.kind == "weight_set"] == [0.1, 1.0]


def test_the_lease_is_released_when_run_fails(store: Any, service: FakeService) -> None:
    """Issue 17 bug: an error after the lease was taken frees it at once (no lease_ttl_s wait)."""
    _, cand = _models(store)
    spec = _spec(cand, service.url)
    clock = ManualClock()

    class Failing:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def rollout_status(self, name: str) -> Any:
            raise InputError("stored status of ship-model: unreadable (test)")

    ctrl = _controller(Failing(store), spec, clock, "doomed")
    with pytest.raises(InputError, match="unreadable"):
        ctrl.run()
    # Free at the same instant: another holder gets it without waiting for expiry.
    assert store.acquire_lease("rollout/ship-model", "next", 30, clock.now())
