"""The rollout state machine as pure functions.

``reconcile(spec, status, observation, now) -> Decision`` is the whole controller logic: it
reads the persisted status, what the world looks like (routing, pre-flight answers,
readiness, metric windows, guardrail arms) and the time, and returns the new status, the
history events and the routing actions. Like Argo Rollouts' ``canary.go`` it is a flat
sequence of idempotent reconcile steps (:data:`_STEPS`), each of which may end the tick:

1. ``spec``: a new candidate supersedes the running release; edited steps restart at 0;
2. ``pending``: wait while another candidate holds traffic; the rollback window; the
   pre-flight query of every metric provider and guardrail source (a failure aborts with
   the weight still 0);
3. ``release``: start (or adopt) the release, at weight 0; notice outside changes;
4. ``readiness``: no traffic until the candidate is ready everywhere, within
   ``progress_deadline_s``;
5. ``shortcuts``: ``promote --full`` and the rollback window go straight to 100 %;
6. ``analysis``: collect → record → decide (:mod:`cohortlens.rollout.analysis`,
   :mod:`cohortlens.rollout.verdict`), in analysis steps and during pauses;
7. ``steps``: walk the steps as far as time and verdicts allow;

and then, whatever ended the tick, ``converge``: the routing is brought to what the status
wants (weight, override learners, the promotion, the delayed unloading of an aborted
candidate). Nothing here does I/O; the runner persists a decision *before* applying its
actions. Operator commands are in :mod:`cohortlens.rollout.commands`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cohortlens.rollout.analysis import collect, record
from cohortlens.rollout.checks import GuardrailArms
from cohortlens.rollout.spec import AnalysisStep, PauseStep, RolloutSpec, SetWeightStep
from cohortlens.rollout.state import (
    TERMINAL,
    Action,
    AnalysisState,
    CheckState,
    Decision,
    Event,
    Hold,
    HoldReason,
    Phase,
    Promote,
    RolloutStatus,
    ScaleDown,
    SetOverrides,
    SetWeight,
    StartRelease,
    action_dict,
)
from cohortlens.rollout.verdict import AnalysisPhase, analysis_checks, decide, dry_run_summary
from cohortlens.store.base import Routing

#: How soon to look again when the routing could not be read or a release is being created.
RETRY_SOON_S = 2.0
_WEIGHT_EPS = 1e-9


@dataclass(frozen=True)
class MetricsFetch:
    """The result of asking the metrics provider for a window.

    Attributes:
        window: what each version did since the baseline; ``None`` when this fetch only
            establishes a baseline (or failed).
        state: the provider's new state (e.g. the scrape), kept as the next baseline.
        error: why the provider could not be read (``None`` on success).
    """

    window: Any
    state: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Readiness:
    """Whether the candidate is ready to take traffic (every probe agrees).

    Attributes:
        ready: loaded and healthy everywhere.
        message: what is missing (or what was checked).
        detail: per probe, what it found (JSON-ready).
    """

    ready: bool
    message: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Observation:
    """What the runner saw this tick.

    Attributes:
        routing: the routing record, or ``None`` if the router could not be read.
        routing_error: why it could not be read.
        metrics: a metrics fetch, when a measurement was due (see :func:`plan`).
        guardrails: per guardrail check, its arms or an error message.
        preflight: per metric provider and guardrail source, ``None`` when it answered,
            else its error (asked once before the first weight change).
        readiness: the readiness probes' answer, when readiness was due.
        known_good: recent stable model ids, newest first (for the rollback window).
    """

    routing: Routing | None
    routing_error: str | None = None
    metrics: MetricsFetch | None = None
    guardrails: dict[str, GuardrailArms | str] = field(default_factory=dict)
    preflight: dict[str, str | None] | None = None
    readiness: Readiness | None = None
    known_good: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Plan:
    """What the runner must fetch before reconciling.

    Attributes:
        metrics: fetch the service metrics (window from ``window_start`` to now).
        window_start: start of the metrics window.
        baseline: the provider's previous state (``None``: none yet).
        guardrails: guardrail checks to fetch arms for: ``(check name, metric, since)``.
        salt, weight, overrides: the routing split the guardrail arms are drawn with.
        preflight: query every metric provider and guardrail source once.
        readiness: probe whether the candidate is ready.
        known_good: read the recent stable models (rollback window).
    """

    metrics: bool = False
    window_start: datetime | None = None
    baseline: dict[str, Any] | None = None
    guardrails: tuple[tuple[str, str, datetime], ...] = ()
    salt: str | None = None
    weight: float = 0.0
    overrides: tuple[str, ...] = ()
    preflight: bool = False
    readiness: bool = False
    known_good: bool = False


# ---------------------------------------------------------------------------- creation


def initial_status(spec: RolloutSpec, now: datetime, *, attempt: int = 1) -> RolloutStatus:
    """A new rollout, not started yet."""
    return RolloutStatus(
        name=spec.name,
        phase=Phase.PENDING,
        candidate_model_id=spec.candidate_model_id,
        spec_hash=spec.spec_hash(),
        steps_hash=spec.steps_hash(),
        attempt=attempt,
        reason="created",
        message=f"rollout of model {spec.candidate_model_id} created",
        created_at=now,
        updated_at=now,
    )


# ---------------------------------------------------------------------------- planning


def plan(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> Plan:
    """What must be fetched for :func:`reconcile` at ``now`` (nothing when nothing is due)."""
    if status.phase in TERMINAL:
        return Plan()
    if status.phase == Phase.PENDING:
        known = spec.rollback_window > 0 and status.release_id is None
        return Plan(preflight=status.preflight_at is None, known_good=known)
    if status.ready_at is None:
        # Also in the tick that adopts the release just started: it may be ready at once.
        due = status.readiness_next_at is None or now >= status.readiness_next_at
        return Plan(readiness=due)
    a = status.analysis
    if a is None or now < a.next_measurement_at:
        return Plan()
    checks = analysis_checks(spec, a)
    service = any(c.type != "guardrail" for c in checks)
    guardrails: tuple[tuple[str, str, datetime], ...] = ()
    if not a.needs_baseline:
        guardrails = tuple(
            (c.name, c.metric, a.started_at) for c in checks if c.type == "guardrail"
        )
    return Plan(
        metrics=service,
        window_start=a.window_start,
        baseline=status.baseline.state if status.baseline is not None else None,
        guardrails=guardrails,
        salt=status.salt,
        weight=status.weight,
        overrides=spec.overrides,
    )


# ---------------------------------------------------------------------------- reconcile


class Out:
    """Accumulates what one decision does (shared with the operator commands)."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.actions: list[Action] = []
        self.events: list[Event] = []
        self.wake: datetime | None = None

    def event(self, kind: str, reason: str, **detail: Any) -> None:
        """Append a history event."""
        self.events.append(Event(kind, reason, detail))

    def act(self, action: Action) -> None:
        """Issue ``action``; a weight change replaces one decided earlier in this decision."""
        if isinstance(action, SetWeight):
            self.actions = [a for a in self.actions if not isinstance(a, SetWeight)]
        self.actions.append(action)

    def has(self, kind: type) -> bool:
        """Whether an action of this type is already decided."""
        return any(isinstance(a, kind) for a in self.actions)

    def wake_at(self, at: datetime | None) -> None:
        """Look again no later than ``at``."""
        if at is not None and (self.wake is None or at < self.wake):
            self.wake = at

    def decision(self, st: RolloutStatus) -> Decision:
        """The decision (``updated_at`` moves when anything happened)."""
        if self.events or self.actions:
            st.updated_at = self.now
        return Decision(st, tuple(self.actions), tuple(self.events), self.wake)


