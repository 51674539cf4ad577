"""The rollout state machine as pure functions.

``reconcile(spec, status, observation, now) -> Decision`` is the whole controller logic: it
reads the persisted status, what the world looks like (routing, metric windows, guardrail
arms) and the time, and returns the new status, the history events and the routing actions.
``apply_command`` does the same for an operator's command. Nothing here does I/O; the
runner (:mod:`cohortlens.rollout.runner`) persists a decision *before* applying its actions.

Phases: Pending → Progressing(step) ⇄ Paused → Promoted | Aborted. Rules (docs/RUNBOOK.md):

* a check fails the analysis when its failed measurements exceed ``failure_limit``: the
  rollout aborts and the candidate's weight goes to 0 in the same decision;
* more than ``consecutive_error_limit`` provider errors in a row: abort (or pause, per
  ``analysis.on_error``); never promote;
* more than ``inconclusive_limit`` inconclusive measurements: pause for a human;
* an analysis step completes when every decisive check has ``consecutive_success_limit``
  successes in a row; dry-run checks are measured and reported only;
* a pause ("freezes progress, never protection"): measurements go on while held, and a
  failure still aborts;
* Aborted stays Aborted until ``retry``; Promoted is final.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cohortlens.errors import InputError
from cohortlens.rollout.checks import (
    CheckResult,
    GuardrailArms,
    Outcome,
    error_result,
    evaluate_guardrail,
    evaluate_service_check,
    worst,
)
from cohortlens.rollout.measure import Window
from cohortlens.rollout.spec import (
    SERVICE_METRIC_TYPES,
    AnalysisStep,
    PauseStep,
    RolloutSpec,
    SetWeightStep,
)
from cohortlens.rollout.state import (
    TERMINAL,
    Action,
    AnalysisState,
    Baseline,
    CheckState,
    Decision,
    Event,
    Hold,
    HoldReason,
    Phase,
    Promote,
    RolloutStatus,
    SetWeight,
    StartRelease,
    action_dict,
)

#: How soon to look again when the routing could not be read or a release is being created.
RETRY_SOON_S = 2.0
_WEIGHT_EPS = 1e-9


@dataclass(frozen=True)
class RoutingView:
    """The routing record as the controller sees it (the store's ``Routing``, trimmed)."""

    stable_model_id: int | None
    candidate_model_id: int | None
    candidate_weight: float
    salt: str
    release_id: int
    revision: int

    @classmethod
    def of(cls, routing: Any) -> RoutingView:
        """From the store's ``Routing`` or anything with the same attributes."""
        return cls(
            stable_model_id=routing.stable_model_id,
            candidate_model_id=routing.candidate_model_id,
            candidate_weight=float(routing.candidate_weight),
            salt=str(routing.salt),
            release_id=int(routing.release_id),
            revision=int(routing.revision),
        )


@dataclass(frozen=True)
class MetricsFetch:
    """The result of asking the metrics provider for a window.

    Attributes:
        window: what each version did since the baseline; ``None`` when this fetch only
            establishes a baseline (or failed).
        state: the provider's new state (e.g. the scrape), kept as the next baseline.
        error: why the provider could not be read (``None`` on success).
    """

    window: Window | None
    state: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Observation:
    """What the runner saw this tick.

    Attributes:
        routing: the routing record, or ``None`` if the router could not be read.
        routing_error: why it could not be read.
        metrics: a metrics fetch, when a measurement was due (see :func:`plan`).
        guardrails: per guardrail check, its arms or an error message.
    """

    routing: RoutingView | None
    routing_error: str | None = None
    metrics: MetricsFetch | None = None
    guardrails: dict[str, GuardrailArms | str] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """What the runner must fetch before reconciling.

    Attributes:
        metrics: fetch the service metrics (window from ``window_start`` to now).
        window_start: start of the metrics window.
        baseline: the provider's previous state (``None``: none yet).
        guardrails: guardrail checks to fetch arms for: ``(check name, metric, since)``.
        salt, weight: the routing split the guardrail arms are drawn with.
    """

    metrics: bool = False
    window_start: datetime | None = None
    baseline: dict[str, Any] | None = None
    guardrails: tuple[tuple[str, str, datetime], ...] = ()
    salt: str | None = None
    weight: float = 0.0


class Command(StrEnum):
    """Operator commands (``cohortlens rollout ...``)."""

    PROMOTE = "promote"
    PROMOTE_FULL = "promote_full"
    ABORT = "abort"
    PAUSE = "pause"
    RESUME = "resume"
    RETRY = "retry"


# ---------------------------------------------------------------------------- creation


def initial_status(spec: RolloutSpec, now: datetime) -> RolloutStatus:
    """A new rollout, not started yet."""
    return RolloutStatus(
        name=spec.name,
        phase=Phase.PENDING,
        candidate_model_id=spec.candidate_model_id,
        spec_hash=spec.spec_hash(),
        reason="created",
        message=f"rollout of model {spec.candidate_model_id} created",
        created_at=now,
        updated_at=now,
    )


# ---------------------------------------------------------------------------- planning


def plan(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> Plan:
    """What must be fetched for :func:`reconcile` at ``now`` (nothing when no step is due)."""
    a = status.analysis
    if status.phase in TERMINAL or a is None or now < a.next_measurement_at:
        return Plan()
    checks = spec.step_checks(a.step_index)
    service = any(c.type in SERVICE_METRIC_TYPES for c in checks)
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
    )


# ---------------------------------------------------------------------------- reconcile


class _Out:
    """Accumulates what one decision does."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.actions: list[Action] = []
        self.events: list[Event] = []
        self.wake: datetime | None = None

    def event(self, kind: str, reason: str, **detail: Any) -> None:
        self.events.append(Event(kind, reason, detail))

    def set_weight(self, action: SetWeight) -> None:
        """Issue ``action``, replacing a weight change decided earlier in this decision."""
        self.actions = [a for a in self.actions if not isinstance(a, SetWeight)]
        self.actions.append(action)

    def wake_at(self, at: datetime | None) -> None:
        if at is not None and (self.wake is None or at < self.wake):
            self.wake = at

    def decision(self, st: RolloutStatus) -> Decision:
        if self.events or self.actions:
            st.updated_at = self.now
        return Decision(st, tuple(self.actions), tuple(self.events), self.wake)


def reconcile(
    spec: RolloutSpec, status: RolloutStatus, obs: Observation, now: datetime
) -> Decision:
    """One controller step: the new status, its events and the routing actions to apply."""
    st = status.model_copy(deep=True)
    out = _Out(now)
    routing = obs.routing
    if routing is None:
        if st.phase not in TERMINAL:
            out.wake_at(now + timedelta(seconds=RETRY_SOON_S))
        return out.decision(st)

    if st.phase in TERMINAL:
        _converge_terminal(st, routing, out)
        return out.decision(st)

    if st.phase == Phase.PENDING:
        busy = (
            routing.candidate_model_id not in (None, st.candidate_model_id)
            and routing.candidate_weight > 0.0
        )
        if busy:
            msg = (
                f"waiting: model {routing.candidate_model_id} is a candidate with "
                f"{routing.candidate_weight:.2%} of traffic (release {routing.release_id})"
            )
            if st.message != msg:
                st.message = msg
                st.reason = "routing_busy"
                out.event("waiting", "routing_busy", candidate=routing.candidate_model_id)
            out.wake_at(now + timedelta(seconds=spec.analysis.interval_s))
            return out.decision(st)
        st.phase = Phase.PROGRESSING
        _set_reason(st, "started", f"rollout of model {st.candidate_model_id} started")
        out.event("started", "controller_started", candidate=st.candidate_model_id)

    # -- our release ------------------------------------------------------------------------
    if st.release_id is None:
        if routing.candidate_model_id == st.candidate_model_id:
            st.release_id, st.salt = routing.release_id, routing.salt
            out.event(
                "release_started",
                "release_adopted",
                release_id=routing.release_id,
                salt=routing.salt,
                weight=routing.candidate_weight,
            )
        else:
            out.actions.append(StartRelease(st.candidate_model_id, "rollout started"))
            out.event("release_requested", "new_release", candidate=st.candidate_model_id)
            out.wake_at(now)
            return out.decision(st)
    elif routing.release_id != st.release_id:
        _abort(
            st,
            out,
            "release_superseded",
            f"routing moved to release {routing.release_id} (model "
            f"{routing.candidate_model_id}) outside this rollout",
            act=False,
        )
        return out.decision(st)
    elif routing.candidate_model_id is None:
        if routing.stable_model_id == st.candidate_model_id:
            _finish_promoted(st, out, "promoted_outside_controller", act=False)
        else:
            _abort(
                st,
                out,
                "candidate_cleared",
                "the candidate was cleared from the routing",
                act=False,
            )
        return out.decision(st)

    # -- measure, then advance ----------------------------------------------------------------
    if st.analysis is not None and (obs.metrics is not None or obs.guardrails):
        _measure(spec, st, obs, out)
    if st.phase not in TERMINAL:
        _advance(spec, st, out)
    _converge_weight(st, routing, out)
    return out.decision(st)


def _converge_weight(st: RolloutStatus, routing: RoutingView, out: _Out) -> None:
    """One SetWeight when the routing differs from what the status wants."""
    if st.release_id is None or st.phase == Phase.PROMOTED:
        return
    if any(isinstance(a, SetWeight) for a in out.actions):
        return
    if abs(routing.candidate_weight - st.weight) > _WEIGHT_EPS:
        out.actions.append(SetWeight(st.weight, st.release_id, "reconcile"))
        out.event(
            "routing_reconciled",
            "weight_drift",
            observed=routing.candidate_weight,
            desired=st.weight,
        )


def _converge_terminal(st: RolloutStatus, routing: RoutingView, out: _Out) -> None:
    """Aborted: the candidate keeps weight 0; Promoted: the promotion is carried out."""
    if st.release_id is None or routing.release_id != st.release_id:
        return
    if st.phase == Phase.ABORTED:
        if routing.candidate_model_id == st.candidate_model_id and routing.candidate_weight > 0:
            out.actions.append(SetWeight(0.0, st.release_id, "aborted"))
            out.event(
                "routing_reconciled", "weight_drift", observed=routing.candidate_weight, desired=0.0
            )
    elif st.phase == Phase.PROMOTED and routing.candidate_model_id == st.candidate_model_id:
        out.actions.append(Promote(st.release_id, "promotion not applied yet"))
        out.event("routing_reconciled", "promotion_pending")


def _set_reason(st: RolloutStatus, reason: str, message: str) -> None:
    st.reason, st.message = reason, message


def _abort(
    st: RolloutStatus, out: _Out, reason: str, message: str, *, act: bool = True, **detail: Any
) -> None:
    """Aborted: weight 0 in the same decision (when the release is still ours)."""
    previous = st.weight
    st.phase = Phase.ABORTED
    st.weight = 0.0
    st.hold = None
    st.finished_at = out.now
    _set_reason(st, reason, message)
    if act and st.release_id is not None:
        out.actions.append(SetWeight(0.0, st.release_id, f"aborted: {reason}"))
    out.event(
        "aborted",
        reason,
        message=message,
        step=st.step_index,
        weight_before=previous,
        actions=[action_dict(a) for a in out.actions],
        **detail,
    )


def _finish_promoted(st: RolloutStatus, out: _Out, reason: str, *, act: bool = True) -> None:
    st.phase = Phase.PROMOTED
    st.hold = None
    st.analysis = None
    st.finished_at = out.now
    _set_reason(st, reason, f"model {st.candidate_model_id} promoted to stable")
    if act and st.release_id is not None:
        out.actions.append(Promote(st.release_id, reason))
    out.event("promoted", reason, candidate=st.candidate_model_id, step=st.step_index)


def _advance(spec: RolloutSpec, st: RolloutStatus, out: _Out) -> None:
    """Walk the steps from the current one as far as the time and the analysis allow."""
    now = out.now
    while True:
        if st.hold is not None:
            st.phase = Phase.PAUSED
            if st.analysis is not None:
                out.wake_at(st.analysis.next_measurement_at)
            return
        i = st.step_index
        if i >= len(spec.steps):
            _finish_promoted(st, out, "steps_completed")
            return
        step = spec.steps[i]
        if st.step_started_at is None:
            st.step_started_at = now
            out.event("step_started", step.kind, step=i, weight=st.weight)
            if isinstance(step, SetWeightStep):
                st.weight = step.set_weight / 100.0
                if st.release_id is not None:
                    out.set_weight(SetWeight(st.weight, st.release_id, f"step {i}"))
                out.event("weight_set", "step", step=i, weight=st.weight)
                _complete_step(st)
                continue
            if isinstance(step, AnalysisStep):
                st.analysis = _new_analysis(spec, st, i, now)
        if isinstance(step, PauseStep):
            duration = step.pause.duration_s
            if duration is not None and now >= st.step_started_at + timedelta(seconds=duration):
                out.event("pause_elapsed", "duration", step=i, duration_s=duration)
                _complete_step(st)
                continue
            st.phase = Phase.PAUSED
            if duration is not None:
                out.wake_at(st.step_started_at + timedelta(seconds=duration))
            _set_reason(
                st,
                "pause_step",
                f"paused at step {i} "
                + (f"for {duration:g} s" if duration is not None else "until promoted"),
            )
            return
        if isinstance(step, AnalysisStep):
            st.phase = Phase.PROGRESSING
            a = st.analysis
            if a is None or a.step_index != i:  # status written by an older spec
                a = st.analysis = _new_analysis(spec, st, i, now)
            if _analysis_done(spec, a):
                out.event(
                    "analysis_succeeded",
                    "consecutive_success_limit_reached",
                    step=i,
                    measurements=a.measurements,
                    checks={n: c.model_dump() for n, c in a.checks.items()},
                )
                _complete_step(st)
                continue
            _set_reason(st, "analysis", f"analysing step {i} at {st.weight:.2%}")
            out.wake_at(a.next_measurement_at)
            return


def _complete_step(st: RolloutStatus) -> None:
    st.step_index += 1
    st.step_started_at = None
    st.analysis = None


def _new_analysis(spec: RolloutSpec, st: RolloutStatus, index: int, now: datetime) -> AnalysisState:
    checks = spec.step_checks(index)
    interval = spec.step_interval_s(index)
    service = any(c.type in SERVICE_METRIC_TYPES for c in checks)
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
    )


def _analysis_done(spec: RolloutSpec, a: AnalysisState) -> bool:
    if a.measurements < 1:
        return False
    for c in spec.step_checks(a.step_index):
        if c.dry_run:
            continue
        if a.checks[c.name].consecutive_successes < c.consecutive_success_limit:
            return False
    return True


def _measure(spec: RolloutSpec, st: RolloutStatus, obs: Observation, out: _Out) -> None:
    """Fold this tick's fetches into the analysis counters and decide abort / hold."""
    a = st.analysis
    assert a is not None
    now = out.now
    checks = spec.step_checks(a.step_index)
    results: list[CheckResult] = []
    fetch = obs.metrics
    window: Window | None = None
    if fetch is not None:
        if fetch.error is not None:
            results += [
                error_result(c.name, f"metrics provider: {fetch.error}")
                for c in checks
                if c.type in SERVICE_METRIC_TYPES
            ]
        else:
            st.baseline = Baseline(at=now, state=fetch.state)
            if a.needs_baseline or fetch.window is None:
                a.needs_baseline = False
                a.window_start = now
                a.next_measurement_at = now + timedelta(seconds=a.interval_s)
                out.event("baseline", "metrics_baseline", step=a.step_index)
            else:
                window = fetch.window
                results += [
                    evaluate_service_check(c, window)
                    for c in checks
                    if c.type in SERVICE_METRIC_TYPES
                ]
    for c in checks:
        if c.type != "guardrail" or c.name not in obs.guardrails:
            continue
        got = obs.guardrails[c.name]
        if isinstance(got, str):
            results.append(error_result(c.name, f"guardrail source: {got}"))
        else:
            results.append(evaluate_guardrail(c, got))
    if not results:
        return

    by_name = {c.name: c for c in checks}
    for r in results:
        _count(a.checks.setdefault(r.check, CheckState()), r)
        st.totals[r.outcome.value] = st.totals.get(r.outcome.value, 0) + 1
    a.measurements += 1
    errored = any(r.outcome == Outcome.ERROR for r in results)
    if window is not None:
        a.window_start = now
    delay = spec.analysis.error_retry_interval_s if errored else a.interval_s
    a.next_measurement_at = now + timedelta(seconds=delay)
    summary = worst(
        [r.outcome for r in results if not by_name[r.check].dry_run] or [Outcome.SUCCESSFUL]
    )
    out.event(
        "measurement",
        summary.value,
        step=a.step_index,
        weight=st.weight,
        measurement=a.measurements,
        window_s=window.window_s if window is not None else None,
        checks={r.check: r.to_dict() | {"dry_run": by_name[r.check].dry_run} for r in results},
    )

    decisive = [c for c in checks if not c.dry_run]
    for c in decisive:
        cs = a.checks[c.name]
        if cs.failures > c.failure_limit:
            _abort(
                st,
                out,
                "failure_limit_exceeded",
                f"check {c.name} failed {cs.failures} time(s) (failure_limit {c.failure_limit}): "
                f"{cs.last_message}",
                check=c.name,
                failures=cs.failures,
                failure_limit=c.failure_limit,
                last_value=cs.last_value,
            )
            return
    for c in decisive:
        cs = a.checks[c.name]
        if cs.consecutive_errors > c.consecutive_error_limit:
            message = (
                f"check {c.name}: {cs.consecutive_errors} provider errors in a row "
                f"(consecutive_error_limit {c.consecutive_error_limit}): {cs.last_message}"
            )
            if spec.analysis.on_error == "abort":
                _abort(
                    st,
                    out,
                    HoldReason.PROVIDER_ERROR.value,
                    message,
                    check=c.name,
                    consecutive_errors=cs.consecutive_errors,
                )
                return
            if st.hold is None:
                _hold(st, out, HoldReason.PROVIDER_ERROR, message, check=c.name)
            return
    for c in decisive:
        cs = a.checks[c.name]
        if cs.inconclusives > c.inconclusive_limit and st.hold is None:
            _hold(
                st,
                out,
                HoldReason.INCONCLUSIVE,
                f"check {c.name} inconclusive {cs.inconclusives} time(s) "
                f"(inconclusive_limit {c.inconclusive_limit}): {cs.last_message}",
                check=c.name,
            )
            return


def _count(cs: CheckState, r: CheckResult) -> None:
    cs.measurements += 1
    cs.last_outcome = r.outcome.value
    cs.last_value = r.value if r.value is not None and math.isfinite(r.value) else None
    cs.last_message = r.message
    if r.outcome == Outcome.SUCCESSFUL:
        cs.successes += 1
        cs.consecutive_successes += 1
        cs.consecutive_errors = 0
    elif r.outcome == Outcome.FAILED:
        cs.failures += 1
        cs.consecutive_successes = 0
        cs.consecutive_errors = 0
    elif r.outcome == Outcome.INCONCLUSIVE:
        cs.inconclusives += 1
        cs.consecutive_successes = 0
        cs.consecutive_errors = 0
    else:
        cs.errors += 1
        cs.consecutive_errors += 1


def _hold(st: RolloutStatus, out: _Out, reason: HoldReason, message: str, **detail: Any) -> None:
    st.hold = Hold(reason=reason, at=out.now, message=message)
    st.phase = Phase.PAUSED
    _set_reason(st, reason.value, message)
    out.event(
        "paused", reason.value, message=message, step=st.step_index, weight=st.weight, **detail
    )


# ---------------------------------------------------------------------------- commands


def apply_command(
    spec: RolloutSpec,
    status: RolloutStatus,
    command: Command,
    now: datetime,
    *,
    reason: str | None = None,
) -> Decision:
    """An operator's command as a decision (persisted, then acted on, like a reconcile).

    Raises:
        InputError: the command does not apply in the current phase.
    """
    st = status.model_copy(deep=True)
    out = _Out(now)
    note = reason or ""
    if command == Command.RETRY:
        if st.phase != Phase.ABORTED:
            raise InputError(
                f"rollout {st.name} is {st.phase.value}: only an aborted rollout can be retried"
            )
        st.phase = Phase.PROGRESSING
        st.attempt += 1
        st.step_index, st.step_started_at, st.analysis = 0, None, None
        st.hold, st.finished_at, st.weight = None, None, 0.0
        if st.reason in ("release_superseded", "candidate_cleared"):
            st.release_id, st.salt = None, None  # that release is gone: start a new one
        _set_reason(st, "retried", f"attempt {st.attempt} from step 0")
        out.event("retried", "manual", attempt=st.attempt, note=note)
        out.wake_at(now)
        return out.decision(st)
    if st.phase in TERMINAL:
        raise InputError(f"rollout {st.name} is {st.phase.value}; nothing to {command.value}")
    if command == Command.ABORT:
        _abort(st, out, "manual_abort", note or "aborted by an operator")
        return out.decision(st)
    if st.phase == Phase.PENDING or st.release_id is None:
        raise InputError(
            f"rollout {st.name} has not started a release yet; run `cohortlens rollout run` first"
        )
    if command == Command.PROMOTE_FULL:
        _finish_promoted(st, out, "manual_promote_full")
        return out.decision(st)
    if command == Command.PAUSE:
        if st.hold is not None and st.hold.reason == HoldReason.MANUAL:
            raise InputError(f"rollout {st.name} is already paused by an operator")
        _hold(st, out, HoldReason.MANUAL, note or "paused by an operator")
        return out.decision(st)
    if command == Command.RESUME:
        if st.hold is None:
            raise InputError(
                f"rollout {st.name} is not held"
                + (
                    "; a pause step waits for `cohortlens rollout promote`"
                    if st.phase == Phase.PAUSED
                    else ""
                )
            )
        _release_hold(st)
        out.event("resumed", "manual", note=note, step=st.step_index)
        _set_reason(st, "resumed", "resumed by an operator")
        _advance(spec, st, out)
        _weight_action(st, status, out)
        return out.decision(st)
    # PROMOTE: skip the current step (ends a pause, an analysis, or a hold).
    if st.step_index >= len(spec.steps):
        _finish_promoted(st, out, "manual_promote")
        return out.decision(st)
    if st.hold is not None:
        _release_hold(st)
    skipped = st.step_index
    _complete_step(st)
    out.event("step_skipped", "manual_promote", step=skipped, note=note)
    _advance(spec, st, out)
    _weight_action(st, status, out)
    return out.decision(st)


def _release_hold(st: RolloutStatus) -> None:
    """Clear a hold; counters that caused it start over so it does not re-trigger at once."""
    hold = st.hold
    st.hold = None
    st.phase = Phase.PROGRESSING
    if st.analysis is not None and hold is not None:
        for cs in st.analysis.checks.values():
            if hold.reason == HoldReason.INCONCLUSIVE:
                cs.inconclusives = 0
            if hold.reason == HoldReason.PROVIDER_ERROR:
                cs.consecutive_errors = 0


def _weight_action(st: RolloutStatus, before: RolloutStatus, out: _Out) -> None:
    """A command that moved the weight applies it (the controller would converge anyway)."""
    if st.phase == Phase.PROMOTED or st.release_id is None:
        return
    if any(isinstance(a, SetWeight) for a in out.actions):
        return
    if abs(st.weight - before.weight) > _WEIGHT_EPS:
        out.actions.append(SetWeight(st.weight, st.release_id, "manual promote"))


__all__ = [
    "Command",
    "MetricsFetch",
    "Observation",
    "Plan",
    "RoutingView",
    "apply_command",
    "initial_status",
    "plan",
    "reconcile",
]
