"""The controller process: lease, observe, reconcile, persist, then act.

Each tick:

1. take or renew the rollout's lease in the store (a controller that finds it held by
   another stops acting: :class:`LeaseLostError`);
2. read the persisted status and the routing;
3. fetch what :func:`~cohortlens.rollout.controller.plan` says is due (metrics window,
   guardrail arms);
4. :func:`~cohortlens.rollout.controller.reconcile` (pure);
5. ``store.record_rollout`` — status and events in one transaction, with the revision read
   in step 2 (a concurrent writer makes this tick start over);
6. apply the routing actions, each only while the status revision is still the one just
   written and the routing still belongs to this release.

A kill at any point leaves a status that explains itself: a decision persisted but not acted
on is re-applied by the next tick's convergence (the routing is compared with the status).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from cohortlens.errors import CohortlensError, InputError, StoreError
from cohortlens.rollout.commands import Command, apply_command
from cohortlens.rollout.controller import (
    MetricsFetch,
    Observation,
    Readiness,
    initial_status,
    plan,
    reconcile,
)
from cohortlens.rollout.exporter import ControllerMetrics
from cohortlens.rollout.notify import WebhookNotifier
from cohortlens.rollout.providers import (
    GuardrailSource,
    MetricsProvider,
    PrometheusProvider,
    ServiceMetricsProvider,
    StoreOutcomes,
)
from cohortlens.rollout.readiness import (
    AllProbes,
    ReadinessProbe,
    ReplicaProbe,
    StoreArtifactProbe,
)
from cohortlens.rollout.routers import AdminApiRouter, RouterError, StoreRouter, TrafficRouter
from cohortlens.rollout.spec import (
    SERVICE_METRIC_TYPES,
    AdminApiRouterSpec,
    PrometheusMetricsSpec,
    RolloutSpec,
    parse_spec,
)
from cohortlens.rollout.state import (
    TERMINAL,
    Action,
    Decision,
    Event,
    Phase,
    Promote,
    RolloutStatus,
    ScaleDown,
    SetOverrides,
    SetWeight,
    StartRelease,
)
from cohortlens.store.base import ConflictError, Routing

log = logging.getLogger("cohortlens.rollout")

_WEIGHT_EPS = 1e-9
#: Poll interval while waiting for a lease another controller holds (capped by ttl/3).
LEASE_WAIT_S = 1.0
#: Ticks ``run(once=True)`` takes at most before it returns.
_ONCE_MAX_TICKS = 20
#: Store errors in a row tolerated by ``run`` before it gives up.
MAX_STORE_ERRORS = 5


class Clock(Protocol):
    """Time source of the controller (real, or virtual in simulations)."""

    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a virtual clock advances instead)."""


class SystemClock:
    """Wall-clock time; ``sleep`` wakes early when ``stop`` is set."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()

    def now(self) -> datetime:
        """``datetime.now(UTC)``."""
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        """Wait, interruptibly."""
        self.stop.wait(max(0.0, seconds))


class LeaseLostError(CohortlensError):
    """Another controller took over this rollout; this one stopped acting."""

    exit_code = 1


def lease_name(rollout: str) -> str:
    """The store lease guarding one rollout."""
    return f"rollout/{rollout}"


def new_holder() -> str:
    """A holder id unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True)
class TickResult:
    """What one tick did.

    Attributes:
        status: the status after the tick.
        lease: ``held``; ``waiting`` (another controller holds it; nothing done);
            ``lost`` (this controller held it and lost it; stop).
        recorded: a decision was persisted.
        converged: the routing was observed and nothing was left to do.
        next_wake_at: when to tick again (``None``: only to renew the lease).
        conflict: another writer changed the status meanwhile; tick again at once.
    """

    status: RolloutStatus | None
    lease: Literal["held", "waiting", "lost"]
    recorded: bool = False
    converged: bool = False
    next_wake_at: datetime | None = None
    conflict: bool = False


# ---------------------------------------------------------------------------- wiring


def build_router(spec: RolloutSpec, store: Any, actor: str) -> TrafficRouter:
    """The spec's traffic router."""
    if isinstance(spec.router, AdminApiRouterSpec):
        r = spec.router
        return AdminApiRouter.from_env(r.url, r.token_env, timeout_s=r.timeout_s)
    return StoreRouter(store, actor)