@dataclass
class _Tick:
    spec: RolloutSpec
    before: RolloutStatus
    st: RolloutStatus
    obs: Observation
    out: Out

    @property
    def now(self) -> datetime:
        return self.out.now

    @property
    def routing(self) -> Routing:
        assert self.obs.routing is not None
        return self.obs.routing


def reconcile(
    spec: RolloutSpec, status: RolloutStatus, obs: Observation, now: datetime
) -> Decision:
    """One controller step: the new status, its events and the routing actions to apply."""
    t = _Tick(spec, status, status.model_copy(deep=True), obs, Out(now))
    if obs.routing is None:
        if t.st.phase not in TERMINAL:
            t.out.wake_at(now + timedelta(seconds=RETRY_SOON_S))
        return t.out.decision(t.st)
    for step in _STEPS:
        if not step(t):
            break
    _converge(t)
    return t.out.decision(t.st)


def _spec_changes(t: _Tick) -> bool:
    """A new candidate supersedes the release; edited steps restart at step 0."""
    spec, st, out = t.spec, t.st, t.out
    if st.candidate_model_id != spec.candidate_model_id:
        _supersede(t)
        return True
    new_hash = spec.steps_hash()
    if st.steps_hash is None:  # a status written before steps were hashed
        st.steps_hash = new_hash
    elif st.steps_hash != new_hash:
        st.steps_hash = new_hash
        started = st.step_index > 0 or st.step_started_at is not None
        if st.phase not in TERMINAL and started:
            out.event(
                "steps_changed",
                "steps_edited",
                message="the steps changed: restarting at step 0",
                step=st.step_index,
                weight=st.weight,
            )
            st.step_index, st.step_started_at, st.analysis, st.hold = 0, None, None, None
            st.weight = 0.0
            if st.phase == Phase.PAUSED:
                st.phase = Phase.PROGRESSING
    if st.ready_at is None and st.release_id is not None and st.weight > 0.0:
        st.ready_at = t.now  # a status from before the readiness gate, already serving
    return True


