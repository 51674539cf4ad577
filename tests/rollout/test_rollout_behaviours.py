"""Progressive-delivery behaviours of Argo Rollouts, Flagger and Kayenta, end to end on the
virtual clock with scripted providers (tests/rollout/_scripted.py).

Each test is Given / When / Then and names the behaviour it mirrors; docs/RUNBOOK.md
("Behaviours and their tests") maps each behaviour to its test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.rollout._scripted import T0, World

from cohortlens.errors import InputError
from cohortlens.rollout.commands import Command
from cohortlens.rollout.measure import parse_service_metrics
from cohortlens.rollout.notify import SIGNATURE_HEADER, WebhookNotifier, payload
from cohortlens.rollout.simulation import FleetParams, simulate, simulation_spec
from cohortlens.rollout.spec import RolloutSpec, WebhookSpec
from cohortlens.rollout.state import Phase
from cohortlens.store.duckdb import DuckDBStore

# ---------------------------------------------------------------------------- safety


def test_preflight_failure_keeps_the_weight_at_zero() -> None:
    """Flagger checks metric-provider availability before a canary starts
    (``checkMetricProviderAvailability``); Argo's analysis fails before any traffic moves."""
    # Given a metrics provider that is down before the rollout starts
    w = World({"checks": [{"type": "error_rate", "name": "errors", "max_error_rate": 0.05}]})
    w.metrics.set(at=0, down="ConnectError: [Errno 111] Connection refused")
    # When the controller runs
    w.run()
    # Then it aborts with preflight_failed, naming the provider and its error
    st = w.status
    assert (st.phase, st.reason) == (Phase.ABORTED, "preflight_failed")
    assert "metrics (scripted): ConnectError: [Errno 111] Connection refused" in st.message
    # and no learner ever reached the candidate: the routing was not even touched
    assert w.weights == [(0.0, 0.0)]
    assert w.store.routing().candidate_model_id is None
    assert w.events("release_requested") == []


def test_preflight_queries_the_guardrail_source_too() -> None:
    """Flagger/Argo pre-flight: every provider a check uses is queried before traffic."""
    # Given a guardrail source that cannot be read
    w = World({"checks": [{"type": "guardrail", "name": "completion"}]})
    w.metrics.set(at=0, outcomes="down")
    # When the controller runs
    w.run()
    # Then the rollout aborts before any weight change, naming the source
    assert w.status.reason == "preflight_failed"
    assert "guardrail_source (scripted), metric completed" in w.status.message
    assert "outcomes store unreachable" in w.status.message
    assert max(wt for _, wt in w.weights) == 0.0


def test_no_traffic_until_every_replica_has_loaded_the_candidate() -> None:
    """Argo Rollouts sets a canary weight only once the canary pods are available; Flagger's
    ``canaryReadyThreshold`` (100 %) waits for every canary replica."""
    # Given one replica that has not loaded the candidate for the first 40 s
    w = World({})
    w.metrics.set(at=0, loaded=("replica-a",))
    w.metrics.set(at=40, loaded=("replica-a", "replica-b"))
    # When the controller runs
    w.run(lambda w: w.status.weight > 0)
    # Then the first weight is set only after both replicas report the candidate
    ready = w.events("candidate_ready")[0]
    assert 40 <= w.at(ready) <= 45  # probed every readiness.interval_s (5 s)
    assert w.max_weight_before(w.at(ready)) == 0.0
    waiting = w.events("waiting")[0]
    assert (
        "1 of 2 replicas serve the candidate; replica-b: candidate not loaded"
        in (waiting.detail["message"])
    )
    assert w.at(w.events("weight_set")[0]) == w.at(ready)


def test_progress_deadline_aborts_with_the_weight_at_zero() -> None:
    """Argo Rollouts' ``progressDeadlineSeconds`` with ``progressDeadlineAbort``; Flagger's
    ``progressDeadlineSeconds`` (rollback when canary pods are not ready)."""
    # Given a candidate that no replica can load, and a 120 s progress deadline
    w = World({"progress_deadline_s": 120})
    w.metrics.set(at=0, loaded=())
    # When the controller runs
    w.run()
    # Then the rollout aborts at the deadline with progress_deadline_exceeded, weight 0
    aborted = w.events("aborted")[0]
    assert aborted.reason == "progress_deadline_exceeded"
    assert w.at(aborted) == 120.0
    assert "0 of 2 replicas serve the candidate" in aborted.detail["message"]
    assert [wt for _, wt in w.weights] == [0.0]


