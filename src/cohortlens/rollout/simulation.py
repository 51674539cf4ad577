"""A whole rollout under a virtual clock, with injected faults, in seconds.

The controller, its store (a real one: DuckDB in memory by default), the store router and
the ``/metrics`` parser are the production code; only the service is simulated. The
:class:`SimulatedFleet` serves learners from a population of ids, routed with the release's
salt exactly as the service routes them, and exports the service's Prometheus metrics
(several replicas, scraped and summed); learners report outcomes (completion) over time.
Time only moves when the controller sleeps. A run is reproducible: the traffic, the outcomes
and the release salts (hence the split) all derive from the seed (:func:`release_salts`).

Faults (:data:`FAULTS`), each injected ``offset_s`` after a chosen analysis step starts
(``canary``, ``ramp``, ``full`` name the 1st, 2nd, 3rd analysis step), or from the very
start (``start``):

* ``error_rate``: requests routed to the candidate fail with probability 0.2;
* ``latency``: candidate latencies × 5 (true p99 ≈ 0.32 s against 0.25 s allowed);
* ``guardrail``: candidate-routed learners complete 25 points less often;
* ``metrics_outage``: every ``/metrics`` scrape fails from then on;
* ``controller_crash``: the controller dies right after persisting its next decision
  (before acting on it) and a new one starts ``downtime_s`` later;
* ``provider_down`` (``start`` only): the metrics provider is down before the rollout
  begins, so the pre-flight fails;
* ``unloadable_candidate`` (``start`` only): no replica can load the candidate, so it never
  passes the readiness gate.

The replicas load a candidate ``FleetParams.load_delay_s`` after the routing names it and
only then publish ``cohortlens_model_info`` for it (the readiness gate reads that); until
then its learners get the stable model. :data:`EXPECTED` documents the end state of each
fault at each step; in every run :attr:`SimulationResult.violations` lists any moment the
routing gave the candidate more than the persisted verdicts allowed.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from cohortlens.errors import InputError
from cohortlens.experiments.assignment import buckets
from cohortlens.rollout.checks import GuardrailArms
from cohortlens.rollout.providers import ProviderError, ServiceMetricsProvider
from cohortlens.rollout.readiness import ReplicaProbe
from cohortlens.rollout.routers import StoreRouter
from cohortlens.rollout.routing import candidate_threshold, guardrail_arms, override_mask
from cohortlens.rollout.runner import Controller
from cohortlens.rollout.spec import AnalysisStep, RolloutSpec, ServiceMetricsSpec
from cohortlens.rollout.state import TERMINAL, Decision, Phase
from cohortlens.store import SALT_BYTES

#: Fault kinds understood by :func:`simulate`.
FAULTS = (
    "error_rate",
    "latency",
    "guardrail",
    "metrics_outage",
    "controller_crash",
    "provider_down",
    "unloadable_candidate",
)
#: Faults present before the rollout starts (``KIND@start``).
START_FAULTS = frozenset({"provider_down", "unloadable_candidate"})
#: Names of the analysis steps of the default spec (1st, 2nd, 3rd analysis step).
STEP_NAMES = ("canary", "ramp", "full")
#: Documented end state of each fault injected during each step of the default spec.
#: A guardrail regression that starts at 100 % is not detectable: nobody is left on the
#: stable model to compare with, so that rollout is promoted (docs/RUNBOOK.md).
EXPECTED: dict[tuple[str, str], Phase] = {
    **{
        (k, s): Phase.ABORTED
        for k in ("error_rate", "latency", "metrics_outage")
        for s in STEP_NAMES
    },
    ("guardrail", "canary"): Phase.ABORTED,
    ("guardrail", "ramp"): Phase.ABORTED,
    ("guardrail", "full"): Phase.PROMOTED,
    **{("controller_crash", s): Phase.PROMOTED for s in STEP_NAMES},
    ("provider_down", "start"): Phase.ABORTED,
    ("unloadable_candidate", "start"): Phase.ABORTED,
}

LATENCY_EDGES_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_ROUTE = "/v1/learners/{learner_id}/cohort"
_START = datetime(2030, 1, 1, tzinfo=UTC)


@functools.lru_cache(maxsize=4)
def learner_ids(n: int) -> pa.Array:
    """``learner-000000`` ... ``learner-{n-1}`` (cached: tests simulate many rollouts)."""
    return pa.array([f"learner-{i:06d}" for i in range(n)], pa.string())


def release_salts(seed: int) -> Callable[[], str]:
    """The salts of a simulation's successive releases, derived from ``seed``.

    Real releases draw a random salt (the store's default); a simulation supplies these so
    that the same seed routes the same learners to the candidate, run after run.
    """
    counter = itertools.count(1)

    def salt() -> str:
        digest = hashlib.sha256(f"cohortlens-simulation/{seed}/{next(counter)}".encode())
        return digest.hexdigest()[: 2 * SALT_BYTES]

    return salt


class SimulatedCrashError(Exception):
    """Raised inside the controller to kill it at a chosen point."""


@dataclass(frozen=True)
class FleetParams:
    """The simulated service and its learners.

    Attributes:
        learners: population size (ids ``learner-000000``...).
        replicas: service processes, each scraped at its own ``/metrics`` URL.
        rps: cohort look-ups per second over the fleet.
        error_rate: baseline failure probability of any model.
        latency_median_s, latency_sigma: log-normal latency of a look-up.
        completion_rate: probability a learner's reported outcome is "completed".
        outcomes_per_s: learners reporting an outcome per second.
        load_delay_s: from the routing naming a candidate to a replica serving it.
    """

    learners: int = 100_000
    replicas: int = 2
    rps: float = 300.0
    error_rate: float = 0.0002
    latency_median_s: float = 0.02
    latency_sigma: float = 0.5
    completion_rate: float = 0.6
    outcomes_per_s: float = 400.0
    #: Seconds from the routing naming a candidate to a replica serving it.
    load_delay_s: float = 2.0


@dataclass(frozen=True)
class Fault:
    """One injected fault.

    Attributes:
        kind: one of :data:`FAULTS`.
        step: ``canary``/``ramp``/``full`` or the 0-based ordinal of the analysis step.
        offset_s: seconds after that analysis step starts.
        downtime_s: ``controller_crash`` only: how long no controller runs.
    """

    kind: str
    step: str | int
    offset_s: float = 30.0
    downtime_s: float = 120.0

    def __post_init__(self) -> None:
        if self.kind not in FAULTS:
            raise InputError(f"fault kind {self.kind!r}: expected one of {', '.join(FAULTS)}")
        if self.kind in START_FAULTS:
            if self.step != "start":
                raise InputError(
                    f"fault {self.kind}: present from the start; use {self.kind}@start"
                )
        elif isinstance(self.step, str) and self.step not in STEP_NAMES:
            raise InputError(
                f"fault step {self.step!r}: expected {', '.join(STEP_NAMES)} or an index"
            )

    @property
    def ordinal(self) -> int:
        """0-based index among the spec's analysis steps (-1: from the start)."""
        if self.step == "start":
            return -1
        return STEP_NAMES.index(self.step) if isinstance(self.step, str) else int(self.step)

    @classmethod
    def parse(cls, text: str) -> Fault:
        """``KIND@STEP[+OFFSET_S]``, e.g. ``error_rate@canary`` or ``latency@1+45``."""
        kind, sep, rest = text.partition("@")
        if not sep:
            raise InputError(f"--fault {text!r}: expected KIND@STEP, e.g. error_rate@canary")
        step_text, plus, offset = rest.partition("+")
        step: str | int = int(step_text) if step_text.isdigit() else step_text
        try:
            off = float(offset) if plus else 30.0
        except ValueError:
            raise InputError(f"--fault {text!r}: offset {offset!r} is not a number") from None
        return cls(kind.strip(), step, off)


# ---------------------------------------------------------------------------- the fleet


class VirtualClock:
    """Time that moves only when the controller sleeps; the fleet serves meanwhile."""

    def __init__(self, start: datetime, fleet: SimulatedFleet | None = None) -> None:
        self._now = start
        self.fleet = fleet

    def now(self) -> datetime:
        """The virtual time."""
        return self._now

    def sleep(self, seconds: float) -> None:
        """Advance the time (the fleet generates the traffic of the interval)."""
        end = self._now + timedelta(seconds=max(0.0, seconds))
        if self.fleet is not None:
            self.fleet.advance(self._now, end)
        self._now = end


class _Counters:
    """Cumulative counters of one (replica, role, version)."""

    def __init__(self) -> None:
        self.ok = 0.0
        self.failures = 0.0
        self.buckets = np.zeros(len(LATENCY_EDGES_S) + 1)
        self.sum_s = 0.0


class SimulatedFleet:
    """Learner traffic and outcomes under the store's routing, as the service would see them."""

    def __init__(self, store: Any, params: FleetParams, seed: int, start: datetime) -> None:
        self.store = store
        self.params = params
        self.rng = np.random.default_rng(seed)
        self.ids = learner_ids(params.learners)
        self.now = start
        self.faults: list[tuple[str, datetime]] = []
        self.counters: list[dict[tuple[str, str], _Counters]] = [{} for _ in range(params.replicas)]
        self.completed = np.full(params.learners, np.nan)
        self.as_of = np.full(params.learners, np.datetime64("NaT"), dtype="datetime64[us]")
        self._salt: str | None = None
        self._bucket = np.zeros(params.learners, dtype=np.int32)
        #: The candidate the routing names, and since when (replicas load it after a delay).
        self._named: tuple[int | None, datetime] = (None, start)
        self._overrides: tuple[str, ...] = ()
        self._override_mask = np.zeros(params.learners, dtype=bool)

    # -- faults ------------------------------------------------------------------------------
    def add_fault(self, kind: str, at: datetime) -> None:
        """Fault ``kind`` is active from ``at`` on."""
        self.faults.append((kind, at))

    def active(self, kind: str, at: datetime) -> bool:
        """Whether fault ``kind`` is active at ``at``."""
        return any(k == kind and at >= t for k, t in self.faults)

    # -- serving -----------------------------------------------------------------------------
    def advance(self, t0: datetime, t1: datetime) -> None:
        """Serve ``[t0, t1)``, split where a fault starts, under the routing polled at ``t0``."""
        cuts = sorted({t for _, t in self.faults if t0 < t < t1})
        edges = [t0, *cuts, t1]
        for a, b in itertools.pairwise(edges):
            self._serve(a, b)
        self.now = t1

    def loaded(self, at: datetime) -> int | None:
        """The candidate the replicas serve at ``at`` (``None``: none loaded yet)."""
        named, since = self._named
        if named is None or self.active("unloadable_candidate", at):
            return None
        return named if at >= since + timedelta(seconds=self.params.load_delay_s) else None

    def _routing(self, at: datetime) -> tuple[int | None, int | None, int]:
        r = self.store.routing()
        if r.salt != self._salt:
            self._salt = r.salt
            self._bucket = buckets(self.ids, r.salt)
        if r.candidate_model_id != self._named[0]:
            self._named = (r.candidate_model_id, at)
        if r.overrides != self._overrides:
            self._overrides = r.overrides
            self._override_mask = override_mask(self.ids, r.overrides)
        cand = self.loaded(at)
        threshold = candidate_threshold(r.candidate_weight) if cand is not None else 0
        return r.stable_model_id, cand, threshold

    def _serve(self, t0: datetime, t1: datetime) -> None:
        dt = (t1 - t0).total_seconds()
        if dt <= 0:
            return
        p = self.params
        rng = self.rng
        stable_id, cand_id, threshold = self._routing(t0)
        n = int(rng.poisson(p.rps * dt))
        who = rng.integers(0, p.learners, n)
        override = self._override_mask[who] & (cand_id is not None)
        on_cand = (self._bucket[who] < threshold) & ~override
        replica = rng.integers(0, p.replicas, n)
        for role, version, mask in (
            ("candidate", str(cand_id), on_cand),
            ("override", str(cand_id), override),
            ("stable", str(stable_id), ~on_cand & ~override),
        ):
            k = int(mask.sum())
            if k == 0:
                continue
            err = p.error_rate
            factor = 1.0
            if role in ("candidate", "override"):
                if self.active("error_rate", t0):
                    err = 0.2
                if self.active("latency", t0):
                    factor = 5.0
            failed = rng.random(k) < err
            lat = rng.lognormal(math.log(p.latency_median_s * factor), p.latency_sigma, k)
            bins = np.searchsorted(np.asarray(LATENCY_EDGES_S), lat, side="left")
            reps = replica[mask]
            for r in range(p.replicas):
                sel = reps == r
                c = self.counters[r].setdefault((role, version), _Counters())
                c.ok += float(sel.sum())
                c.failures += float(failed[sel].sum())
                c.buckets += np.bincount(bins[sel], minlength=len(LATENCY_EDGES_S) + 1)
                c.sum_s += float(lat[sel].sum())
        # Outcomes: learners report completion; candidate-routed ones may regress.
        m = int(rng.poisson(p.outcomes_per_s * dt))
        rep = rng.integers(0, p.learners, m)
        prob = np.full(m, p.completion_rate)
        if self.active("guardrail", t0):
            prob[self._bucket[rep] < threshold] -= 0.25
        self.completed[rep] = (rng.random(m) < prob).astype(np.float64)
        start = np.datetime64(t0.replace(tzinfo=None), "us")
        offsets = (rng.random(m) * dt * 1e6).astype("int64").astype("timedelta64[us]")
        self.as_of[rep] = start + offsets

    # -- what the service exports ------------------------------------------------------------
    def metrics_text(self, replica: int) -> str:
        """Replica ``replica``'s ``/metrics`` text (fails during a metrics outage)."""
        if self.active("metrics_outage", self.now) or self.active("provider_down", self.now):
            raise ProviderError("ConnectError: [Errno 111] Connection refused (simulated outage)")
        self._routing(self.now)  # the replica has polled the routing by now
        registry = CollectorRegistry(auto_describe=False)
        info = {"stable": self.store.routing().stable_model_id, "candidate": self.loaded(self.now)}
        registry.register(_FleetCollector(self.counters[replica], info))
        return generate_latest(registry).decode()

    def urls(self) -> tuple[str, ...]:
        """One pseudo URL per replica."""
        return tuple(f"sim://replica-{r}/metrics" for r in range(self.params.replicas))

    def transport(self, url: str) -> str:
        """:class:`ServiceMetricsProvider` transport over :meth:`metrics_text`."""
        return self.metrics_text(int(url.split("replica-")[1].split("/")[0]))


class _FleetCollector(Collector):
    def __init__(
        self, counters: dict[tuple[str, str], _Counters], info: dict[str, int | None]
    ) -> None:
        self.counters = counters
        self.info = info

    def collect(self) -> Any:
        req = CounterMetricFamily(
            "cohortlens_http_requests",
            "HTTP requests",
            labels=["route", "method", "status", "model_role", "model_version"],
        )
        fail = CounterMetricFamily(
            "cohortlens_model_failures", "Model failures", labels=["model_role", "model_version"]
        )
        hist = HistogramMetricFamily(
            "cohortlens_http_request_duration_seconds",
            "Latency",
            labels=["route", "model_role", "model_version"],
        )
        req.add_metric(["/healthz", "GET", "200", "none", "none"], 17.0)
        for (role, version), c in sorted(self.counters.items()):
            req.add_metric([_ROUTE, "GET", "200", role, version], c.ok)
            fail.add_metric([role, version], c.failures)
            cum = np.cumsum(c.buckets)
            pairs = [(repr(e), float(n)) for e, n in zip(LATENCY_EDGES_S, cum[:-1], strict=True)]
            hist.add_metric([_ROUTE, role, version], [*pairs, ("+Inf", float(cum[-1]))], c.sum_s)
        models = GaugeMetricFamily(
            "cohortlens_model_info", "Models served", labels=["model_role", "model_version"]
        )
        for role, model in self.info.items():
            if model is not None:
                models.add_metric([role, str(model)], 1.0)
        yield req
        yield fail
        yield hist
        yield models


class SimulatedOutcomes:
    """Guardrail arms from the fleet's learner outcomes."""

    def __init__(self, fleet: SimulatedFleet) -> None:
        self.fleet = fleet

    name = "guardrail_source (simulated outcomes)"

    def arms(
        self,
        metric: str,
        *,
        since: datetime,
        until: datetime,
        salt: str,
        weight: float,
        overrides: Sequence[str] = (),
    ) -> GuardrailArms:
        """Outcomes reported in ``[since, until)``."""
        if metric != "completed":
            raise KeyError(f"the simulated fleet reports 'completed' only, not {metric!r}")
        f = self.fleet
        return guardrail_arms(
            f.ids,
            f.completed,
            f.as_of,
            since=since,
            until=until,
            salt=salt,
            weight=weight,
            overrides=overrides,
        )


# ---------------------------------------------------------------------------- the run


@dataclass
class SimulationResult:
    """What happened in one simulated rollout (times in seconds from the start).

    Attributes:
        phase: the final phase; ``reason`` its machine-readable reason.
        duration_s: virtual time the run took.
        events: the history (``at_s``, ``kind``, ``reason``, ``detail``).
        weights: the routing weight whenever it changed (``at_s``, weight).
        faults: ``(kind, step, at_s)`` of every injected fault.
        aborted_at_s: when the abort was persisted and acted on.
        rollback_s: ``aborted_at_s`` minus the first fault's time.
        bound_s: the documented bound for that step (``RolloutSpec.rollback_bound_s``).
        brief_bound_s: ``interval × (failure_limit + 1) + interval``.
        crashes: per crash: time, step and weights before, and after the restart.
        ticks: controller ticks.
        max_weight: the largest candidate weight the fleet served.
        violations: ``(at_s, served, allowed)`` whenever the routing gave the candidate more
            than the persisted status allowed (0 before the candidate was ready or after
            an abort); empty in a correct run.
        served: look-ups the fleet served per ``model_role`` label (``stable``,
            ``candidate``, ``override``).
    """

    phase: Phase
    reason: str
    duration_s: float
    status: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    weights: list[tuple[float, float]] = field(default_factory=list)
    faults: list[tuple[str, str | int, float]] = field(default_factory=list)
    aborted_at_s: float | None = None
    rollback_s: float | None = None
    bound_s: float | None = None
    brief_bound_s: float | None = None
    crashes: list[dict[str, Any]] = field(default_factory=list)
    ticks: int = 0
    max_weight: float = 0.0
    violations: list[tuple[float, float, float]] = field(default_factory=list)
    served: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (``rollout simulate --json``)."""
        return {
            "phase": self.phase.value,
            "reason": self.reason,
            "duration_s": self.duration_s,
            "faults": [list(f) for f in self.faults],
            "aborted_at_s": self.aborted_at_s,
            "rollback_s": self.rollback_s,
            "bound_s": self.bound_s,
            "brief_bound_s": self.brief_bound_s,
            "crashes": self.crashes,
            "weights": [list(w) for w in self.weights],
            "max_weight": self.max_weight,
            "violations": [list(v) for v in self.violations],
            "served": self.served,
            "ticks": self.ticks,
            "events": self.events,
            "status": self.status,
        }


def simulation_spec(spec: RolloutSpec | None = None) -> RolloutSpec:
    """The spec simulations run by default: the default steps and checks (60 s interval).

    The lease lives 180 s (renewed every 60 s) so that the controller ticks about once per
    interval; a crashed controller's successor waits for it to expire.
    """
    if spec is not None:
        return spec
    return RolloutSpec(name="simulated", candidate_model_id=2, lease_ttl_s=180.0)


def simulate(
    spec: RolloutSpec | None = None,
    faults: Sequence[Fault] = (),
    *,
    seed: int = 0,
    params: FleetParams | None = None,
    store: Any = None,
    max_virtual_s: float = 6 * 3600.0,
) -> SimulationResult:
    """Run one rollout to its end under a virtual clock.

    Args:
        spec: the rollout (default :func:`simulation_spec`); its ``candidate_model_id``,
            router and metrics are replaced by the simulation's.
        faults: injected faults.
        seed: randomness of the traffic, the outcomes and the release salts: the same seed
            (and arguments) gives the same result.
        params: the simulated fleet.
        store: a store implementing the rollout contract (default: DuckDB in memory).
        max_virtual_s: give up after this much virtual time.
    """
    from cohortlens.store.duckdb import DuckDBStore

    params = params or FleetParams()
    own_store = store is None
    store = store if store is not None else DuckDBStore(":memory:")
    try:
        return _run(simulation_spec(spec), list(faults), seed, params, store, max_virtual_s)
    finally:
        if own_store:
            store.close()


def _run(
    spec: RolloutSpec,
    faults: list[Fault],
    seed: int,
    params: FleetParams,
    store: Any,
    max_virtual_s: float,
) -> SimulationResult:
    store.save_model({"simulated": "stable"}, feature_run_id=None, activate=True)
    cand_id = store.save_model({"simulated": "candidate"}, feature_run_id=None, activate=False)
    fleet = SimulatedFleet(store, params, seed, _START)
    spec = RolloutSpec.model_validate(
        spec.to_json_dict()
        | {
            "candidate_model_id": cand_id,
            "router": {"kind": "store"},
            "metrics": ServiceMetricsSpec(urls=fleet.urls()).model_dump(mode="json"),
        }
    )
    clock = VirtualClock(_START, fleet)
    analysis_steps = [i for i, s in enumerate(spec.steps) if isinstance(s, AnalysisStep)]
    crash_armed: dict[str, Any] = {"at": None}
    salts = release_salts(seed)  # shared: a restarted controller takes the next salt

    def after_persist(decision: Decision) -> None:
        at = crash_armed["at"]
        if at is not None and clock.now() >= at:
            crash_armed["at"] = None
            raise SimulatedCrashError()

    def controller(n: int) -> Controller:
        holder = f"sim-controller-{n}"
        metrics = ServiceMetricsProvider(fleet.urls(), str(cand_id), transport=fleet.transport)
        return Controller(
            store,
            spec,
            router=StoreRouter(store, holder, salts=salts),
            metrics=metrics,
            guardrails=SimulatedOutcomes(fleet),
            readiness=ReplicaProbe(metrics),
            clock=clock,
            holder=holder,
            after_persist=after_persist,
        )

    ctrl = controller(0)
    result = SimulationResult(Phase.PENDING, "", 0.0, {})
    pending = [f for f in faults if f.step != "start"]
    crash_pending: Fault | None = None
    fault_times: list[float] = []
    last_weight: float | None = None

    def rel(at: datetime) -> float:
        return (at - _START).total_seconds()

    for f in faults:
        if f.step == "start":
            fleet.add_fault(f.kind, _START)
            result.faults.append((f.kind, f.step, 0.0))
            fault_times.append(0.0)
            if result.bound_s is None:
                result.bound_s = result.brief_bound_s = spec.start_bound_s()

    while True:
        try:
            res = ctrl.tick()
        except SimulatedCrashError:
            # Killed after persisting, before acting: the lease is not released.
            assert crash_pending is not None
            _, st = _status(store, spec.name)
            before = {
                "at_s": rel(clock.now()),
                "step": st["step_index"],
                "weight": st["weight"],
                "routing_weight": store.routing().candidate_weight,
            }
            clock.sleep(crash_pending.downtime_s)
            ctrl = controller(len(result.crashes) + 1)
            res = ctrl.tick()
            while res.lease == "waiting":
                clock.sleep(
                    (res.next_wake_at - clock.now()).total_seconds() if res.next_wake_at else 1.0
                )
                res = ctrl.tick()
            attached = [
                e
                for e in store.rollout_events(spec.name)
                if e.kind == "controller_attached" and e.detail.get("holder") == ctrl.holder
            ]
            before |= {
                "restarted_at_s": rel(attached[0].at) if attached else None,
                "resumed_step": attached[0].detail["step"] if attached else None,
                "resumed_weight": attached[0].detail["weight"] if attached else None,
                "resumed_phase": attached[0].detail["phase"] if attached else None,
            }
            result.crashes.append(before)
            crash_pending = None
        result.ticks += 1
        routing = store.routing()
        w = (
            routing.candidate_weight
            if routing.candidate_model_id is not None
            else (1.0 if routing.stable_model_id == cand_id else 0.0)
        )
        if w != last_weight:
            result.weights.append((rel(clock.now()), w))
            last_weight = w
        status = res.status
        result.max_weight = max(result.max_weight, w)
        if status is not None:
            allowed = _allowed_weight(status)
            if w > allowed + 1e-9:
                result.violations.append((rel(clock.now()), w, allowed))
        if status is not None and status.analysis is not None:
            for f in list(pending):
                idx = analysis_steps[f.ordinal] if f.ordinal < len(analysis_steps) else None
                if idx is not None and status.analysis.step_index == idx:
                    at = status.analysis.started_at + timedelta(seconds=f.offset_s)
                    pending.remove(f)
                    result.faults.append((f.kind, f.step, rel(at)))
                    fault_times.append(rel(at))
                    if f.kind == "controller_crash":
                        crash_pending = f
                        crash_armed["at"] = at
                    else:
                        fleet.add_fault(f.kind, at)
                    if result.bound_s is None and f.kind != "controller_crash":
                        result.bound_s = spec.rollback_bound_s(idx)
                        result.brief_bound_s = _brief_bound(spec, idx)
        done = status is not None and status.phase in TERMINAL and res.converged
        held = (
            status is not None and status.hold is not None and status.hold.reason.value != "manual"
        )
        if done or held or rel(clock.now()) > max_virtual_s:
            break
        now = clock.now()
        wake = res.next_wake_at or now + timedelta(seconds=ctrl.renew_every_s)
        delay = min((wake - now).total_seconds(), ctrl.renew_every_s)
        clock.sleep(max(delay, 0.0))

    _, final = _status(store, spec.name)
    for replica in fleet.counters:
        for (role, _version), c in replica.items():
            result.served[role] = result.served.get(role, 0.0) + c.ok
    result.served = dict(sorted(result.served.items()))
    result.phase = Phase(final["phase"])
    result.reason = final["reason"]
    result.status = final
    result.duration_s = rel(clock.now())
    result.events = [
        {"at_s": rel(e.at), "kind": e.kind, "reason": e.reason, "detail": e.detail}
        for e in store.rollout_events(spec.name)
    ]
    aborted = [e for e in result.events if e["kind"] == "aborted"]
    if aborted:
        result.aborted_at_s = aborted[0]["at_s"]
        if fault_times:
            result.rollback_s = result.aborted_at_s - min(fault_times)
    return result


def _allowed_weight(status: Any) -> float:
    """What the persisted verdicts allow the candidate: nothing before it is ready or after
    an abort, the status's weight in flight, everything once promoted."""
    if status.phase == Phase.PROMOTED:
        return 1.0
    if status.phase == Phase.ABORTED or status.ready_at is None:
        return 0.0
    return float(status.weight)


def _brief_bound(spec: RolloutSpec, index: int) -> float:
    interval = spec.step_interval_s(index)
    limits = [c.failure_limit for c in spec.step_checks(index) if not c.dry_run]
    return interval * (max(limits, default=0) + 1) + interval


def _status(store: Any, name: str) -> tuple[int, dict[str, Any]]:
    got = store.rollout_status(name)
    assert got is not None
    return got[0], got[1]


__all__ = [
    "EXPECTED",
    "FAULTS",
    "START_FAULTS",
    "STEP_NAMES",
    "Fault",
    "FleetParams",
    "SimulatedFleet",
    "SimulatedOutcomes",
    "SimulationResult",
    "VirtualClock",
    "release_salts",
    "simulate",
]