def build_metrics(spec: RolloutSpec) -> MetricsProvider:
    """The spec's metrics provider for this rollout's candidate."""
    version = str(spec.candidate_model_id)
    m = spec.metrics
    if isinstance(m, PrometheusMetricsSpec):
        return PrometheusProvider(
            m.url, version, selector=m.selector, routes=m.routes, timeout_s=m.timeout_s
        )
    return ServiceMetricsProvider(m.urls, version, routes=m.routes, timeout_s=m.timeout_s)


def build_guardrails(spec: RolloutSpec, store: Any) -> GuardrailSource:
    """The spec's guardrail source (``store_outcomes``: the controller's store or ``db``)."""
    db = spec.guardrail_source.db
    if db is None:
        return StoreOutcomes(store)
    from cohortlens.store import open_shared

    return StoreOutcomes(open_shared(db))


def build_readiness(spec: RolloutSpec, store: Any, metrics: MetricsProvider) -> ReadinessProbe:
    """The spec's readiness probes: the stored artifact (``router: store``) and every replica."""
    probes: list[ReadinessProbe] = []
    if spec.readiness.store and not isinstance(spec.router, AdminApiRouterSpec):
        probes.append(StoreArtifactProbe(store))
    if spec.readiness.replicas:
        probes.append(ReplicaProbe(metrics))
    return AllProbes(probes)


@dataclass
class Providers:
    """The I/O edges of one spec (rebuilt when the stored spec changes)."""

    router: TrafficRouter
    metrics: MetricsProvider
    guardrails: GuardrailSource
    readiness: ReadinessProbe
    notifier: WebhookNotifier | None = None


def build_providers(
    spec: RolloutSpec,
    store: Any,
    *,
    actor: str,
    on_notification: Callable[[str], None] | None = None,
) -> Providers:
    """Every edge the spec names (InputError for a missing token or webhook secret);
    ``on_notification`` hears each webhook delivery's outcome."""
    metrics = build_metrics(spec)
    return Providers(
        router=build_router(spec, store, actor),
        metrics=metrics,
        guardrails=build_guardrails(spec, store),
        readiness=build_readiness(spec, store, metrics),
        notifier=WebhookNotifier(spec.notifications.webhooks, on_result=on_notification),
    )


# ---------------------------------------------------------------------------- registration


def register(store: Any, spec: RolloutSpec, now: datetime) -> tuple[int, RolloutStatus]:
    """Store the spec (desired state) and create the status when new.

    The spec is the operator's: storing it needs no lease, so ``run`` with a changed spec
    takes effect within one tick of whichever controller holds the lease. A new
    ``candidate_model_id`` supersedes the release in flight (it is aborted and the new
    candidate starts at step 0); new steps restart the rollout at step 0; checks, limits
    and sources are tuned in place. The history records ``spec_updated`` with what changed.
    """
    data = spec.to_json_dict()
    for _attempt in range(5):
        stored = store.rollout_status(spec.name)
        if stored is None:
            store.put_rollout_spec(spec.name, data)
            status = initial_status(spec, now)
            try:
                rev = store.record_rollout(
                    spec.name,
                    status.to_json_dict(),
                    [
                        Event(
                            "created",
                            "spec_stored",
                            {"spec_hash": status.spec_hash, "candidate": spec.candidate_model_id},
                        ).as_tuple()
                    ],
                    expected_revision=None,
                    at=now,
                )
            except ConflictError:
                continue
            return rev, status
        rev, raw = stored
        status = RolloutStatus.from_json_dict(raw)
        if status.spec_hash == spec.spec_hash():
            return rev, status
        old = store.rollout_spec(spec.name) or {}
        changed = sorted(k for k in data if old.get(k) != data[k])
        store.put_rollout_spec(spec.name, data)
        new = status.model_copy(update={"spec_hash": spec.spec_hash(), "updated_at": now})
        try:
            rev = store.record_rollout(
                spec.name,
                new.to_json_dict(),
                [
                    Event(
                        "spec_updated",
                        "new_spec",
                        {"old": status.spec_hash, "new": new.spec_hash, "changed": changed},
                    ).as_tuple()
                ],
                expected_revision=rev,
                at=now,
            )
        except ConflictError:
            continue
        return rev, new
    raise StoreError(f"rollout {spec.name} kept changing while its spec was stored; try again")