def _supersede(t: _Tick) -> None:
    """Abort the running release for the new candidate, which starts fresh at step 0."""
    spec, old, out = t.spec, t.st, t.out
    new_model = spec.candidate_model_id
    if old.phase not in TERMINAL:
        _abort(
            old,
            out,
            "release_superseded",
            f"model {new_model} was submitted for rollout {spec.name}; the release of model "
            f"{old.candidate_model_id} stops",
            superseded_by=new_model,
            candidate=old.candidate_model_id,
        )
    r = t.routing
    if old.release_id is not None and r.release_id == old.release_id and r.candidate_model_id:
        out.act(ScaleDown(old.release_id, f"superseded by model {new_model}"))
    fresh = initial_status(spec, t.now, attempt=old.attempt + 1)
    fresh.created_at = old.created_at
    fresh.totals = dict(old.totals)
    fresh.reason, fresh.message = (
        "superseded",
        f"model {new_model} replaces model " + str(old.candidate_model_id),
    )
    out.event("created", "new_candidate", candidate=new_model, previous=old.candidate_model_id)
    t.st = fresh


def _pending(t: _Tick) -> bool:
    """Wait for the routing; the rollback window; pre-flight; then Progressing."""
    spec, st, out, r = t.spec, t.st, t.out, t.routing
    if st.phase != Phase.PENDING:
        return True
    busy = r.candidate_model_id not in (None, st.candidate_model_id) and r.candidate_weight > 0.0
    if busy:
        msg = (
            f"waiting: model {r.candidate_model_id} is a candidate with "
            f"{r.candidate_weight:.2%} of traffic (release {r.release_id})"
        )
        if st.message != msg:
            _set_reason(st, "routing_busy", msg)
            out.event("waiting", "routing_busy", candidate=r.candidate_model_id)
        out.wake_at(t.now + timedelta(seconds=spec.analysis.interval_s))
        return False
    if t.obs.known_good is not None and spec.rollback_window > 0:
        window = t.obs.known_good[: spec.rollback_window]
        if st.candidate_model_id in window:
            st.rollback_window = True
            out.event(
                "rollback_window",
                "known_good_model",
                candidate=st.candidate_model_id,
                recent_stable=list(window),
                message=f"model {st.candidate_model_id} was stable recently: straight to "
                "100 % once ready, without steps or analysis",
            )
    if st.preflight_at is None and not st.rollback_window:
        answers = t.obs.preflight
        if answers is None:
            _set_reason(st, "preflight", "querying the metric providers before any traffic")
            out.wake_at(t.now)
            return False
        failed = {name: err for name, err in answers.items() if err is not None}
        if failed:
            _abort(
                st,
                out,
                "preflight_failed",
                "pre-flight: "
                + "; ".join(f"{name}: {err}" for name, err in sorted(failed.items())),
                providers=failed,
            )
            return False
        st.preflight_at = t.now
        out.event("preflight_passed", "providers_answered", providers=sorted(answers))
    st.phase = Phase.PROGRESSING
    st.started_at = t.now
    _set_reason(st, "started", f"rollout of model {st.candidate_model_id} started")
    out.event("started", "controller_started", candidate=st.candidate_model_id)
    return True


