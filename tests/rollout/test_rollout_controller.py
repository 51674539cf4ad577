"""The pure state machine: reconcile and commands, driven by hand-made observations.

No store and no I/O: a tiny in-test "world" applies the decided routing actions to a
routing record, as the store would, so the tests read as event sequences (Argo's e2e
style). The runner's integration with real stores is in test_rollout_runner.py.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cohortlens.errors import InputError
from cohortlens.experiments.stats import SufficientStats
from cohortlens.rollout.checks import GuardrailArms
from cohortlens.rollout.commands import Command, apply_command
from cohortlens.rollout.controller import (
    MetricsFetch,
    Observation,
    Readiness,
    initial_status,
    plan,
    reconcile,
)
from cohortlens.rollout.measure import VersionCounts, Window
from cohortlens.rollout.spec import RolloutSpec, parse_spec
from cohortlens.rollout.state import (
    Decision,
    Phase,
    Promote,
    RolloutStatus,
    ScaleDown,
    SetOverrides,
    SetWeight,
    StartRelease,
)
from cohortlens.store.base import Routing

T0 = datetime(2030, 1, 1, tzinfo=UTC)
EDGES = (0.01, 0.1, 0.25, 1.0, math.inf)


def window(
    cand_req: float = 300,
    cand_err: float = 0,
    *,
    stable_req: float = 30_000,
    stable_err: float = 0,
    cand_slow: bool = False,
) -> Window:
    cand_counts = (
        (0.0, 0.0, 0.0, cand_req, 0.0) if cand_slow else (cand_req * 0.5, cand_req * 0.5, 0, 0, 0)
    )
    return Window(
        candidate=VersionCounts(cand_req, cand_err, EDGES, tuple(float(c) for c in cand_counts)),
        stable=VersionCounts(
            stable_req, stable_err, EDGES, (stable_req * 0.5, stable_req * 0.5, 0.0, 0.0, 0.0)
        ),
        window_s=60.0,
    )


HEALTHY_ARMS = GuardrailArms(
    stable=SufficientStats(n=30_000, sum_y=18_000.0, sum_yy=18_000.0),
    candidate=SufficientStats(n=3000, sum_y=1809.0, sum_yy=1809.0),
)
BAD_ARMS = GuardrailArms(
    stable=SufficientStats(n=5000, sum_y=3000.0, sum_yy=3000.0),
    candidate=SufficientStats(n=600, sum_y=200.0, sum_yy=200.0),
)


def routing_of(
    stable: int | None,
    candidate: int | None,
    weight: float,
    salt: str,
    release: int,
    revision: int,
    overrides: tuple[str, ...] = (),
) -> Routing:
    """A routing record (the store's one type)."""
    return Routing(stable, candidate, weight, salt, release, revision, T0, "t", None, overrides)


class World:
    """Applies decided actions to a routing record, like the store; keeps the history.

    Pre-flight answers and readiness are healthy unless a test says otherwise.
    """

    def __init__(self, spec: RolloutSpec) -> None:
        self.spec = spec
        self.now = T0
        self.routing = routing_of(1, None, 0.0, "salt-0", 0, 0)
        self.status = initial_status(spec, T0)
        self.events: list[tuple[float, str, str, dict[str, Any]]] = []
        self.decisions: list[Decision] = []
        self.preflight: dict[str, str | None] = {"metrics": None, "outcomes": None}
        self.ready = Readiness(True, "all replicas serve the candidate")
        self.known_good: tuple[int, ...] = ()

    def apply(self, actions: tuple[Any, ...]) -> None:
        r = self.routing
        for a in actions:
            if isinstance(a, StartRelease):
                r = routing_of(
                    r.stable_model_id,
                    a.model_id,
                    0.0,
                    f"salt-{r.release_id + 1}",
                    r.release_id + 1,
                    r.revision + 1,
                )
            elif isinstance(a, SetWeight):
                assert a.release_id == r.release_id
                r = replace(r, candidate_weight=a.weight, revision=r.revision + 1)
            elif isinstance(a, SetOverrides):
                r = replace(r, overrides=a.learner_ids, revision=r.revision + 1)
            elif isinstance(a, ScaleDown):
                r = replace(
                    r,
                    candidate_model_id=None,
                    candidate_weight=0.0,
                    overrides=(),
                    revision=r.revision + 1,
                )
            elif isinstance(a, Promote):
                r = routing_of(
                    r.candidate_model_id, None, 0.0, r.salt, r.release_id, r.revision + 1
                )
        self.routing = r

    def record(self, d: Decision) -> Decision:
        self.status = d.status
        self.decisions.append(d)
        rel = (self.now - T0).total_seconds()
        self.events += [(rel, e.kind, e.reason, e.detail) for e in d.events]
        self.apply(d.actions)
        return d

    def tick(
        self,
        win: Window | None = None,
        *,
        arms: GuardrailArms = HEALTHY_ARMS,
        error: str | None = None,
        routing: Routing | str | None = "world",
    ) -> Decision:
        """Fetch what the plan asks for (``win`` as the window), reconcile, apply."""
        p = plan(self.spec, self.status, self.now)
        fetch = None
        if p.metrics:
            if error is not None:
                fetch = MetricsFetch(None, {}, error=error)
            elif p.baseline is None:
                fetch = MetricsFetch(None, {"scrape": 0})
            else:
                fetch = MetricsFetch(win if win is not None else window(), {"scrape": 1})
        guard = {name: arms for name, _, _ in p.guardrails}
        seen = self.routing if routing == "world" else routing
        obs = Observation(
            seen,  # type: ignore[arg-type]
            None,
            fetch,
            guard,
            preflight=self.preflight if p.preflight else None,
            readiness=self.ready if p.readiness else None,
            known_good=self.known_good if p.known_good else None,
        )
        return self.record(reconcile(self.spec, self.status, obs, self.now))

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def until_wake(self, d: Decision) -> None:
        assert d.next_wake_at is not None
        self.now = max(self.now, d.next_wake_at)

    def kinds(self) -> list[str]:
        return [k for _, k, _, _ in self.events]


def _spec(**extra: Any) -> RolloutSpec:
    return parse_spec({"name": "r", "candidate_model_id": 7, **extra})


def _run_healthy(w: World, max_ticks: int = 100) -> None:
    for _ in range(max_ticks):
        d = w.tick()
        if w.status.phase in (Phase.PROMOTED, Phase.ABORTED):
            return
        w.until_wake(d)
    raise AssertionError("did not finish")


def test_healthy_rollout_walks_canary_ramp_full_and_promotes() -> None:
    w = World(_spec())
    _run_healthy(w)
    assert w.status.phase == Phase.PROMOTED
    assert w.status.reason == "steps_completed"
    assert w.routing.stable_model_id == 7
    assert w.routing.candidate_model_id is None
    weights = [e[3]["weight"] for e in w.events if e[1] == "weight_set"]
    assert weights == [0.01, 0.1, 1.0]
    assert w.kinds()[:8] == [
        "preflight_passed",
        "started",
        "release_requested",
        "release_started",
        "candidate_ready",
        "step_started",
        "weight_set",
        "step_started",
    ]
    assert "routing_reconciled" not in w.kinds()
    # Each analysis step: one baseline scrape, then 3 successful measurements 60 s apart.
    succeeded = [e for e in w.events if e[1] == "analysis_succeeded"]
    assert [e[3]["step"] for e in succeeded] == [1, 3, 5]
    assert [e[0] for e in succeeded] == [180.0, 360.0, 540.0]
    assert w.kinds()[-1] == "promoted"
    assert w.status.totals["successful"] == 3 * 5 + 3 * 5 + 3 * 2


def test_failure_limit_aborts_and_zeroes_the_weight_in_the_same_decision() -> None:
    w = World(_spec())
    for _ in range(5):  # start, adopt, baseline
        d = w.tick()
        w.until_wake(d)
        if w.status.analysis is not None and not w.status.analysis.needs_baseline:
            break
    assert w.routing.candidate_weight == 0.01
    d1 = w.tick(window(300, 60))  # 20 % errors
    assert w.status.phase == Phase.PROGRESSING
    assert w.status.analysis is not None
    assert w.status.analysis.checks["candidate-error-rate"].failures == 1
    w.until_wake(d1)
    d2 = w.tick(window(300, 60))
    assert w.status.phase == Phase.ABORTED
    assert w.status.weight == 0.0
    assert d2.actions == (SetWeight(0.0, 1, "aborted: failure_limit_exceeded"),)
    assert w.routing.candidate_weight == 0.0
    aborted = next(e for e in w.events if e[1] == "aborted")
    assert aborted[2] == "failure_limit_exceeded"
    assert aborted[3]["check"] == "candidate-error-rate"
    assert "20.00% > 1.00%" in aborted[3]["message"]
    assert aborted[0] == 120.0  # second failed measurement, failure_limit 1


def test_aborted_stays_aborted_until_retry() -> None:
    w = World(_spec(abort_scale_down_delay_s=0))  # keep the aborted candidate loaded
    for _ in range(4):
        w.until_wake(w.tick())
    w.until_wake(w.tick(window(300, 60)))
    w.tick(window(300, 60))
    assert w.status.phase == Phase.ABORTED
    for _ in range(5):  # healthy data changes nothing
        w.advance(60)
        d = w.tick()
        assert d.actions == ()
        assert d.events == ()
    assert w.status.phase == Phase.ABORTED
    # Someone raises the weight by hand: the controller puts it back to 0.
    w.routing = replace(w.routing, candidate_weight=0.05)
    d = w.tick()
    assert d.actions == (SetWeight(0.0, 1, "reconcile"),)
    assert [(e.kind, e.reason) for e in d.events] == [("routing_reconciled", "weight_drift")]
    retried = w.record(apply_command(w.spec, w.status, Command.RETRY, w.now))
    assert retried.status.phase == Phase.PENDING  # from the pre-flight again
    assert retried.status.attempt == 2
    assert retried.status.step_index == 0
    _run_healthy(w)
    assert w.status.phase == Phase.PROMOTED
    assert w.routing.release_id == 1  # the same release (salt) was retried


def test_inconclusive_limit_holds_and_resume_continues() -> None:
    spec = _spec(
        checks=[
            {"type": "error_rate", "name": "err", "max_error_rate": 0.01, "inconclusive_limit": 1}
        ]
    )
    w = World(spec)
    for _ in range(4):
        w.until_wake(w.tick())
    for _ in range(2):
        w.until_wake(w.tick(window(10)))  # 10 requests < min_requests 100
    assert w.status.phase == Phase.PAUSED
    assert w.status.hold is not None
    assert w.status.hold.reason.value == "inconclusive_limit_exceeded"
    # Held: measurements go on, the step does not advance even after successes.
    for _ in range(4):
        w.until_wake(w.tick())
    assert w.status.step_index == 1
    assert w.status.phase == Phase.PAUSED
    d = w.record(apply_command(spec, w.status, Command.RESUME, w.now))
    assert d.status.hold is None
    # consecutive successes accumulated while held count: the step completes at once.
    assert w.status.step_index == 3
    assert w.routing.candidate_weight == 0.1


def test_a_failure_while_held_still_aborts() -> None:
    w = World(_spec())
    for _ in range(4):
        w.until_wake(w.tick())
    w.record(apply_command(w.spec, w.status, Command.PAUSE, w.now, reason="looking"))
    assert w.status.phase == Phase.PAUSED
    w.until_wake(w.tick(window(300, 90)))
    w.tick(window(300, 90))
    assert w.status.phase == Phase.ABORTED
    assert w.routing.candidate_weight == 0.0


@pytest.mark.parametrize(("on_error", "phase"), [("abort", Phase.ABORTED), ("pause", Phase.PAUSED)])
def test_provider_errors_retry_fast_then_abort_or_pause(on_error: str, phase: Phase) -> None:
    spec = _spec(analysis={"on_error": on_error, "error_retry_interval_s": 10})
    w = World(spec)
    for _ in range(4):
        w.until_wake(w.tick())
    start = w.now
    times = []
    for _ in range(5):
        d = w.tick(error="connection refused")
        times.append((w.now - start).total_seconds())
        if w.status.phase == phase:
            break
        w.until_wake(d)
    assert times == [0.0, 10.0, 20.0, 30.0, 40.0]  # limit 4: the 5th error in a row decides
    assert w.status.phase == phase
    assert w.status.reason == "consecutive_error_limit_exceeded"
    if on_error == "pause":
        assert w.routing.candidate_weight == 0.01  # held, never promoted
        for _ in range(10):
            w.until_wake(w.tick())
        assert w.status.phase == Phase.PAUSED
        assert w.status.step_index == 1
        w.record(apply_command(spec, w.status, Command.RESUME, w.now))
        assert w.status.analysis is not None
        assert all(c.consecutive_errors == 0 for c in w.status.analysis.checks.values())
    else:
        assert w.routing.candidate_weight == 0.0


def test_dry_run_checks_are_reported_never_decisive() -> None:
    spec = _spec(
        checks=[
            {"type": "error_rate", "name": "err", "max_error_rate": 0.5},
            {
                "type": "error_rate",
                "name": "strict",
                "max_error_rate": 0.0001,
                "failure_limit": 0,
                "dry_run": True,
            },
        ]
    )
    w = World(spec)
    _run_healthy_with(w, window(300, 3))
    assert w.status.phase == Phase.PROMOTED
    m = [e for e in w.events if e[1] == "measurement"]
    assert all(e[3]["checks"]["strict"]["outcome"] == "failed" for e in m)
    assert all(e[3]["checks"]["strict"]["dry_run"] for e in m)
    assert all(e[2] == "successful" for e in m)


def _run_healthy_with(w: World, win: Window) -> None:
    for _ in range(100):
        d = w.tick(win)
        if w.status.phase in (Phase.PROMOTED, Phase.ABORTED):
            return
        w.until_wake(d)


def test_guardrail_regression_aborts() -> None:
    w = World(_spec())
    for _ in range(4):
        w.until_wake(w.tick())
    w.until_wake(w.tick(arms=BAD_ARMS))
    w.tick(arms=BAD_ARMS)
    assert w.status.phase == Phase.ABORTED
    assert "completion-guardrail" in w.status.message


def test_timed_pause_ends_from_its_persisted_start_across_restarts() -> None:
    spec = _spec(
        steps=[
            {"set_weight": 5},
            {"pause": {"duration_s": 600}},
            {"set_weight": 20},
            {"pause": {}},
        ],
        analysis={"during_pauses": False},  # the timer alone (pause analysis: own tests)
    )
    w = World(spec)
    d = w.tick()
    d = w.tick()
    assert w.status.phase == Phase.PAUSED
    assert w.status.step_index == 1
    assert d.next_wake_at == T0 + timedelta(seconds=600)
    # "Restart": a new reconcile from the persisted status later on, not a new timer.
    stored = RolloutStatus.from_json_dict(w.status.to_json_dict())
    w.status = stored
    w.advance(599)
    w.tick()
    assert w.status.step_index == 1
    w.advance(1)
    w.tick()
    assert w.status.step_index == 3
    assert w.routing.candidate_weight == 0.2
    assert w.status.phase == Phase.PAUSED
    assert w.status.reason == "pause_step"
    with pytest.raises(InputError, match="a pause step waits for `cohortlens rollout promote`"):
        apply_command(spec, w.status, Command.RESUME, w.now)
    w.advance(3600)
    w.tick()
    assert w.status.step_index == 3  # an untimed pause never ends by itself
    w.record(apply_command(spec, w.status, Command.PROMOTE, w.now))
    assert w.status.phase == Phase.PROMOTED
    assert w.routing.stable_model_id == 7


def test_promote_skips_an_analysis_and_applies_the_next_weight() -> None:
    w = World(_spec())
    for _ in range(3):
        w.until_wake(w.tick())
    d = w.record(apply_command(w.spec, w.status, Command.PROMOTE, w.now))
    assert [e.kind for e in d.events][:3] == ["step_skipped", "step_started", "weight_set"]
    assert d.actions == (SetWeight(0.1, 1, "step 2"),)
    assert w.status.step_index == 3
    assert w.routing.candidate_weight == 0.1


def test_promote_full_and_abort_commands() -> None:
    w = World(_spec())
    for _ in range(3):
        w.until_wake(w.tick())
    d = apply_command(w.spec, w.status, Command.PROMOTE_FULL, w.now)
    assert d.status.phase == Phase.PROMOTED
    assert d.actions == (Promote(1, "ManualPromoteFull"),)
    d = apply_command(w.spec, w.status, Command.ABORT, w.now, reason="bad cohorts")
    assert d.status.phase == Phase.ABORTED
    assert d.actions == (SetWeight(0.0, 1, "aborted: manual_abort"),)
    assert d.events[0].detail["message"] == "bad cohorts"


@pytest.mark.parametrize(
    ("phase_setup", "command", "needle"),
    [
        ("pending", Command.PAUSE, "has not started a release"),
        ("pending", Command.RESUME, "has not started a release"),
        ("promoted", Command.PROMOTE_FULL, "is Promoted; nothing to promote"),
        ("running", Command.RETRY, "only an aborted rollout can be retried"),
        ("running", Command.RESUME, "is not held"),
        ("promoted", Command.ABORT, "is Promoted; nothing to abort"),
    ],
)
def test_commands_that_do_not_apply_are_refused(
    phase_setup: str, command: Command, needle: str
) -> None:
    w = World(_spec())
    if phase_setup != "pending":
        for _ in range(3):
            w.until_wake(w.tick())
    if phase_setup == "promoted":
        w.record(apply_command(w.spec, w.status, Command.PROMOTE_FULL, w.now))
    with pytest.raises(InputError, match=needle):
        apply_command(w.spec, w.status, command, w.now)


def test_release_moved_elsewhere_aborts_without_touching_the_routing() -> None:
    w = World(_spec())
    for _ in range(4):
        w.until_wake(w.tick())
    w.routing = routing_of(1, 9, 0.3, "other", 2, 50)
    d = w.tick()
    assert w.status.phase == Phase.ABORTED
    assert w.status.reason == "release_superseded"
    assert d.actions == ()
    assert w.routing.candidate_weight == 0.3
    # A retry starts a release of its own.
    w.record(apply_command(w.spec, w.status, Command.RETRY, w.now))
    assert w.status.release_id is None
    w.routing = routing_of(1, None, 0.0, "other", 2, 51)
    d = w.tick()
    assert isinstance(d.actions[0], StartRelease)


def test_candidate_cleared_or_promoted_outside_the_controller() -> None:
    w = World(_spec())
    for _ in range(4):
        w.until_wake(w.tick())
    w.routing = routing_of(1, None, 0.0, w.routing.salt, 1, 20)
    w.tick()
    assert (w.status.phase, w.status.reason) == (Phase.ABORTED, "candidate_cleared")
    w2 = World(_spec())
    for _ in range(4):
        w2.until_wake(w2.tick())
    w2.routing = routing_of(7, None, 0.0, w2.routing.salt, 1, 20)
    w2.tick()
    assert (w2.status.phase, w2.status.reason) == (Phase.PROMOTED, "promoted_outside_controller")


def test_pending_waits_while_another_candidate_has_traffic() -> None:
    w = World(_spec())
    w.routing = routing_of(1, 4, 0.1, "s", 3, 9)
    d = w.tick()
    assert w.status.phase == Phase.PENDING
    assert d.actions == ()
    assert w.status.reason == "routing_busy"
    assert d.next_wake_at == T0 + timedelta(seconds=60)
    w.routing = routing_of(1, None, 0.0, "s", 3, 10)
    d = w.tick()
    assert d.actions == (StartRelease(7, "rollout started"),)


def test_unreadable_routing_changes_nothing() -> None:
    w = World(_spec())
    w.until_wake(w.tick())
    before = w.status
    d = w.tick(routing=None)
    assert d.status == before
    assert d.actions == ()
    assert d.events == ()
    assert d.next_wake_at == w.now + timedelta(seconds=2)


def test_crash_between_persist_and_act_is_converged_by_the_next_tick() -> None:
    w = World(_spec())
    for _ in range(3):
        w.until_wake(w.tick())
    # Decide the canary weight... but the process dies before applying it.
    w.routing = replace(w.routing, candidate_weight=0.0)
    d = w.tick()
    assert SetWeight(0.01, 1, "reconcile") in d.actions
    assert w.routing.candidate_weight == 0.01


def test_status_survives_json_round_trip() -> None:
    w = World(_spec())
    for _ in range(6):
        w.until_wake(w.tick())
    assert RolloutStatus.from_json_dict(w.status.to_json_dict()) == w.status


# ---------------------------------------------------------------------------- properties

_STEP_WEIGHTS = {0.0, 0.01, 0.1, 1.0}


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "ok",
                "errors",
                "slow",
                "few",
                "down",
                "bad_guardrail",
                "pause",
                "resume",
                "promote",
                "abort",
                "retry",
            ]
        ),
        min_size=5,
        max_size=60,
    )
)
def test_invariants_under_any_sequence(moves: list[str]) -> None:
    """Weights stay on the step ladder (or 0), never fall except to 0, and Aborted means 0."""
    w = World(_spec())
    last_weight = 0.0
    for move in moves:
        if move in ("pause", "resume", "promote", "abort", "retry"):
            cmd = {
                "pause": Command.PAUSE,
                "resume": Command.RESUME,
                "promote": Command.PROMOTE,
                "abort": Command.ABORT,
                "retry": Command.RETRY,
            }[move]
            with contextlib.suppress(InputError):
                w.record(apply_command(w.spec, w.status, cmd, w.now))
        else:
            win = {
                "ok": window(),
                "errors": window(300, 60),
                "slow": window(cand_slow=True),
                "few": window(5),
            }.get(move)
            d = w.tick(
                win,
                arms=BAD_ARMS if move == "bad_guardrail" else HEALTHY_ARMS,
                error="down" if move == "down" else None,
            )
            if d.next_wake_at is not None:
                w.until_wake(d)
            else:
                w.advance(20)
        st_ = w.status
        assert st_.weight in _STEP_WEIGHTS
        if st_.phase == Phase.ABORTED:
            assert st_.weight == 0.0
            assert w.routing.candidate_weight == 0.0 or w.routing.release_id != st_.release_id
        elif st_.phase != Phase.PROMOTED and w.routing.candidate_model_id == 7:
            assert w.routing.candidate_weight == st_.weight
            assert st_.weight >= last_weight or last_weight == 0.0 or st_.attempt > 1
        if st_.phase == Phase.PROMOTED:
            assert w.routing.stable_model_id == 7
        last_weight = st_.weight if st_.phase != Phase.ABORTED else 0.0