def load_status(store: Any, name: str) -> tuple[int, RolloutStatus]:
    """The persisted status of rollout ``name``.

    Raises:
        InputError: no such rollout (the message lists the known ones).
    """
    got = store.rollout_status(name)
    if got is None:
        known = ", ".join(store.rollout_names()) or "none"
        raise InputError(f"no rollout named {name!r} in {store.url} (known: {known})")
    return got[0], RolloutStatus.from_json_dict(got[1])


def load_spec_of(store: Any, name: str) -> RolloutSpec:
    """The stored spec of rollout ``name``."""
    data = store.rollout_spec(name)
    if data is None:
        known = ", ".join(store.rollout_names()) or "none"
        raise InputError(f"no rollout named {name!r} in {store.url} (known: {known})")
    return parse_spec(data, source=f"stored spec of {name}")


# ---------------------------------------------------------------------------- acting


def execute_actions(
    store: Any, name: str, router: TrafficRouter, actions: Sequence[Action], revision: int
) -> list[str]:
    """Apply routing actions of the decision persisted at ``revision``; returns problems.

    An action is skipped when the status has moved past ``revision`` (a newer decision
    owns the routing now) or the routing no longer belongs to the action's release.
    Transient router failures are returned (the next tick converges); permanent ones
    (unknown model) raise.
    """
    problems: list[str] = []
    for action in actions:
        for _attempt in range(3):
            current = store.rollout_status(name)
            if current is None or current[0] != revision:
                log.info(
                    "%s: status moved past revision %d; not applying %s", name, revision, action
                )
                return problems
            try:
                routing = router.routing()
                _apply(router, routing, action)
                break
            except ConflictError:
                continue
            except (RouterError, OSError) as exc:
                problems.append(f"{action.kind}: {exc}")
                break
        else:
            problems.append(f"{action.kind}: the routing kept changing (3 conflicts)")
    return problems


def _apply(router: TrafficRouter, routing: Routing, action: Action) -> None:
    if isinstance(action, StartRelease):
        if routing.candidate_model_id != action.model_id:
            router.start_release(action.model_id, reason=action.reason)
        return
    if routing.release_id != action.release_id or routing.candidate_model_id is None:
        log.warning(
            "routing is on release %d, not %d: %s skipped",
            routing.release_id,
            action.release_id,
            action.kind,
        )
        return
    if isinstance(action, SetWeight):
        if abs(routing.candidate_weight - action.weight) > _WEIGHT_EPS:
            router.set_weight(
                action.weight, reason=action.reason, expected_revision=routing.revision
            )
    elif isinstance(action, Promote):
        router.promote(reason=action.reason, expected_revision=routing.revision)
    elif isinstance(action, SetOverrides):
        if tuple(sorted(routing.overrides)) != tuple(sorted(action.learner_ids)):
            router.set_overrides(
                action.learner_ids, reason=action.reason, expected_revision=routing.revision
            )
    elif isinstance(action, ScaleDown):
        router.clear_candidate(reason=action.reason, expected_revision=routing.revision)


def run_command(
    store: Any,
    name: str,
    command: Command,
    *,
    router_factory: Callable[[RolloutSpec], TrafficRouter],
    now: datetime | None = None,
    reason: str | None = None,
    actor: str = "cli",
) -> tuple[Decision, list[str]]:
    """An operator command: decide, persist (optimistic, retried on conflict), then act.

    Returns the decision and the routing problems met while acting (empty when applied).
    """
    spec = load_spec_of(store, name)
    for _attempt in range(5):
        at = now or datetime.now(UTC)
        rev, status = load_status(store, name)
        decision = apply_command(spec, status, command, at, reason=reason)
        events = [
            Event("command", command.value, {"actor": actor, "reason": reason}),
            *decision.events,
        ]
        try:
            new_rev = store.record_rollout(
                name,
                decision.status.to_json_dict(),
                [e.as_tuple() for e in events],
                expected_revision=rev,
                at=at,
                counters=decision.counters,
            )
        except ConflictError:
            continue
        break
    else:
        raise StoreError(f"rollout {name} kept changing; try the command again")
    problems: list[str] = []
    if decision.actions:
        problems = execute_actions(store, name, router_factory(spec), decision.actions, new_rev)
    return decision, problems