def test_an_aborted_candidate_is_unloaded_after_the_scale_down_delay() -> None:
    """Argo Rollouts' ``abortScaleDownDelaySeconds``: traffic to 0 at once, the canary kept
    for the delay, then scaled down."""
    # Given a rollout with a 300 s abort scale-down delay whose candidate fails
    w = World({"abort_scale_down_delay_s": 300})
    w.metrics.set(at=0, candidate_error_rate=0.5)
    # When it aborts
    w.run(lambda w: w.phase() == Phase.ABORTED)
    aborted_at = w.elapsed()
    # Then the weight is 0 at once but the candidate stays loaded for the delay
    r = w.store.routing()
    assert (r.candidate_model_id, r.candidate_weight) == (w.candidate_id, 0.0)
    w.run()  # `run` keeps going until the scale-down is done
    scaled = w.events("scaled_down")[0]
    assert w.at(scaled) == aborted_at + 300
    assert w.store.routing().candidate_model_id is None
    assert {m["model_id"]: m["status"] for m in w.store.models()}[w.candidate_id] == "retired"


def test_a_canary_that_breaks_during_a_pause_is_aborted_before_the_pause_ends() -> None:
    """Argo Rollouts' background analysis: the analysis runs through pause steps, and a
    failure aborts at once instead of at the next analysis step."""
    # Given a 10-minute pause at 10 %, and a candidate that breaks 2 minutes into it
    w = World(
        {
            "analysis": {"interval_s": 30},
            "steps": [{"set_weight": 10}, {"pause": {"duration_s": 600}}, {"set_weight": 50}],
        }
    )
    w.run(lambda w: w.status.step_index == 1 and w.status.phase == Phase.PAUSED)
    pause_start = w.elapsed()
    w.metrics.set(at=pause_start + 120, candidate_error_rate=0.3)
    # When the controller runs
    w.run()
    # Then it aborts within the documented bound, long before the pause would have ended
    aborted = w.events("aborted")[0]
    assert aborted.reason == "failure_limit_exceeded"
    assert aborted.detail["step"] == 1
    assert w.at(aborted) - (pause_start + 120) <= w.spec.rollback_bound_s(1) == 90
    assert w.max_weight_before(w.elapsed() + 1) == 0.1  # never reached 50 %
    measured = [e for e in w.events("measurement") if e.detail["background"]]
    assert measured
    assert all(e.detail["step"] == 1 for e in measured)


def test_an_analysis_step_lasts_at_least_min_duration() -> None:
    """Kayenta's ``lifetimeDurationMins``: a judgement covers a minimum time, however early
    the checks look good."""
    # Given an analysis step with min_duration_s 600 and checks that pass at once
    w = World({"steps": [{"set_weight": 10}, {"analysis": {"min_duration_s": 600}}]})
    # When the rollout runs
    w.run()
    # Then the step ends 600 s after it started, not after 3 successes (180 s)
    started = next(e for e in w.events("step_started") if e.detail["step"] == 1)
    done = w.events("analysis_succeeded")[0]
    assert w.at(done) - w.at(started) == 600.0
    assert done.detail["checks"]["errors"]["consecutive_successes"] >= 3
    assert w.phase() == Phase.PROMOTED


# ---------------------------------------------------------------------------- verdicts


