"""Operator commands as decisions (pure): persisted, then acted on, like a reconcile.

``promote`` skips the current step; ``promote --full`` promotes now, also from Aborted
(Argo Rollouts' behaviour, reason ``ManualPromoteFull``): when the candidate is still
loaded the promotion is immediate, otherwise the command sets a latch that the controller
consumes (start the release again, wait for readiness, promote). ``abort`` sets the weight
to 0 at once; ``pause``/``resume`` hold and release; ``retry`` starts an aborted rollout
again from step 0 (and from the pre-flight).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from cohortlens.errors import InputError
from cohortlens.rollout.controller import (
    Observation,
    Out,
    _abort,
    _complete_step,
    _finish_promoted,
    _hold,
    _set_reason,
    _steps,
    _Tick,
)
from cohortlens.rollout.spec import RolloutSpec
from cohortlens.rollout.state import (
    TERMINAL,
    Decision,
    HoldReason,
    Phase,
    RolloutStatus,
    SetWeight,
)

_WEIGHT_EPS = 1e-9


class Command(StrEnum):
    """Operator commands (``cohortlens rollout ...``)."""

    PROMOTE = "promote"
    PROMOTE_FULL = "promote_full"
    ABORT = "abort"
    PAUSE = "pause"
    RESUME = "resume"
    RETRY = "retry"


def apply_command(
    spec: RolloutSpec,
    status: RolloutStatus,
    command: Command,
    now: datetime,
    *,
    reason: str | None = None,
) -> Decision:
    """An operator's command as a decision.

    Raises:
        InputError: the command does not apply in the current phase.
    """
    st = status.model_copy(deep=True)
    out = Out(now)
    note = reason or ""
    if command == Command.RETRY:
        _retry(st, out, note)
    elif command == Command.PROMOTE_FULL:
        _promote_full(st, out, note)
    elif st.phase in TERMINAL:
        raise InputError(f"rollout {st.name} is {st.phase.value}; nothing to {command.value}")
    elif command == Command.ABORT:
        _abort(st, out, "manual_abort", note or "aborted by an operator")
    elif st.phase == Phase.PENDING or st.release_id is None:
        raise InputError(
            f"rollout {st.name} has not started a release yet; run `cohortlens rollout run` first"
        )
    elif command == Command.PAUSE:
        if st.hold is not None and st.hold.reason == HoldReason.MANUAL:
            raise InputError(f"rollout {st.name} is already paused by an operator")
        _hold(st, out, HoldReason.MANUAL, note or "paused by an operator")
    elif command == Command.RESUME:
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
        _walk(spec, status, st, out)
    else:  # PROMOTE: skip the current step (ends a pause, an analysis, or a hold).
        if st.ready_at is None:
            raise InputError(
                f"rollout {st.name} is waiting for its candidate to be ready "
                f"({st.readiness_message or 'not probed yet'}); `promote --full` skips that too"
            )
        if st.step_index >= len(spec.steps):
            _finish_promoted(st, out, "manual_promote")
        else:
            if st.hold is not None:
                _release_hold(st)
            skipped = st.step_index
            _complete_step(st)
            out.event("step_skipped", "manual_promote", step=skipped, note=note)
            _walk(spec, status, st, out)
    return out.decision(st)


def _retry(st: RolloutStatus, out: Out, note: str) -> None:
    if st.phase != Phase.ABORTED:
        raise InputError(
            f"rollout {st.name} is {st.phase.value}: only an aborted rollout can be retried"
        )
    gone = st.reason in ("release_superseded", "candidate_cleared") or (
        st.scaled_down_at is not None
    )
    st.phase = Phase.PENDING
    st.attempt += 1
    st.step_index, st.step_started_at, st.analysis = 0, None, None
    st.hold, st.finished_at, st.weight = None, None, 0.0
    st.preflight_at = st.started_at = None
    st.scaled_down_at = None
    if gone or st.release_id is None:  # that release is gone: start a new one
        st.release_id, st.salt = None, None
        st.ready_at = st.release_started_at = None
    _set_reason(st, "retried", f"attempt {st.attempt} from step 0")
    out.event("retried", "manual", attempt=st.attempt, note=note)
    out.wake_at(out.now)


def _promote_full(st: RolloutStatus, out: Out, note: str) -> None:
    if st.phase == Phase.PROMOTED:
        raise InputError(f"rollout {st.name} is Promoted; nothing to promote")
    loaded = (
        st.release_id is not None
        and st.scaled_down_at is None
        and st.ready_at is not None
        and st.reason not in ("release_superseded", "candidate_cleared")
    )
    was = st.phase.value
    out.event("promote_full", "ManualPromoteFull", phase_before=was, note=note)
    if loaded:
        _finish_promoted(st, out, "ManualPromoteFull")
        return
    # Nothing loaded to promote yet: a latch the controller consumes once it is ready.
    st.promote_full = True
    if st.phase == Phase.ABORTED:
        st.phase, st.finished_at, st.hold = Phase.PROGRESSING, None, None
        st.release_id = st.salt = None
        st.ready_at = st.release_started_at = st.scaled_down_at = None
    elif st.phase == Phase.PENDING:
        st.phase = Phase.PROGRESSING
    _set_reason(
        st,
        "promote_full_requested",
        f"promote --full (was {was}): the controller promotes once the candidate is ready",
    )
    out.wake_at(out.now)


def _walk(spec: RolloutSpec, before: RolloutStatus, st: RolloutStatus, out: Out) -> None:
    """Advance through the steps now (the next ``set_weight`` is applied by the command)."""
    tick = _Tick(spec, before, st, Observation(routing=None), out)
    _steps(tick)
    if st.phase == Phase.PROMOTED or st.release_id is None or out.has(SetWeight):
        return
    if abs(st.weight - before.weight) > _WEIGHT_EPS:
        out.act(SetWeight(st.weight, st.release_id, "manual promote"))


def _release_hold(st: RolloutStatus) -> None:
    """Clear a hold; what caused it starts over so it does not re-trigger at once.

    Inconclusive and provider-error holds reset those counters; a check's ``count`` or a
    marginal score restarts the analysis step (a fresh judgement).
    """
    hold = st.hold
    st.hold = None
    st.phase = Phase.PROGRESSING
    if st.analysis is None or hold is None:
        return
    if hold.reason in (HoldReason.COUNT_REACHED, HoldReason.MARGINAL_SCORE):
        st.analysis, st.step_started_at = None, None
        return
    for cs in st.analysis.checks.values():
        if hold.reason == HoldReason.INCONCLUSIVE:
            cs.inconclusives = cs.nodata = 0
        if hold.reason == HoldReason.PROVIDER_ERROR:
            cs.consecutive_errors = 0


__all__ = ["Command", "apply_command"]