# ---------------------------------------------------------------------------- the controller


class Controller:
    """Drives one rollout; only the holder of the rollout's lease acts."""

    def __init__(
        self,
        store: Any,
        spec: RolloutSpec,
        *,
        router: TrafficRouter,
        metrics: MetricsProvider,
        guardrails: GuardrailSource,
        readiness: ReadinessProbe | None = None,
        clock: Clock | None = None,
        holder: str | None = None,
        exporter: ControllerMetrics | None = None,
        notifier: WebhookNotifier | None = None,
        on_events: Callable[[datetime, Sequence[Event]], None] | None = None,
        after_persist: Callable[[Decision], None] | None = None,
        rebuild: Callable[[RolloutSpec], Providers] | None = None,
    ) -> None:
        """``readiness`` defaults to no probe (ready at once); ``rebuild`` makes the edges
        of a spec another process stored (e.g. a superseding candidate); without it the
        metrics provider is only pointed at the new candidate."""
        self.store = store
        self.spec = spec
        self.router = router
        self.metrics = metrics
        self.guardrails = guardrails
        self.readiness: ReadinessProbe = readiness or AllProbes(())
        self.clock = clock or SystemClock()
        self.holder = holder or new_holder()
        self.exporter = exporter
        self.notifier = notifier
        self.on_events = on_events
        self.after_persist = after_persist
        self.rebuild = rebuild
        self.lease = lease_name(spec.name)
        self._had_lease = False
        self._attached = False
        self._registered = False
        self._counters: dict[str, int] | None = None
        self._phase: Phase | None = None  # the phase this controller last saw or wrote

    @property
    def renew_every_s(self) -> float:
        """The longest sleep between ticks (a third of the lease lifetime)."""
        return self.spec.lease_ttl_s / 3.0

    def tick(self) -> TickResult:
        """One reconcile (see the module docstring)."""
        now = self.clock.now()
        if not self._registered:
            # Desired state first, lease or not: a holder picks a new spec up next tick.
            register(self.store, self.spec, now)
            self._registered = True
        waiting = self._lease(now)
        if waiting is not None:
            return waiting
        rev, status = load_status(self.store, self.spec.name)
        if self.notifier is not None and self._phase not in (None, status.phase):
            # A phase change written by someone else (an operator's command): notify it too.
            self.notifier.notify(self._phase, status, [], now)
        self._phase = status.phase
        if status.spec_hash != self.spec.spec_hash():
            self._use(load_spec_of(self.store, self.spec.name))
        routing: Routing | None = None
        routing_error = None
        try:
            routing = self.router.routing()
        except (RouterError, OSError) as exc:
            routing_error = str(exc)
            log.warning("%s: routing unreadable: %s", self.spec.name, exc)
        obs = self._observe(status, routing, routing_error, now)
        decision = reconcile(self.spec, status, obs, now)
        if decision.status.candidate_model_id != status.candidate_model_id:
            self._use(self.spec)  # superseded: the edges now serve the new candidate
        events = self._with_attachment(status, decision.events)
        changed = bool(events or decision.actions) or (
            decision.status.to_json_dict() != status.to_json_dict()
        )
        if changed and not self._persist(status, rev, decision, events, now):
            return TickResult(status, "held", conflict=True, next_wake_at=now)
        if self.exporter is not None:
            if self._counters is None:
                self._counters = self.store.rollout_counters().get(self.spec.name, {})
            self.exporter.update(
                decision.status,
                events,
                n_steps=len(self.spec.steps),
                at=now.timestamp(),
                counters=self._counters,
            )
        converged = routing is not None and not decision.actions
        wake = decision.next_wake_at
        if decision.actions and wake is None:
            wake = now  # verify the actions took effect
        return TickResult(
            decision.status,
            "held",
            recorded=changed,
            converged=converged and decision.next_wake_at is None,
            next_wake_at=wake,
        )

    def _lease(self, now: datetime) -> TickResult | None:
        """Take or renew the lease; a result when this controller must not act."""
        if self.store.acquire_lease(self.lease, self.holder, self.spec.lease_ttl_s, now):
            self._had_lease = True
            if self.exporter is not None:
                self.exporter.set_lease(self.spec.name, True)
            return None
        if self.exporter is not None:
            self.exporter.set_lease(self.spec.name, False)
        if self._had_lease:
            return TickResult(None, "lost")
        wait = min(LEASE_WAIT_S, self.renew_every_s)
        return TickResult(None, "waiting", next_wake_at=now + timedelta(seconds=wait))

    def _with_attachment(self, status: RolloutStatus, events: Sequence[Event]) -> list[Event]:
        """The decision's events, after ``controller_attached`` on this controller's first."""
        if self._attached:
            return list(events)
        attached = Event(
            "controller_attached",
            "lease_acquired",
            {
                "holder": self.holder,
                "phase": status.phase.value,
                "step": status.step_index,
                "weight": status.weight,
            },
        )
        return [attached, *events]

    def _persist(
        self,
        before: RolloutStatus,
        rev: int,
        decision: Decision,
        events: list[Event],
        now: datetime,
    ) -> bool:
        """Record the decision (False on a write conflict), tell the listeners, then act."""
        try:
            new_rev = self.store.record_rollout(
                self.spec.name,
                decision.status.to_json_dict(),
                [e.as_tuple() for e in events],
                expected_revision=rev,
                at=now,
                counters=decision.counters,
            )
        except ConflictError:
            return False
        self._attached = True
        self._phase = decision.status.phase
        if decision.counters:
            self._counters = None
        if self.on_events is not None and events:
            self.on_events(now, events)
        if self.notifier is not None:
            self.notifier.notify(before.phase, decision.status, events, now)
        if self.after_persist is not None:
            self.after_persist(decision)
        problems = execute_actions(
            self.store, self.spec.name, self.router, decision.actions, new_rev
        )
        for p in problems:
            log.warning("%s: routing not updated (will retry): %s", self.spec.name, p)
        return True

    def _use(self, spec: RolloutSpec) -> None:
        """Switch to ``spec`` (stored by another process), with edges for its candidate."""
        self.spec = spec
        if self.rebuild is not None:
            p = self.rebuild(spec)
            self.router, self.metrics, self.guardrails = p.router, p.metrics, p.guardrails
            self.readiness = p.readiness
            if p.notifier is not None:
                if self.notifier is not None:
                    self.notifier.close(0.0)
                self.notifier = p.notifier
        elif hasattr(self.metrics, "candidate_version"):
            self.metrics.candidate_version = str(spec.candidate_model_id)

    def _observe(
        self,
        status: RolloutStatus,
        routing: Routing | None,
        routing_error: str | None,
        now: datetime,
    ) -> Observation:
        p = plan(self.spec, status, now)
        fetch: MetricsFetch | None = None
        if p.metrics and p.window_start is not None:
            try:
                fetch = self.metrics.fetch(p.window_start, now, p.baseline)
            except Exception as exc:  # a provider must never crash the controller
                fetch = MetricsFetch(None, {}, error=f"{type(exc).__name__}: {exc}")
        guardrails: dict[str, Any] = {}
        for check, metric, since in p.guardrails:
            if p.salt is None:
                guardrails[check] = "the release has no salt yet"
                continue
            try:
                guardrails[check] = self.guardrails.arms(
                    metric,
                    since=since,
                    until=now,
                    salt=p.salt,
                    weight=p.weight,
                    overrides=p.overrides,
                )
            except Exception as exc:
                guardrails[check] = f"{type(exc).__name__}: {exc}"
        preflight = self._preflight(routing, now) if p.preflight and routing else None
        readiness: Readiness | None = None
        if p.readiness:
            try:
                readiness = self.readiness.check(status.candidate_model_id)
            except Exception as exc:
                readiness = Readiness(False, f"readiness probe: {type(exc).__name__}: {exc}")
        known_good = None
        if p.known_good and routing is not None:
            try:
                known_good = tuple(self.router.recent_stable_models(self.spec.rollback_window))
            except (RouterError, OSError, StoreError) as exc:
                log.warning("%s: recent stable models unreadable: %s", self.spec.name, exc)
        return Observation(
            routing, routing_error, fetch, guardrails, preflight, readiness, known_good
        )

    def _preflight(self, routing: Routing, now: datetime) -> dict[str, str | None]:
        """Ask every metric provider and guardrail source once (Argo/Flagger pre-flight)."""
        answers: dict[str, str | None] = {}
        checks = self.spec.checks
        if any(c.type in SERVICE_METRIC_TYPES for c in checks):
            try:
                got = self.metrics.fetch(now, now, None)
                answers[self.metrics.name] = got.error
            except Exception as exc:
                answers[self.metrics.name] = f"{type(exc).__name__}: {exc}"
        for metric in sorted({c.metric for c in checks if c.type == "guardrail"}):
            name = f"{self.guardrails.name}, metric {metric}"
            try:
                self.guardrails.arms(metric, since=now, until=now, salt=routing.salt, weight=0.0)
                answers[name] = None
            except Exception as exc:
                answers[name] = f"{type(exc).__name__}: {exc}"
        return answers

    def run(self, *, once: bool = False) -> RolloutStatus | None:
        """Tick until the rollout is Promoted or Aborted and the routing agrees.

        With ``once``: tick until nothing more is due now, release the lease and return
        (cron-style driving). Returns the final status (``None`` with ``once`` when another
        controller holds the lease).

        Raises:
            LeaseLostError: another controller took the lease over.
        """
        store_errors = 0
        once_ticks = 0
        lost = False
        try:
            while True:
                try:
                    res = self.tick()
                    store_errors = 0
                except ConflictError:
                    continue
                except StoreError as exc:
                    store_errors += 1
                    if store_errors > MAX_STORE_ERRORS:
                        raise
                    log.warning(
                        "%s: store error (%d in a row): %s", self.spec.name, store_errors, exc
                    )
                    self.clock.sleep(min(LEASE_WAIT_S * store_errors, self.renew_every_s))
                    continue
                if res.lease == "lost":
                    lost = True
                    raise LeaseLostError(
                        f"rollout {self.spec.name}: another controller took the lease; "
                        "this one stopped acting"
                    )
                if once and res.lease == "waiting":
                    return None
                if res.conflict:
                    continue
                if res.status is not None and res.status.phase in TERMINAL and res.converged:
                    return res.status
                now = self.clock.now()
                if once and res.lease == "held":
                    once_ticks += 1
                    idle = res.next_wake_at is None or res.next_wake_at > now
                    if idle or once_ticks >= _ONCE_MAX_TICKS:
                        return res.status
                    continue
                wake = res.next_wake_at or now + timedelta(seconds=self.renew_every_s)
                delay = min((wake - now).total_seconds(), self.renew_every_s)
                if isinstance(self.clock, SystemClock) and self.clock.stop.is_set():
                    return res.status
                if delay > 0:
                    self.clock.sleep(delay)
        finally:
            # Every way out (done, --once, a signal, an error) frees the lease at once, so a
            # successor need not wait lease_ttl_s; a lost lease is another holder's.
            if self._had_lease and not lost:
                self.release()

    def release(self) -> None:
        """Give the lease up (a replacement can take over at once)."""
        try:
            self.store.release_lease(self.lease, self.holder)
        except Exception as exc:  # best effort on the way out: the lease then expires
            log.warning("%s: could not release the lease: %s", self.spec.name, exc)
        self._had_lease = False
        if self.exporter is not None:
            self.exporter.set_lease(self.spec.name, False)


__all__ = [
    "Clock",
    "Controller",
    "LeaseLostError",
    "SystemClock",
    "TickResult",
    "build_guardrails",
    "build_metrics",
    "build_router",
    "execute_actions",
    "lease_name",
    "load_spec_of",
    "load_status",
    "new_holder",
    "register",
    "run_command",
]