def test_a_value_between_success_and_failure_is_inconclusive_and_pauses() -> None:
    """Argo Rollouts: a measurement meeting neither ``successCondition`` nor
    ``failureCondition`` is Inconclusive; past ``inconclusiveLimit`` the rollout pauses
    (``InconclusiveAnalysisRun``)."""
    # Given success below 1 % errors, failure above 5 %, and a candidate at 3 %
    w = World(
        {
            "checks": [
                {
                    "type": "error_rate",
                    "name": "errors",
                    "success_max_error_rate": 0.01,
                    "max_error_rate": 0.05,
                    "min_requests": 20,
                    "inconclusive_limit": 2,
                }
            ]
        }
    )
    w.metrics.set(at=0, candidate_error_rate=0.03)
    # When the controller runs
    w.run(lambda w: w.phase() in (Phase.PAUSED, Phase.ABORTED))
    # Then each measurement is inconclusive and the third one pauses for a human
    st = w.status
    assert st.hold is not None
    assert st.hold.reason.value == "inconclusive_limit_exceeded"
    outcomes = [e.detail["checks"]["errors"]["outcome"] for e in w.events("measurement")]
    assert outcomes == ["inconclusive"] * 3
    assert "3.00% is between the success condition (<= 1.00%)" in st.hold.message
    assert st.weight == 0.1  # held, neither aborted nor advanced


def test_count_reached_without_a_limit_is_inconclusive() -> None:
    """Argo Rollouts' ``count``: when a metric has taken its measurements without reaching
    a limit, the analysis is Inconclusive and the rollout pauses for a human."""
    # Given a check limited to 4 measurements that needs 3 successes in a row
    w = World(
        {
            "checks": [
                {
                    "type": "error_rate",
                    "name": "errors",
                    "max_error_rate": 0.05,
                    "min_requests": 20,
                    "count": 4,
                    "failure_limit": 3,
                }
            ]
        }
    )
    # and a candidate that alternates between failing and passing
    for i in range(4):
        w.metrics.set(at=60 * i + 30, candidate_error_rate=0.2 if i % 2 == 0 else 0.0)
    # When the controller runs
    w.run(lambda w: w.phase() in (Phase.PAUSED, Phase.ABORTED, Phase.PROMOTED))
    # Then after 4 measurements it pauses as inconclusive (count reached)
    st = w.status
    assert st.hold is not None
    assert st.hold.reason.value == "count_reached_inconclusive"
    assert len(w.events("measurement")) == 4
    # and a resume starts the analysis step afresh
    w.metrics.set(candidate_error_rate=0.0)
    w.command(Command.RESUME)
    w.run(lambda w: w.status.step_index >= 2)
    assert w.status.analysis is None or w.status.analysis.step_index == 3


def test_no_data_is_its_own_verdict_and_must_have_data_fails() -> None:
    """Kayenta's Nodata classification, and ``mustHaveData`` (NodataFailMetric)."""
    # Given a candidate that receives no requests at all
    lenient = World({})
    lenient.metrics.set(at=0, candidate_requests=0.0)
    # When the controller measures
    lenient.run(lambda w: w.phase() in (Phase.PAUSED, Phase.ABORTED))
    # Then the measurements are NoData, counted toward the inconclusive limit (a pause)
    outcomes = {e.detail["checks"]["errors"]["outcome"] for e in lenient.events("measurement")}
    assert outcomes == {"nodata"}
    assert lenient.status.hold is not None
    assert lenient.status.analysis is not None
    assert lenient.status.analysis.checks["errors"].nodata == 6
    # Given the same with must_have_data
    strict = World(
        {
            "checks": [
                {
                    "type": "error_rate",
                    "name": "errors",
                    "max_error_rate": 0.05,
                    "must_have_data": True,
                }
            ]
        }
    )
    strict.metrics.set(at=0, candidate_requests=0.0)
    strict.run()
    # Then no data is a failure
    assert (strict.phase(), strict.status.reason) == (Phase.ABORTED, "failure_limit_exceeded")
    assert "must_have_data" in strict.status.message


def _judged(**judge: Any) -> dict[str, Any]:
    return {
        "analysis": {"judge": {"pass_score": 95, "marginal_score": 75, "rounds": 3, **judge}},
        "checks": [
            {"type": "error_rate", "name": "errors", "max_error_rate": 0.05, "min_requests": 20},
            {
                "type": "latency",
                "name": "p99",
                "max_latency_s": 0.2,
                "min_requests": 20,
                "weight": 3,
            },
            {"type": "compare_errors", "name": "vs-stable", "min_requests": 20},
        ],
        "steps": [{"set_weight": 20}, {"analysis": {}}],
    }


