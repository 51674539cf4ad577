"""Observed state of a rollout (the persisted status), its actions and its events.

The status is a separate record from the spec (desired state) and is the only memory the
controller has: a controller that restarts reads it and carries on (Argo Rollouts' model).
It is JSON in the store (``rollout_status``) and validated on the way back in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Phase(StrEnum):
    """Where a rollout is: Pending → Progressing(step) ⇄ Paused → Promoted | Aborted."""

    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ABORTED = "Aborted"


TERMINAL = frozenset({Phase.PROMOTED, Phase.ABORTED})


class HoldReason(StrEnum):
    """Why a rollout is held (paused by something other than a pause step)."""

    MANUAL = "manual"
    INCONCLUSIVE = "inconclusive_limit_exceeded"
    PROVIDER_ERROR = "consecutive_error_limit_exceeded"
    #: A check reached its ``count`` with no limit reached (Argo: Inconclusive analysis).
    COUNT_REACHED = "count_reached_inconclusive"
    #: The score judge's final score is marginal (between marginal and pass).
    MARGINAL_SCORE = "score_marginal"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckState(_Model):
    """Counters of one check within the current analysis step."""

    measurements: int = 0
    successes: int = 0
    failures: int = 0
    inconclusives: int = 0
    nodata: int = 0
    errors: int = 0
    consecutive_successes: int = 0
    consecutive_errors: int = 0
    last_outcome: str | None = None
    last_value: float | None = None
    #: The last measured value per version (``candidate``/``stable``), for the exporter.
    last_values: dict[str, float] = Field(default_factory=dict)
    last_message: str = ""


class Judgement(_Model):
    """The score judge's verdict on one measurement round (Kayenta's interim judgement).

    Attributes:
        score: 0..100.
        reason: why the score is what it is (``weighted`` or what zeroed it).
        message: one human sentence.
        zero_for_nodata: the score is 0 only because data was missing; an interim
            judgement like that does not stop the analysis early (the final one counts).
    """

    score: float
    reason: str
    message: str = ""
    zero_for_nodata: bool = False


class AnalysisState(_Model):
    """The analysis step in progress.

    Attributes:
        step_index: the analysis step this belongs to.
        started_at: when the step was entered (guardrail windows start here).
        interval_s: measurement interval.
        needs_baseline: the metrics provider has no baseline scrape inside this step yet;
            the next fetch only sets it.
        window_start: start of the window the next measurement covers.
        next_measurement_at: when the next measurement (or retry) is due.
        measurements: measurements taken in this step.
        checks: per-check counters.
        background: measured during a pause step (decides abort and hold, never advance).
        judgements: the score judge's judgement of each scored round, oldest first.
    """

    step_index: int
    started_at: datetime
    interval_s: float
    needs_baseline: bool
    window_start: datetime
    next_measurement_at: datetime
    measurements: int = 0
    checks: dict[str, CheckState] = Field(default_factory=dict)
    background: bool = False
    judgements: list[Judgement] = Field(default_factory=list)


class Hold(_Model):
    """A pause not caused by a pause step: a human's, or a judgement the controller won't make."""

    reason: HoldReason
    at: datetime
    message: str = ""


class Baseline(_Model):
    """The metrics provider's state after its latest successful fetch (e.g. the last scrape)."""

    at: datetime
    state: dict[str, Any] = Field(default_factory=dict)


