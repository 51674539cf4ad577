"""One measurement of an analysis, as three idempotent steps (Argo's reconcile style).

* :func:`collect`: turn this tick's fetches (a metrics window, guardrail arms, or errors)
  into one :class:`~cohortlens.rollout.checks.CheckResult` per check;
* :func:`record`: fold them into the persisted counters (and the score judge's round);
* :func:`cohortlens.rollout.verdict.decide`: what the counters now say.

Pure: the controller calls them in this order and acts on the verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from cohortlens.rollout.checks import (
    CheckResult,
    Outcome,
    error_result,
    evaluate_guardrail,
    evaluate_service_check,
    worst,
)
from cohortlens.rollout.measure import Window
from cohortlens.rollout.spec import SERVICE_METRIC_TYPES, RolloutSpec
from cohortlens.rollout.state import AnalysisState, Baseline, CheckState, Event, RolloutStatus
from cohortlens.rollout.verdict import analysis_checks, score_round


@dataclass(frozen=True)
class Collected:
    """What one tick measured.

    Attributes:
        results: one result per check measured (errors included).
        baseline: the metrics provider's new state, to keep as the next baseline.
        window: the service-metrics window judged, when there was one.
        baseline_only: the fetch only established a baseline (nothing judged yet).
    """

    results: tuple[CheckResult, ...] = ()
    baseline: Baseline | None = None
    window: Window | None = None
    baseline_only: bool = False


def collect(spec: RolloutSpec, a: AnalysisState, obs: object, now: datetime) -> Collected:
    """Judge each check of analysis ``a`` on this tick's fetches (``obs``: an Observation)."""
    checks = analysis_checks(spec, a)
    results: list[CheckResult] = []
    baseline = window = None
    baseline_only = False
    fetch = getattr(obs, "metrics", None)
    service = [c for c in checks if c.type in SERVICE_METRIC_TYPES]
    if fetch is not None and service:
        if fetch.error is not None:
            results += [error_result(c.name, f"metrics provider: {fetch.error}") for c in service]
        else:
            baseline = Baseline(at=now, state=fetch.state)
            if a.needs_baseline or fetch.window is None:
                baseline_only = True
            else:
                window = fetch.window
                results += [evaluate_service_check(c, window) for c in service]
    arms = getattr(obs, "guardrails", {}) or {}
    for c in checks:
        if c.type != "guardrail" or c.name not in arms:
            continue
        got = arms[c.name]
        if isinstance(got, str):
            results.append(error_result(c.name, f"guardrail source: {got}"))
        else:
            results.append(evaluate_guardrail(c, got))
    return Collected(tuple(results), baseline, window, baseline_only)


def record(
    spec: RolloutSpec, st: RolloutStatus, a: AnalysisState, got: Collected, now: datetime
) -> list[Event]:
    """Fold ``got`` into the status; returns the history events (a ``measurement``)."""
    events: list[Event] = []
    if got.baseline is not None:
        st.baseline = got.baseline
    if got.baseline_only:
        a.needs_baseline = False
        a.window_start = now
        a.next_measurement_at = now + timedelta(seconds=a.interval_s)
        events.append(Event("baseline", "metrics_baseline", {"step": a.step_index}))
    if not got.results:
        return events
    for r in got.results:
        count(a.checks.setdefault(r.check, CheckState()), r)
        st.totals[r.outcome.value] = st.totals.get(r.outcome.value, 0) + 1
    a.measurements += 1
    if got.window is not None:
        a.window_start = now
    errored = any(r.outcome == Outcome.ERROR for r in got.results)
    delay = spec.analysis.error_retry_interval_s if errored else a.interval_s
    a.next_measurement_at = now + timedelta(seconds=delay)
    judgement = None
    if spec.analysis.judge is not None and not a.background:
        judgement = score_round(spec, analysis_checks(spec, a), got.results)
        if judgement is not None:
            a.judgements.append(judgement)
    dry = {c.name for c in analysis_checks(spec, a) if spec.is_dry_run(c)}
    summary = worst([r.outcome for r in got.results if r.check not in dry] or [Outcome.SUCCESSFUL])
    detail = {
        "step": a.step_index,
        "weight": st.weight,
        "measurement": a.measurements,
        "background": a.background,
        "window_s": got.window.window_s if got.window is not None else None,
        "checks": {r.check: r.to_dict() | {"dry_run": r.check in dry} for r in got.results},
    }
    if judgement is not None:
        detail["score"] = judgement.model_dump()
    events.append(Event("measurement", summary.value, detail))
    return events


def count(cs: CheckState, r: CheckResult) -> None:
    """One result into a check's counters (Argo's measurement bookkeeping)."""
    cs.measurements += 1
    cs.last_outcome = r.outcome.value
    cs.last_value = r.value if r.value is not None and math.isfinite(r.value) else None
    if r.by_version:
        cs.last_values = {v: x for v, x in r.by_version.items() if math.isfinite(x)}
    cs.last_message = r.message
    if r.outcome == Outcome.ERROR:
        cs.errors += 1
        cs.consecutive_errors += 1
        return
    cs.consecutive_errors = 0
    if r.outcome == Outcome.SUCCESSFUL:
        cs.successes += 1
        cs.consecutive_successes += 1
        return
    cs.consecutive_successes = 0
    if r.outcome == Outcome.FAILED:
        cs.failures += 1
    elif r.outcome == Outcome.NODATA:
        cs.nodata += 1
    else:
        cs.inconclusives += 1


__all__ = ["Collected", "collect", "count", "record"]