def _release(t: _Tick) -> bool:
    """Start or adopt this rollout's release; notice releases changed outside it."""
    st, out, r = t.st, t.out, t.routing
    if st.phase in TERMINAL:
        return False
    if st.release_id is None:
        if r.candidate_model_id == st.candidate_model_id:
            st.release_id, st.salt = r.release_id, r.salt
            st.release_started_at = t.now
            out.event(
                "release_started",
                "release_adopted",
                release_id=r.release_id,
                salt=r.salt,
                weight=r.candidate_weight,
            )
            return True
        out.act(StartRelease(st.candidate_model_id, "rollout started"))
        out.event("release_requested", "new_release", candidate=st.candidate_model_id)
        out.wake_at(t.now)
        return False
    if r.release_id != st.release_id:
        _abort(
            st,
            out,
            "release_superseded",
            f"routing moved to release {r.release_id} (model {r.candidate_model_id}) "
            "outside this rollout",
            act=False,
        )
        return False
    if r.candidate_model_id is None:
        if r.stable_model_id == st.candidate_model_id:
            _finish_promoted(st, out, "promoted_outside_controller", act=False)
        else:
            _abort(
                st,
                out,
                "candidate_cleared",
                "the candidate was cleared from the routing",
                act=False,
            )
        return False
    if st.release_started_at is None:
        st.release_started_at = t.now
    return True


def _readiness(t: _Tick) -> bool:
    """No traffic before the candidate is ready everywhere; abort past the deadline."""
    spec, st, out = t.spec, t.st, t.out
    if st.ready_at is not None:
        return True
    got = t.obs.readiness
    if got is not None and got.ready:
        st.ready_at = t.now
        st.readiness_message = ""
        out.event("candidate_ready", "readiness_passed", message=got.message, **got.detail)
        return True
    if got is not None:
        if got.message != st.readiness_message:
            out.event("waiting", "candidate_not_ready", message=got.message, **got.detail)
        st.readiness_message = got.message
        st.readiness_next_at = t.now + timedelta(seconds=spec.readiness.interval_s)
    assert st.release_started_at is not None
    deadline = st.release_started_at + timedelta(seconds=spec.progress_deadline_s)
    if t.now >= deadline:
        _abort(
            st,
            out,
            "progress_deadline_exceeded",
            f"the candidate was not ready {spec.progress_deadline_s:g} s after its release "
            f"started: {st.readiness_message or 'no readiness answer yet'}",
        )
        return False
    _set_reason(st, "waiting_for_readiness", st.readiness_message or "probing the candidate")
    out.wake_at(st.readiness_next_at or t.now)
    out.wake_at(deadline)
    return False


def _shortcuts(t: _Tick) -> bool:
    """``promote --full`` (Argo's ``promoteFull`` latch) and the rollback window."""
    st = t.st
    if st.promote_full:
        _finish_promoted(st, t.out, "ManualPromoteFull")
        return False
    if st.rollback_window:
        _finish_promoted(st, t.out, "rollback_window")
        return False
    return True


def _analysis(t: _Tick) -> bool:
    """Collect this tick's measurements, record them, and act on the verdict."""
    spec, st, out = t.spec, t.st, t.out
    a = st.analysis
    if a is None or (t.obs.metrics is None and not t.obs.guardrails):
        return True
    got = collect(spec, a, t.obs, t.now)
    out.events += record(spec, st, a, got, t.now)
    if not got.results:
        return True
    verdict = decide(spec, a, t.now)
    if verdict.phase == AnalysisPhase.FAILED:
        _abort(
            st,
            out,
            verdict.reason,
            verdict.message,
            check=verdict.check,
            dry_run=dry_run_summary(spec, a),
            **_failure_detail(st, verdict.check),
        )
        return False
    if verdict.phase == AnalysisPhase.ERROR:
        if spec.analysis.on_error == "abort":
            _abort(st, out, verdict.reason, verdict.message, check=verdict.check)
            return False
        if st.hold is None:
            _hold(st, out, HoldReason.PROVIDER_ERROR, verdict.message, check=verdict.check)
        return True
    if verdict.phase == AnalysisPhase.INCONCLUSIVE and st.hold is None:
        reason = {
            "count_reached_inconclusive": HoldReason.COUNT_REACHED,
            "score_marginal": HoldReason.MARGINAL_SCORE,
        }.get(verdict.reason, HoldReason.INCONCLUSIVE)
        _hold(
            st, out, reason, verdict.message, check=verdict.check, dry_run=dry_run_summary(spec, a)
        )
    return True


def _failure_detail(st: RolloutStatus, check: str | None) -> dict[str, Any]:
    a = st.analysis
    if check is None or a is None or check not in a.checks:
        return {}
    cs = a.checks[check]
    return {"failures": cs.failures, "last_value": cs.last_value}