def test_score_judge_passes_a_healthy_candidate_after_its_rounds() -> None:
    """Kayenta's ``WeightedSumScorer`` and ``ThresholdScoreClassifier``: every metric
    passing scores 100 >= pass; the final judgement promotes."""
    # Given a judge with 3 rounds and a healthy candidate
    w = World(_judged())
    # When the rollout runs
    w.run()
    # Then three rounds score 100 and the step succeeds on the final score
    done = w.events("analysis_succeeded")[0]
    assert done.reason == "score_passed"
    assert done.detail["scores"] == [100.0, 100.0, 100.0]
    assert w.phase() == Phase.PROMOTED


def test_score_judge_stops_early_below_marginal() -> None:
    """Kayenta's standalone canary analysis: an interim score at or below ``marginal`` ends
    the run (TERMINAL) without waiting for the final judgement."""
    # Given a judge and a candidate whose latency (weight 3 of 5) fails from the start
    w = World(_judged())
    w.metrics.set(at=0, candidate_slow=True)
    # When the rollout runs
    w.run()
    # Then the first scored round (100 · 2/5 = 40) aborts it early
    aborted = w.events("aborted")[0]
    assert aborted.reason == "score_below_marginal"
    assert "interim round 1/3: score 40" in aborted.detail["message"]
    assert len(w.events("measurement")) == 1


def test_score_judge_pauses_on_a_marginal_final_score() -> None:
    """Kayenta: a final score between ``marginal`` and ``pass`` is marginal; like Argo's
    Kayenta provider mapping (Inconclusive), the rollout pauses for a human."""
    # Given weights 1 / 8 / 1 and only the comparison with stable failing (score 90)
    spec = _judged(early_stop=False)
    spec["checks"][1]["weight"] = 8
    w = World(spec)
    w.metrics.set(at=0, candidate_error_rate=0.04)  # under 5 %, but 40x stable's 0.1 %
    w.metrics.set(at=0, stable_error_rate=0.001)
    # When the rollout runs
    w.run(lambda w: w.phase() in (Phase.PAUSED, Phase.ABORTED, Phase.PROMOTED))
    # Then the final score (90: >= marginal 75, < pass 95) pauses with score_marginal
    st = w.status
    assert st.hold is not None
    assert st.hold.reason.value == "score_marginal"
    assert st.analysis is not None
    assert [j.score for j in st.analysis.judgements] == [90.0, 90.0, 90.0]
    assert st.analysis.judgements[0].message == "failed: vs-stable"


def test_a_critical_check_aborts_on_its_own_under_the_judge() -> None:
    """Kayenta's ``critical`` metric: when it fails, the canary fails whatever the score."""
    # Given a judge where the error check is critical but weighs little (1 of 21)
    spec = _judged(early_stop=False)
    spec["checks"][0] |= {"critical": True, "failure_limit": 0}
    spec["checks"][1]["weight"] = 20
    w = World(spec)
    w.metrics.set(at=0, candidate_error_rate=0.2)
    # When the rollout runs
    w.run()
    # Then the critical check's first failure aborts, though the others still pass
    aborted = w.events("aborted")[0]
    assert (aborted.reason, aborted.detail["check"]) == ("failure_limit_exceeded", "errors")
    assert len(w.events("measurement")) == 1


def test_a_guardrail_with_too_little_data_is_inconclusive_and_states_its_power() -> None:
    """Kayenta/LaunchDarkly guarded rollouts: no verdict without enough sample; deck-kayenta
    shows low-confidence results. The issue's case: churn doubled on 30 vs 30 learners."""
    # Given a churn guardrail (lower is better) with only 30 learners per arm
    w = World(
        {
            "checks": [
                {
                    "type": "guardrail",
                    "name": "churn",
                    "metric": "churned",
                    "lower_is_better": True,
                    "min_learners": 30,
                    "inconclusive_limit": 1,
                }
            ]
        }
    )
    w.metrics.set(at=0, outcomes="few")
    # When the controller measures
    w.run(lambda w: w.phase() in (Phase.PAUSED, Phase.ABORTED, Phase.PROMOTED))
    # Then the guardrail does not pass: it is inconclusive, with its power stated
    result = w.events("measurement")[0].detail["checks"]["churn"]
    assert result["outcome"] == "inconclusive"
    assert "too little data to tell. Power to detect a 10% harm now:" in result["message"]
    assert 0.0 <= result["detail"]["power"] < 0.5
    assert w.phase() == Phase.PAUSED