class RolloutStatus(_Model):
    """The persisted observed state of one rollout.

    Attributes:
        name: the rollout.
        phase: see :class:`Phase`.
        candidate_model_id: the model being shipped.
        spec_hash: hash of the spec this status was computed from.
        attempt: 1, then +1 on every ``retry``.
        release_id, salt: the routing release this rollout drives (``None`` until started).
        step_index: the current step (``len(steps)`` once all are done).
        step_started_at: when the current step was entered (``None``: not entered yet).
            Timed pauses end at ``step_started_at + duration`` even across restarts.
        weight: the candidate weight (fraction) this status wants in the routing.
        hold: set when paused by a human or by an inconclusive/erroring analysis.
        analysis: the analysis step in progress.
        baseline: the metrics provider's last state.
        reason: machine-readable reason of the latest transition.
        message: human sentence for the latest transition.
        totals: lifetime measurement counts by outcome (for the exporter).
        steps_hash: hash of the steps this status walks (a change restarts at step 0).
        started_at: when this attempt started (for the duration histogram).
        preflight_at: when every provider answered the pre-flight query.
        release_started_at: when this rollout's release was started or adopted (the
            progress deadline runs from here).
        ready_at: when the candidate passed the readiness gate (traffic only after).
        readiness_next_at: when readiness is probed again.
        readiness_message: why the candidate is not ready yet.
        scaled_down_at: when an aborted candidate was unloaded from the routing.
        promote_full: ``promote --full`` latch, consumed by the controller (Argo's
            ``promoteFull``).
        rollback_window: shipping a recent known-good model: straight to 100 % when ready.
    """

    name: str
    phase: Phase
    candidate_model_id: int
    spec_hash: str
    attempt: int = 1
    release_id: int | None = None
    salt: str | None = None
    step_index: int = 0
    step_started_at: datetime | None = None
    weight: float = 0.0
    hold: Hold | None = None
    analysis: AnalysisState | None = None
    baseline: Baseline | None = None
    reason: str = ""
    message: str = ""
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    totals: dict[str, int] = Field(
        default_factory=lambda: {"successful": 0, "failed": 0, "inconclusive": 0, "error": 0}
    )
    steps_hash: str | None = None
    started_at: datetime | None = None
    preflight_at: datetime | None = None
    release_started_at: datetime | None = None
    ready_at: datetime | None = None
    readiness_next_at: datetime | None = None
    readiness_message: str = ""
    scaled_down_at: datetime | None = None
    promote_full: bool = False
    rollback_window: bool = False

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready dict (what ``record_rollout`` stores)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> RolloutStatus:
        """Validate a stored status."""
        return cls.model_validate(data)


# ---------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class StartRelease:
    """Register the candidate in the routing with a new salt (weight 0)."""

    model_id: int
    reason: str

    kind = "start_release"


@dataclass(frozen=True)
class SetWeight:
    """Set the candidate's weight (fraction) of release ``release_id``."""

    weight: float
    release_id: int
    reason: str

    kind = "set_weight"


@dataclass(frozen=True)
class Promote:
    """Make the candidate of ``release_id`` the stable model for everybody."""

    release_id: int
    reason: str

    kind = "promote"


@dataclass(frozen=True)
class ScaleDown:
    """Unload the aborted candidate of ``release_id`` (clear it from the routing)."""

    release_id: int
    reason: str

    kind = "scale_down"


@dataclass(frozen=True)
class SetOverrides:
    """Route exactly these learner ids to the candidate of ``release_id`` whatever the
    weight (an empty tuple removes the override routes)."""

    learner_ids: tuple[str, ...]
    release_id: int
    reason: str

    kind = "set_overrides"


Action = StartRelease | SetWeight | Promote | ScaleDown | SetOverrides


def action_dict(action: Action) -> dict[str, Any]:
    """JSON form of an action (inside event details; override ids are only counted)."""
    data = asdict(action)
    if isinstance(action, SetOverrides):
        data["learner_ids"] = len(action.learner_ids)
    return {"kind": action.kind, **data}


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Event:
    """One history entry: ``kind`` says what happened, ``reason`` why (machine-readable)."""

    kind: str
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_tuple(self) -> tuple[str, str, dict[str, Any]]:
        """The shape ``store.record_rollout`` takes."""
        return (self.kind, self.reason, self.detail)


@dataclass(frozen=True)
class Decision:
    """What a reconcile or a command decided: persist ``status`` and ``events``, then act.

    Attributes:
        status: the new status.
        actions: routing actions, in order, to apply after the status is persisted.
        events: history entries, persisted with the status in one transaction.
        next_wake_at: when the controller should look again (``None``: nothing scheduled).
    """

    status: RolloutStatus
    actions: tuple[Action, ...] = ()
    events: tuple[Event, ...] = ()
    next_wake_at: datetime | None = None

    @property
    def counters(self) -> tuple[str, ...]:
        """Lifetime counters this decision increments in the store (``completed``,
        ``aborted``), in the transaction that persists it."""
        kinds = {"promoted": "completed", "aborted": "aborted"}
        return tuple(kinds[e.kind] for e in self.events if e.kind in kinds)

    @property
    def changed(self) -> bool:
        """True when there is anything to persist or do."""
        return bool(self.actions or self.events)


__all__ = [
    "TERMINAL",
    "Action",
    "AnalysisState",
    "Baseline",
    "CheckState",
    "Decision",
    "Event",
    "Hold",
    "HoldReason",
    "Judgement",
    "Phase",
    "Promote",
    "RolloutStatus",
    "ScaleDown",
    "SetOverrides",
    "SetWeight",
    "StartRelease",
    "action_dict",
]