def _steps(t: _Tick) -> bool:
    """Walk the steps from the current one as far as the time and the analysis allow."""
    spec, st, out = t.spec, t.st, t.out
    while True:
        if st.hold is not None:
            st.phase = Phase.PAUSED
            if st.analysis is not None:
                out.wake_at(st.analysis.next_measurement_at)
            return True
        if st.step_index >= len(spec.steps):
            _finish_promoted(st, out, "steps_completed")
            return True
        step = spec.steps[st.step_index]
        if st.step_started_at is None:
            _enter_step(t, step)
        done = (
            _pause_done(t, step)
            if isinstance(step, PauseStep)
            else _analysis_done(t)
            if isinstance(step, AnalysisStep)
            else True  # a set_weight step is done as soon as it is entered
        )
        if not done:
            return True
        _complete_step(st)


def _enter_step(t: _Tick, step: Any) -> None:
    """Start step ``step``: a set_weight issues its weight; analyses start counting."""
    spec, st, out, i = t.spec, t.st, t.out, t.st.step_index
    st.step_started_at = t.now
    out.event("step_started", step.kind, step=i, weight=st.weight)
    if isinstance(step, SetWeightStep):
        st.weight = step.set_weight / 100.0
        if st.release_id is not None:
            out.act(SetWeight(st.weight, st.release_id, f"step {i}"))
        out.event("weight_set", "step", step=i, weight=st.weight)
    elif isinstance(step, AnalysisStep) or spec.background_checks(i):
        st.analysis = new_analysis(spec, st, i, t.now)


def _pause_done(t: _Tick, step: PauseStep) -> bool:
    """A timed pause ends at its persisted start + duration; an untimed one by ``promote``."""
    st, out, i = t.st, t.out, t.st.step_index
    duration = step.pause.duration_s
    assert st.step_started_at is not None
    if duration is not None and t.now >= st.step_started_at + timedelta(seconds=duration):
        out.event("pause_elapsed", "duration", step=i, duration_s=duration)
        return True
    st.phase = Phase.PAUSED
    if duration is not None:
        out.wake_at(st.step_started_at + timedelta(seconds=duration))
    if st.analysis is not None:
        out.wake_at(st.analysis.next_measurement_at)
    until = f"for {duration:g} s" if duration is not None else "until promoted"
    _set_reason(st, "pause_step", f"paused at step {i} {until}")
    return False


def _analysis_done(t: _Tick) -> bool:
    """An analysis step is done when its verdict is successful (and ``min_duration_s`` passed)."""
    spec, st, out, i = t.spec, t.st, t.out, t.st.step_index
    st.phase = Phase.PROGRESSING
    a = st.analysis
    if a is None or a.step_index != i:  # status written by an older spec
        a = st.analysis = new_analysis(spec, st, i, t.now)
    verdict = decide(spec, a, t.now)
    if verdict.phase == AnalysisPhase.SUCCESSFUL:
        out.event(
            "analysis_succeeded",
            verdict.reason,
            step=i,
            message=verdict.message,
            measurements=a.measurements,
            checks={n: c.model_dump() for n, c in a.checks.items()},
            scores=[j.score for j in a.judgements],
            dry_run=dry_run_summary(spec, a),
        )
        return True
    _set_reason(st, "analysis", f"analysing step {i} at {st.weight:.2%}")
    out.wake_at(a.next_measurement_at)
    out.wake_at(verdict.wait_until)
    return False


_STEPS: tuple[Callable[[_Tick], bool], ...] = (
    _spec_changes,
    _pending,
    _release,
    _readiness,
    _shortcuts,
    _analysis,
    _steps,
)


# ---------------------------------------------------------------------------- converge