# ---------------------------------------------------------------------------- operator control


def test_promote_full_from_aborted() -> None:
    """Argo Rollouts: ``promote --full`` also works on an aborted rollout
    (``TestRolloutAbortRetryPromote``), logged with reason ManualPromoteFull."""
    # Given an aborted rollout whose candidate is still loaded
    w = World({})
    w.run(lambda w: w.status.weight > 0)
    w.command(Command.ABORT, reason="false alarm?")
    assert w.phase() == Phase.ABORTED
    # When an operator promotes it fully
    d = w.command(Command.PROMOTE_FULL, reason="the alarm was the dashboard")
    # Then it is promoted at once, reason ManualPromoteFull in the history
    assert d.status.phase == Phase.PROMOTED
    promoted = w.events("promoted")[0]
    assert promoted.reason == "ManualPromoteFull"
    assert w.events("promote_full")[0].detail["phase_before"] == "Aborted"
    assert w.store.routing().stable_model_id == w.candidate_id


def test_promote_full_from_aborted_after_the_candidate_was_unloaded() -> None:
    """Argo's ``promoteFull`` latch: the controller brings the candidate back, waits for it
    to be ready, then promotes."""
    # Given an aborted rollout whose candidate was scaled down
    w = World({"abort_scale_down_delay_s": 10})
    w.metrics.set(at=0, candidate_error_rate=0.5)
    w.run()
    assert w.store.routing().candidate_model_id is None
    # When an operator promotes it fully and the controller runs
    w.metrics.set(candidate_error_rate=0.0)
    w.command(Command.PROMOTE_FULL)
    w.run()
    # Then a new release is started, checked for readiness, and promoted
    assert (w.phase(), w.status.reason) == (Phase.PROMOTED, "ManualPromoteFull")
    kinds = [e.kind for e in w.events()]
    tail = kinds[kinds.index("promote_full") :]
    assert tail.index("release_requested") < tail.index("candidate_ready") < tail.index("promoted")
    assert w.store.routing().stable_model_id == w.candidate_id


def test_a_new_candidate_supersedes_the_running_release_within_one_tick() -> None:
    """Argo Rollouts: a new revision during a canary aborts the old canary and starts over
    at step 0; Flagger restarts the analysis on a new revision (fluxcd/flagger#30)."""
    # Given a rollout at 10 % with measurements counted
    w = World({})
    w.run(lambda w: w.status.analysis is not None and w.status.analysis.measurements >= 1)
    old = w.candidate_id
    new = w.store.save_model({"m": "v3"}, feature_run_id=None, activate=False)
    # When someone runs the same rollout with a new candidate (its spec is stored at once)
    newer = w.make_spec({"candidate_model_id": new})
    other = w.controller("second-controller", newer)
    assert other.tick().lease == "waiting"  # the first controller still holds the lease
    submitted = w.elapsed()
    # Then the running controller aborts the old release within one tick
    w.tick()
    aborted = w.events("aborted")[0]
    assert (aborted.reason, aborted.detail["superseded_by"]) == ("release_superseded", new)
    assert w.at(aborted) == submitted
    r = w.store.routing()
    assert r.candidate_model_id != old or r.candidate_weight == 0.0
    # and starts the new candidate at step 0 with fresh counters
    st = w.status
    assert (st.candidate_model_id, st.step_index, st.attempt) == (new, 0, 2)
    assert st.analysis is None
    w.candidate_id = new
    w.run()
    assert w.phase() == Phase.PROMOTED
    assert w.store.routing().stable_model_id == new
    assert w.store.rollout_counters()["ship"] == {"aborted": 1, "completed": 1}


