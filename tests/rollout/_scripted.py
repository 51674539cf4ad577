"""A rollout on the virtual clock with scripted providers, for Given/When/Then tests.

The controller, its store (DuckDB in memory), the store router, the verdicts and the
reconcile steps are the production code; the metrics provider, the guardrail source and the
replicas are scripted: a test says what they answer from a given virtual time on
(``world.metrics.candidate_errors(0.2, at=120)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cohortlens.experiments.stats import SufficientStats
from cohortlens.rollout.checks import GuardrailArms
from cohortlens.rollout.commands import Command
from cohortlens.rollout.controller import MetricsFetch
from cohortlens.rollout.exporter import ControllerMetrics
from cohortlens.rollout.measure import VersionCounts, Window
from cohortlens.rollout.readiness import ReplicaProbe
from cohortlens.rollout.routers import StoreRouter
from cohortlens.rollout.runner import Controller, TickResult, run_command
from cohortlens.rollout.simulation import VirtualClock
from cohortlens.rollout.spec import RolloutSpec, parse_spec
from cohortlens.rollout.state import TERMINAL, Phase, RolloutStatus
from cohortlens.store.duckdb import DuckDBStore

T0 = datetime(2030, 1, 1, tzinfo=UTC)
EDGES = (0.01, 0.05, 0.1, 0.25, 1.0, math.inf)
#: Latency bucket shares: fast (most under 50 ms) and slow (most over 250 ms).
FAST = (0.5, 0.45, 0.05, 0.0, 0.0, 0.0)
SLOW = (0.0, 0.0, 0.05, 0.15, 0.8, 0.0)


@dataclass
class _Mode:
    at_s: float
    values: dict[str, Any]


@dataclass
class ScriptedMetrics:
    """The service's metrics as a script: ``rps`` look-ups a second split by the routing.

    Each setter takes effect from virtual second ``at`` (default: now and on).
    """

    world: World
    rps: float = 100.0
    script: list[_Mode] = field(default_factory=list)
    fetches: int = 0
    name: str = "metrics (scripted)"
    candidate_version: str = ""

    def set(self, at: float | None = None, **values: Any) -> None:
        """From ``at`` on, answer with these values (others keep theirs)."""
        self.script.append(_Mode(self.world.elapsed() if at is None else at, values))
        self.script.sort(key=lambda m: m.at_s)

    def now(self, key: str, default: Any) -> Any:
        t = self.world.elapsed()
        value = default
        for m in self.script:
            if m.at_s <= t and key in m.values:
                value = m.values[key]
        return value

    def fetch(self, window_start: datetime, now: datetime, baseline: Any) -> MetricsFetch:
        """A window of scripted counts since the last fetch (or a baseline, or an error)."""
        self.fetches += 1
        down = self.now("down", None)
        if down:
            return MetricsFetch(None, {}, error=str(down))
        if baseline is None:
            return MetricsFetch(None, {"t": now.isoformat()})
        secs = (now - window_start).total_seconds()
        routing = self.world.store.routing()
        w = routing.candidate_weight if routing.candidate_model_id is not None else 0.0
        n_cand = self.now("candidate_requests", self.rps * secs * w)
        n_stable = self.rps * secs * (1.0 - w)
        cand_err = self.now("candidate_error_rate", 0.0) * n_cand
        stable_err = self.now("stable_error_rate", 0.0) * n_stable
        shape = SLOW if self.now("candidate_slow", False) else FAST
        return MetricsFetch(
            Window(
                candidate=VersionCounts(n_cand, cand_err, EDGES, tuple(n_cand * s for s in shape)),
                stable=VersionCounts(
                    n_stable, stable_err, EDGES, tuple(n_stable * s for s in FAST)
                ),
                window_s=secs,
            ),
            {"t": now.isoformat()},
        )

    def candidate_replicas(self) -> dict[str, bool | str]:
        """Two replicas; ``loaded`` says which serve the candidate."""
        loaded = self.now("loaded", ("replica-a", "replica-b"))
        return {r: r in loaded for r in ("replica-a", "replica-b")}


@dataclass
class ScriptedOutcomes:
    """Guardrail arms as a script: ``healthy`` (enough data, no harm), ``harm``, ``few``."""

    world: World
    name: str = "guardrail_source (scripted)"
    calls: list[dict[str, Any]] = field(default_factory=list)

    def arms(self, metric: str, **kw: Any) -> GuardrailArms:
        self.calls.append({"metric": metric, **kw})
        mode = self.world.metrics.now("outcomes", "healthy")
        if mode == "down":
            raise ConnectionError("outcomes store unreachable (scripted)")
        if mode == "few":  # a doubled churn on 30 vs 30 learners
            return GuardrailArms(
                SufficientStats(n=30, sum_y=3.0, sum_yy=3.0),
                SufficientStats(n=30, sum_y=6.0, sum_yy=6.0),
            )
        stable = SufficientStats(n=30_000, sum_y=18_000.0, sum_yy=18_000.0)
        rate = 0.45 if mode == "harm" else 0.603
        n = 3000
        return GuardrailArms(stable, SufficientStats(n=n, sum_y=rate * n, sum_yy=rate * n))


class World:
    """One rollout driven by the real controller on a virtual clock."""

    def __init__(self, spec: dict[str, Any], *, store: Any = None, holder: str = "ctrl") -> None:
        self.store = store if store is not None else DuckDBStore(":memory:")
        self.stable_id = self.store.save_model({"m": "stable"}, feature_run_id=None, activate=True)
        self.candidate_id = self.store.save_model(
            {"m": "candidate"}, feature_run_id=None, activate=False
        )
        self.clock = VirtualClock(T0)
        self.metrics = ScriptedMetrics(self)
        self.outcomes = ScriptedOutcomes(self)
        self.exporter = ControllerMetrics()
        self.spec = self.make_spec(spec)
        self.weights: list[tuple[float, float]] = []
        self.ticks: list[TickResult] = []
        self.ctrl = self.controller(holder)

    def make_spec(self, extra: dict[str, Any]) -> RolloutSpec:
        data = {
            "name": "ship",
            "candidate_model_id": self.candidate_id,
            "lease_ttl_s": 180,
            "abort_scale_down_delay_s": 0,
            "checks": [
                {
                    "type": "error_rate",
                    "name": "errors",
                    "max_error_rate": 0.05,
                    "min_requests": 20,
                }
            ],
            "steps": [{"set_weight": 10}, {"analysis": {}}, {"set_weight": 50}, {"analysis": {}}],
        }
        data.update(extra)
        return parse_spec(data)

    def controller(self, holder: str, spec: RolloutSpec | None = None) -> Controller:
        self.metrics.candidate_version = str(self.candidate_id)
        return Controller(
            self.store,
            spec or self.spec,
            router=StoreRouter(self.store, holder),
            metrics=self.metrics,
            guardrails=self.outcomes,
            readiness=ReplicaProbe(self.metrics),
            clock=self.clock,
            holder=holder,
            exporter=self.exporter,
        )

    # -- time ----------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return (self.clock.now() - T0).total_seconds()

    def tick(self) -> TickResult:
        res = self.ctrl.tick()
        self.ticks.append(res)
        r = self.store.routing()
        w = r.candidate_weight if r.candidate_model_id == self.status.candidate_model_id else 0.0
        if r.stable_model_id == self.status.candidate_model_id:
            w = 1.0
        if not self.weights or self.weights[-1][1] != w:
            self.weights.append((self.elapsed(), w))
        return res

    def run(
        self, until: Callable[[World], bool] | None = None, *, max_s: float = 4 * 3600
    ) -> World:
        """Tick and sleep as the controller asks until ``until`` holds (default: the rollout
        ended and the routing agrees), or ``max_s`` virtual seconds passed."""
        while self.elapsed() <= max_s:
            res = self.tick()
            if until is not None and until(self):
                return self
            ended = res.status is not None and res.status.phase in TERMINAL
            if until is None and ended and res.converged:
                return self
            now = self.clock.now()
            wake = res.next_wake_at or now + timedelta(seconds=self.ctrl.renew_every_s)
            self.clock.sleep(max(0.0, min((wake - now).total_seconds(), self.ctrl.renew_every_s)))
        raise AssertionError(f"not reached in {max_s} virtual s: {self.status.reason}")

    def run_for(self, seconds: float) -> World:
        end = self.elapsed() + seconds
        return self.run(lambda w: w.elapsed() >= end, max_s=end + 1)

    # -- what happened -------------------------------------------------------------------------
    @property
    def status(self) -> RolloutStatus:
        got = self.store.rollout_status("ship")
        assert got is not None
        return RolloutStatus.from_json_dict(got[1])

    def events(self, kind: str | None = None) -> list[Any]:
        return [e for e in self.store.rollout_events("ship") if kind is None or e.kind == kind]

    def at(self, event: Any) -> float:
        return (event.at - T0).total_seconds()

    def max_weight_before(self, t: float) -> float:
        return max([w for at, w in self.weights if at < t] or [0.0])

    def command(self, command: Command, reason: str | None = None) -> Any:
        decision, problems = run_command(
            self.store,
            "ship",
            command,
            router_factory=lambda s: StoreRouter(self.store, "operator"),
            now=self.clock.now(),
            reason=reason,
        )
        assert problems == []
        return decision

    def phase(self) -> Phase:
        return self.status.phase