def _converge(t: _Tick) -> None:
    """Bring the routing to what the status wants (only while the release is this one's)."""
    spec, st, out, r = t.spec, t.st, t.out, t.routing
    if st.release_id is None or r.release_id != st.release_id:
        return
    if st.phase == Phase.PROMOTED:
        if r.candidate_model_id == st.candidate_model_id and not out.has(Promote):
            out.act(Promote(st.release_id, "promotion not applied yet"))
            out.event("routing_reconciled", "promotion_pending")
        return
    if r.candidate_model_id != st.candidate_model_id:
        return
    # The weight: a step issues its own; anything else is drift from the persisted wish.
    if not out.has(SetWeight) and abs(r.candidate_weight - st.weight) > _WEIGHT_EPS:
        out.act(SetWeight(st.weight, st.release_id, "reconcile"))
        if abs(t.before.weight - st.weight) <= _WEIGHT_EPS:
            out.event(
                "routing_reconciled",
                "weight_drift",
                observed=r.candidate_weight,
                desired=st.weight,
            )
    # Override learners: only while in flight and ready.
    live = st.phase in (Phase.PROGRESSING, Phase.PAUSED) and st.ready_at is not None
    want = tuple(sorted(set(spec.overrides))) if live else ()
    if tuple(sorted(r.overrides)) != want:
        out.act(SetOverrides(want, st.release_id, "override routes"))
        out.event(
            "overrides_set" if want else "overrides_removed",
            "override_routes",
            learners=len(want),
        )
    # An aborted candidate is unloaded after abort_scale_down_delay_s (0: kept loaded).
    delay = spec.abort_scale_down_delay_s
    if st.phase == Phase.ABORTED and delay > 0 and st.scaled_down_at is None:
        due = (st.finished_at or t.now) + timedelta(seconds=delay)
        if t.now >= due:
            st.scaled_down_at = t.now
            out.act(ScaleDown(st.release_id, f"aborted {delay:g} s ago: {st.reason}"))
            out.event("scaled_down", "abort_scale_down_delay", delay_s=delay)
        else:
            out.wake_at(due)


# ---------------------------------------------------------------------------- transitions


def _set_reason(st: RolloutStatus, reason: str, message: str) -> None:
    st.reason, st.message = reason, message


def _abort(
    st: RolloutStatus, out: Out, reason: str, message: str, *, act: bool = True, **detail: Any
) -> None:
    """Aborted: weight 0 in the same decision (when the release is still ours)."""
    previous = st.weight
    st.phase = Phase.ABORTED
    st.weight = 0.0
    st.hold = None
    st.promote_full = False
    st.finished_at = out.now
    _set_reason(st, reason, message)
    if act and st.release_id is not None:
        out.act(SetWeight(0.0, st.release_id, f"aborted: {reason}"))
    out.event(
        "aborted",
        reason,
        message=message,
        step=st.step_index,
        weight_before=previous,
        release_id=st.release_id,
        duration_s=_duration_s(st, out.now),
        actions=[action_dict(a) for a in out.actions],
        **detail,
    )


def _duration_s(st: RolloutStatus, now: datetime) -> float:
    """Seconds since this attempt started (for the duration histogram)."""
    return (now - (st.started_at or st.created_at)).total_seconds()


def _finish_promoted(st: RolloutStatus, out: Out, reason: str, *, act: bool = True) -> None:
    st.phase = Phase.PROMOTED
    st.hold = None
    st.analysis = None
    st.promote_full = st.rollback_window = False
    st.weight = 1.0
    st.finished_at = out.now
    _set_reason(st, reason, f"model {st.candidate_model_id} promoted to stable")
    if act and st.release_id is not None:
        out.act(Promote(st.release_id, reason))
    out.event(
        "promoted",
        reason,
        candidate=st.candidate_model_id,
        step=st.step_index,
        duration_s=_duration_s(st, out.now),
    )


def _complete_step(st: RolloutStatus) -> None:
    st.step_index += 1
    st.step_started_at = None
    st.analysis = None


def new_analysis(spec: RolloutSpec, st: RolloutStatus, index: int, now: datetime) -> AnalysisState:
    """The analysis of step ``index`` (a pause step's is a background analysis)."""
    background = not isinstance(spec.steps[index], AnalysisStep)
    checks = spec.background_checks(index) if background else spec.step_checks(index)
    interval = spec.step_interval_s(index)
    service = any(c.type != "guardrail" for c in checks)
    # A scrape taken in this very tick (the previous step's last measurement) is a valid
    # baseline; otherwise the first fetch only sets one.
    fresh = st.baseline is not None and st.baseline.at == now
    needs = service and not fresh
    return AnalysisState(
        step_index=index,
        started_at=now,
        interval_s=interval,
        needs_baseline=needs,
        window_start=now,
        next_measurement_at=now if needs else now + timedelta(seconds=interval),
        checks={c.name: CheckState() for c in checks},
        background=background,
    )


def _hold(st: RolloutStatus, out: Out, reason: HoldReason, message: str, **detail: Any) -> None:
    st.hold = Hold(reason=reason, at=out.now, message=message)
    st.phase = Phase.PAUSED
    _set_reason(st, reason.value, message)
    out.event(
        "paused", reason.value, message=message, step=st.step_index, weight=st.weight, **detail
    )


__all__ = [
    "MetricsFetch",
    "Observation",
    "Out",
    "Plan",
    "Readiness",
    "initial_status",
    "new_analysis",
    "plan",
    "reconcile",
]