def test_editing_the_steps_mid_rollout_restarts_at_step_zero() -> None:
    """Argo Rollouts' ``currentStepHash``: a change to the steps resets the step index."""
    # Given a rollout in its second analysis at 50 %
    w = World({})
    w.run(lambda w: w.status.step_index == 3)
    # When the steps are edited (and the new spec is run)
    edited = w.make_spec({"steps": [{"set_weight": 5}, {"analysis": {}}, {"set_weight": 100}]})
    w.ctrl = w.controller("ctrl", edited)
    w.tick()
    # Then it logs the edit and restarts at step 0, at the new first weight
    changed = w.events("steps_changed")[0]
    assert (changed.reason, changed.detail["step"], changed.detail["weight"]) == (
        "steps_edited",
        3,
        0.5,
    )
    assert (w.status.step_index, w.status.weight) == (1, 0.05)
    assert w.store.routing().candidate_weight == 0.05
    w.run()
    assert w.phase() == Phase.PROMOTED


def test_going_back_to_a_recent_known_good_model_skips_the_steps() -> None:
    """Argo Rollouts' ``rollbackWindow.revisions`` (``TestRollbackAnalysisWithinWindow``):
    reverting to a recent stable revision goes straight to 100 %."""
    # Given model A stable, then B promoted over it, and a rollback window of 2
    w = World({"rollback_window": 2})
    w.run()
    assert w.store.routing().stable_model_id == w.candidate_id
    back = w.stable_id
    w2_spec = w.make_spec({"name": "back", "candidate_model_id": back, "rollback_window": 2})
    ctrl = w.controller("ctrl-2", w2_spec)
    # When a rollout ships model A again
    for _ in range(20):
        res = ctrl.tick()
        if res.status is not None and res.status.phase in (Phase.PROMOTED, Phase.ABORTED):
            break
        w.clock.sleep(5)
    # Then it is promoted without steps or analysis
    events = w.store.rollout_events("back")
    kinds = [e.kind for e in events]
    assert "rollback_window" in kinds
    assert "step_started" not in kinds
    assert "measurement" not in kinds
    assert events[-1].kind == "promoted"
    assert events[-1].reason == "rollback_window"
    assert w.store.routing().stable_model_id == back


def test_override_learners_always_get_the_candidate_until_the_end() -> None:
    """Argo Rollouts' ``setHeaderRoute`` and Flagger's A/B ``match``: chosen requests always
    go to the canary, outside the weighted split, and the route goes away at the end."""
    # Given a rollout with two QA learners as override routes
    w = World({"overrides": ["qa-ana", "qa-bo"]})
    # When the candidate is ready and the rollout runs
    w.run(lambda w: w.status.weight > 0)
    # Then the routing routes them to the candidate from the first step
    assert w.store.routing().overrides == ("qa-ana", "qa-bo")
    overridden = w.events("overrides_set")[0]
    assert overridden.detail["learners"] == 2
    # and removes them at completion
    w.run()
    assert w.store.routing().overrides == ()
    # and at an abort
    aborting = World({"overrides": ["qa-ana"]})
    aborting.metrics.set(at=0, candidate_error_rate=0.5)
    aborting.run(lambda w: w.phase() == Phase.ABORTED)
    assert aborting.store.routing().overrides == ()


def test_override_traffic_is_labelled_and_kept_out_of_the_analysis() -> None:
    """Argo/Flagger header routes: the QA traffic is visible on its own and does not bias
    the canary's statistics (it is not randomized)."""
    # Given a simulated fleet where one learner in 7 is an override learner (20,000 learners:
    # the service checks only, a guardrail has no power on so few)
    base = simulation_spec().to_json_dict()
    spec = RolloutSpec.model_validate(
        base
        | {
            "overrides": [f"learner-{i:06d}" for i in range(0, 20_000, 7)],
            "checks": [c for c in base["checks"] if c["type"] != "guardrail"],
        }
    )
    # When the rollout runs
    r = simulate(spec, seed=2, params=FleetParams(learners=20_000))
    # Then it is promoted, and the fleet served the override learners under their own label
    assert r.phase == Phase.PROMOTED
    assert r.violations == []
    assert r.served["override"] > 0
    assert r.served["candidate"] > 0
    # and the analysis reads only candidate and stable series: override traffic is left out
    sample = (
        "# TYPE cohortlens_http_requests_total counter\n"
        'cohortlens_http_requests_total{route="/r",method="GET",status="200",'
        'model_role="override",model_version="2"} 50\n'
    )
    assert parse_service_metrics(sample, "2").versions["candidate"].requests == 0.0


def test_dry_run_by_pattern_reports_what_would_have_happened() -> None:
    """Argo Rollouts' ``dryRun`` (by metric name pattern) and the analysis run's
    ``dryRunSummary``."""
    # Given a strict latency check made dry-run by the pattern "latency-*"
    w = World(
        {
            "analysis": {"dry_run": ["latency-*"]},
            "checks": [
                {"type": "error_rate", "name": "errors", "max_error_rate": 0.05},
                {
                    "type": "latency",
                    "name": "latency-p99",
                    "max_latency_s": 0.01,
                    "failure_limit": 0,
                },
            ],
        }
    )
    # When the rollout runs with a candidate that would fail that check
    w.run()
    # Then the rollout is promoted, and each analysis says the check would have aborted
    assert w.phase() == Phase.PROMOTED
    done = w.events("analysis_succeeded")
    summary = done[0].detail["dry_run"]
    assert summary["checks"]["latency-p99"]["would"] == "would have aborted"
    assert summary["counts"] == {"failed": 1}
    first = w.events("measurement")[0].detail["checks"]["latency-p99"]
    assert (first["outcome"], first["dry_run"]) == ("failed", True)


# ---------------------------------------------------------------------------- observability


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_weights_values_duration_and_lifetime_counters_are_exported() -> None:
    """Flagger's ``flagger_canary_weight`` (primary and canary),
    ``flagger_canary_metric_analysis`` (last value), ``flagger_canary_duration_seconds``,
    and lifetime ``*_total`` counters that survive a controller restart."""
    # Given a rollout that is aborted once, retried and promoted, by two controller processes
    w = World({})
    w.metrics.set(at=0, candidate_error_rate=0.5)
    w.run(lambda w: w.phase() == Phase.ABORTED)
    w.command(Command.RETRY)
    w.metrics.set(candidate_error_rate=0.01)
    w.ctrl.release()
    w.ctrl = w.controller("ctrl-restarted")  # a new process: its own registry
    from cohortlens.rollout.exporter import ControllerMetrics

    w.exporter = w.ctrl.exporter = ControllerMetrics()
    w.run(lambda w: w.status.weight == 0.5)
    got = _samples(w.exporter.render().decode())
    # Then the gauges show both versions' weights and each check's last value per version
    assert (
        got[("cohortlens_rollout_traffic_weight", (("rollout", "ship"), ("version", "candidate")))]
        == 0.5
    )
    assert (
        got[("cohortlens_rollout_traffic_weight", (("rollout", "ship"), ("version", "stable")))]
        == 0.5
    )
    value = got[
        (
            "cohortlens_rollout_check_value",
            (("check", "errors"), ("rollout", "ship"), ("version", "candidate")),
        )
    ]
    assert value == pytest.approx(0.01)
    # and the lifetime aborted counter comes from the store, not from this process
    assert got[("cohortlens_rollout_aborted_total", (("rollout", "ship"),))] == 1.0
    w.run()
    got = _samples(w.exporter.render().decode())
    assert got[("cohortlens_rollout_completed_total", (("rollout", "ship"),))] == 1.0
    assert (
        got[
            (
                "cohortlens_rollout_duration_seconds_count",
                (("phase", "Promoted"), ("rollout", "ship")),
            )
        ]
        == 1.0
    )
    assert (
        got[("cohortlens_rollout_traffic_weight", (("rollout", "ship"), ("version", "candidate")))]
        == 0.0
    )


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    fail_first: ClassVar[int] = 0
    release: ClassVar[threading.Event] = threading.Event()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).release.wait(timeout=10)
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(503)
        else:
            type(self).received.append((dict(self.headers), body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_webhooks_are_signed_retried_and_never_block_the_controller() -> None:
    """Flagger's webhooks (retries) and Argo Rollouts' notifications
    (``on-rollout-aborted``): a signed POST on each phase change and abort."""
    _Hook.received, _Hook.fail_first = [], 2
    _Hook.release.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        hooks = (WebhookSpec(url=url, backoff_s=0.05, max_attempts=5),)
        # Given a webhook whose endpoint is blocked and then fails twice
        w = World({"notifications": {"webhooks": [h.model_dump() for h in hooks]}})
        outcomes: list[str] = []
        w.ctrl.notifier = WebhookNotifier(
            hooks, env={"COHORTLENS_WEBHOOK_SECRET": "s3cret"}, on_result=outcomes.append
        )
        w.metrics.set(at=0, candidate_error_rate=0.5)
        # When the rollout runs to its abort while the endpoint is still blocked
        w.run()
        # Then the controller was not held up: it finished with every POST still pending
        assert w.phase() == Phase.ABORTED
        assert _Hook.received == []
        _Hook.release.set()
        w.ctrl.notifier.close(timeout_s=10)
        # and the notifications arrived, retried, signed, in order
        bodies = [json.loads(b) for _, b in _Hook.received]
        assert [b["phase"] for b in bodies] == ["Progressing", "Aborted"]
        aborted = bodies[-1]
        assert aborted["event"] == "aborted"
        assert (aborted["release_id"], aborted["step"], aborted["metric"]) == (1, 1, "errors")
        assert aborted["value"] == pytest.approx(0.5)
        for headers, body in _Hook.received:
            expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
            assert headers[SIGNATURE_HEADER] == expected
        assert outcomes == ["delivered", "delivered"]
    finally:
        _Hook.release.set()
        server.shutdown()
        server.server_close()


def test_a_phase_change_by_an_operator_is_notified_by_the_running_controller() -> None:
    """Argo Rollouts' ``on-rollout-aborted`` fires for a manual abort too."""

    class Recorder:
        def __init__(self) -> None:
            self.sent: list[dict[str, Any]] = []

        def notify(self, before: Any, status: Any, events: Any, at: Any) -> bool:
            body = payload(before, status, events, at)
            if body is not None:
                self.sent.append(body)
            return body is not None

    # Given a running rollout whose controller notifies
    w = World({})
    recorder = Recorder()
    w.ctrl.notifier = recorder  # type: ignore[assignment]
    w.run(lambda w: w.status.weight > 0)
    # When an operator aborts it from the CLI, and the controller ticks
    w.command(Command.ABORT, reason="support tickets")
    w.tick()
    # Then the abort was notified, with the operator's reason
    assert [(b["phase"], b["reason"]) for b in recorder.sent][-1] == ("Aborted", "manual_abort")
    assert recorder.sent[-1]["message"] == "support tickets"


def test_a_webhook_without_its_secret_is_refused() -> None:
    """Unsigned notifications are never sent: a missing secret fails at start."""
    with pytest.raises(InputError, match=r"secret_env: \$NOPE is not set"):
        WebhookNotifier((WebhookSpec(url="http://127.0.0.1:9/h", secret_env="NOPE"),), env={})


# ---------------------------------------------------------------------------- the two bugs


def test_healthy_steps_log_weight_set_only() -> None:
    """Argo Rollouts' events: a healthy step is ``RolloutStepCompleted``/``setWeight``,
    never a drift correction (``routing_reconciled`` is for crash recovery only)."""
    # Given a healthy rollout
    w = World({})
    # When it runs to the end
    w.run()
    # Then each weight step logged weight_set, and nothing was reconciled
    assert [e.detail["weight"] for e in w.events("weight_set")] == [0.1, 0.5]
    assert w.events("routing_reconciled") == []


def test_the_lease_is_free_at_once_after_an_error_exit(tmp_path: Any) -> None:
    """Argo Rollouts' leader election releases on shutdown (``ReleaseOnCancel``): a
    successor need not wait for the lease to expire."""
    # Given a controller whose store fails after it took the lease
    store = DuckDBStore(tmp_path / "s.duckdb")
    w = World({}, store=store)
    w.tick()
    assert not store.acquire_lease("rollout/ship", "other", 180, w.clock.now())

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise InputError("rollout ship: stored spec unreadable (test)")

    w.ctrl.store = type("Broken", (), {"__getattr__": lambda s, n: getattr(store, n)})()
    w.ctrl.store.rollout_status = broken  # type: ignore[attr-defined]
    # When its run ends with the error
    with pytest.raises(InputError):
        w.ctrl.run()
    # Then the lease is free at the same instant
    assert store.acquire_lease("rollout/ship", "other", 180, w.clock.now())
    assert w.clock.now() == T0 + timedelta(seconds=w.elapsed())
