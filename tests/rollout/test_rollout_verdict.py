"""The verdicts as pure functions: Argo Rollouts' per-check assessment, Kayenta's scorer and
threshold classifier, and the guardrail's inconclusive band with its stated power."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from scipy import stats

from cohortlens.experiments.stats import SufficientStats
from cohortlens.rollout.checks import CheckResult, GuardrailArms, Outcome, evaluate_guardrail
from cohortlens.rollout.spec import GuardrailCheck, parse_spec
from cohortlens.rollout.state import AnalysisState, CheckState, Judgement
from cohortlens.rollout.verdict import (
    AnalysisPhase,
    assess_check,
    decide,
    dry_run_summary,
    score_round,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _check(**kw: Any) -> Any:
    spec = parse_spec(
        {
            "name": "r",
            "candidate_model_id": 2,
            "checks": [{"type": "error_rate", "name": "c", "max_error_rate": 0.1, **kw}],
            "steps": [{"set_weight": 10}, {"analysis": {}}],
        }
    )
    return spec.checks[0]


@pytest.mark.parametrize(
    ("limits", "counters", "mode", "phase", "reason"),
    [
        ({}, {"failures": 2}, "limits", "failed", "failure_limit_exceeded"),
        ({}, {"failures": 1}, "limits", "running", "running"),  # failure_limit 1: not yet
        ({"failure_limit": 0}, {"failures": 1}, "limits", "failed", "failure_limit_exceeded"),
        ({}, {"consecutive_errors": 5}, "limits", "error", "consecutive_error_limit_exceeded"),
        (
            {},
            {"inconclusives": 4, "nodata": 2},
            "limits",
            "inconclusive",
            "inconclusive_limit_exceeded",
        ),
        (
            {},
            {"consecutive_successes": 3},
            "limits",
            "successful",
            "consecutive_success_limit_reached",
        ),
        (
            {"count": 4},
            {"measurements": 4, "successes": 2},
            "limits",
            "inconclusive",
            "count_reached_inconclusive",
        ),
        (
            {"count": 4},
            {"measurements": 5, "errors": 2},
            "limits",
            "running",
            "running",
        ),  # errors aside
        ({}, {"failures": 9}, "scored", "running", "running"),  # the score decides
        ({}, {"failures": 2}, "critical", "failed", "failure_limit_exceeded"),
        ({}, {"consecutive_successes": 9}, "critical", "running", "running"),
        ({}, {"consecutive_successes": 9}, "background", "running", "running"),  # never advances
        ({}, {"inconclusives": 6}, "background", "inconclusive", "inconclusive_limit_exceeded"),
    ],
)
def test_assess_check_as_argo(
    limits: dict[str, Any], counters: dict[str, int], mode: Any, phase: str, reason: str
) -> None:
    v = assess_check(_check(**limits), CheckState(**counters), mode)
    assert (v.phase.value, v.reason) == (phase, reason)


def _spec_judge(**judge: Any) -> Any:
    return parse_spec(
        {
            "name": "r",
            "candidate_model_id": 2,
            "analysis": {"judge": judge},
            "checks": [
                {"type": "error_rate", "name": "a", "max_error_rate": 0.1},
                {"type": "error_rate", "name": "b", "max_error_rate": 0.1, "weight": 3},
                {"type": "error_rate", "name": "c", "max_error_rate": 0.1},
                {"type": "error_rate", "name": "d", "max_error_rate": 0.1, "dry_run": True},
            ],
            "steps": [{"set_weight": 10}, {"analysis": {}}],
        }
    )


def _results(**outcomes: str) -> list[CheckResult]:
    return [CheckResult(name, Outcome(o), None, "") for name, o in outcomes.items()]


@pytest.mark.parametrize(
    ("outcomes", "score", "reason"),
    [
        # weights a 1, b 3, c 1: every check passes
        ({"a": "successful", "b": "successful", "c": "successful"}, 100.0, "weighted"),
        # b fails: (1 + 1) / 5
        ({"a": "successful", "b": "failed", "c": "successful"}, 40.0, "weighted"),
        # c without data counts as passing (Kayenta's effectiveScore): (1 + 1) / 5 with b failed
        ({"a": "successful", "b": "failed", "c": "nodata"}, 40.0, "weighted"),
        # a fails: 3 / 4 (c's error is not scored; the dry-run check never counts)
        ({"a": "failed", "b": "successful", "c": "error", "d": "failed"}, 75.0, "weighted"),
        # two of three without data: Kayenta's NODATA_THRESHOLD (50 %) → 0
        ({"a": "successful", "b": "inconclusive", "c": "nodata"}, 0.0, "too_much_nodata"),
    ],
)
def test_score_round_as_kayenta(outcomes: dict[str, str], score: float, reason: str) -> None:
    spec = _spec_judge()
    j = score_round(spec, spec.checks, _results(**outcomes))
    assert j is not None
    assert (j.score, j.reason) == (score, reason)


def test_a_critical_check_that_does_not_pass_scores_zero() -> None:
    spec = _spec_judge()
    checks = [c.model_copy(update={"critical": c.name == "c"}) for c in spec.checks]
    failed = score_round(spec, checks, _results(a="successful", b="successful", c="failed"))
    assert failed is not None
    assert (failed.score, failed.reason, failed.zero_for_nodata) == (
        0.0,
        "critical_check_not_passed",
        False,
    )
    missing = score_round(spec, checks, _results(a="successful", b="successful", c="nodata"))
    assert missing is not None
    assert (missing.score, missing.zero_for_nodata) == (0.0, True)
    assert score_round(spec, checks, _results(a="error")) is None


def _analysis(*scores: float, nodata: bool = False) -> AnalysisState:
    return AnalysisState(
        step_index=1,
        started_at=T0,
        interval_s=60,
        needs_baseline=False,
        window_start=T0,
        next_measurement_at=T0,
        measurements=len(scores),
        judgements=[Judgement(score=s, reason="weighted", zero_for_nodata=nodata) for s in scores],
    )


@pytest.mark.parametrize(
    ("scores", "nodata", "phase", "reason"),
    [
        ((100.0,), False, "running", "running"),
        ((74.0,), False, "failed", "score_below_marginal"),  # interim, early stop
        ((0.0,), True, "running", "running"),  # an interim zero for missing data waits
        ((100.0, 100.0, 95.0), False, "successful", "score_passed"),
        ((100.0, 100.0, 80.0), False, "inconclusive", "score_marginal"),
        ((100.0, 100.0, 70.0), False, "failed", "score_below_marginal"),
        ((100.0, 100.0, 0.0), True, "failed", "score_below_marginal"),  # final: no data fails
    ],
)
def test_the_threshold_classifier(
    scores: tuple[float, ...], nodata: bool, phase: str, reason: str
) -> None:
    spec = _spec_judge(pass_score=95, marginal_score=75, rounds=3)
    v = decide(spec, _analysis(*scores, nodata=nodata), T0)
    assert (v.phase.value, v.reason) == (phase, reason)


def test_min_duration_delays_a_success() -> None:
    spec = parse_spec(
        {
            "name": "r",
            "candidate_model_id": 2,
            "checks": [{"type": "error_rate", "name": "c", "max_error_rate": 0.1}],
            "steps": [{"set_weight": 10}, {"analysis": {"min_duration_s": 300}}],
        }
    )
    a = _analysis()
    a.measurements = 3
    a.checks = {"c": CheckState(consecutive_successes=3)}
    early = decide(spec, a, T0 + timedelta(seconds=200))
    assert (early.phase, early.wait_until) == (AnalysisPhase.RUNNING, T0 + timedelta(seconds=300))
    assert decide(spec, a, T0 + timedelta(seconds=300)).phase == AnalysisPhase.SUCCESSFUL


def test_dry_run_summary_says_what_would_have_happened() -> None:
    spec = _spec_judge()
    a = _analysis()
    a.checks = {"d": CheckState(failures=2, measurements=2)}
    summary = dry_run_summary(spec, a)
    assert summary["checks"]["d"]["would"] == "would have aborted"
    assert summary["counts"] == {"failed": 1}


# ---------------------------------------------------------------------------- guardrail band


def _binary(n: int, p: float, rng: np.random.Generator) -> SufficientStats:
    y = (rng.random(n) < p).astype(float)
    return SufficientStats.from_arrays(y)


def test_guardrail_band_on_exact_arms() -> None:
    check = GuardrailCheck(type="guardrail", name="g")  # max_harm_rel 0.1
    ok = GuardrailArms(
        SufficientStats(n=30_000, sum_y=18_000.0, sum_yy=18_000.0),
        SufficientStats(n=3000, sum_y=1809.0, sum_yy=1809.0),
    )
    r = evaluate_guardrail(check, ok)
    assert r.outcome == Outcome.SUCCESSFUL
    assert r.detail["harm_upper"] < r.detail["margin"] == pytest.approx(0.06)
    few = GuardrailArms(
        SufficientStats(n=600, sum_y=360.0, sum_yy=360.0),
        SufficientStats(n=600, sum_y=354.0, sum_yy=354.0),
    )
    r = evaluate_guardrail(check, few)
    assert r.outcome == Outcome.INCONCLUSIVE
    assert "too little data to tell" in r.message
    # Power = Φ(margin/se − c), with c read off the interval: recompute it directly.
    d = r.detail
    c = (d["seq_ci_upper"] - d["effect"]) / d["std_error"]
    assert d["power"] == pytest.approx(stats.norm.cdf(d["margin"] / d["std_error"] - c))
    legacy = GuardrailCheck(type="guardrail", name="g", max_harm_rel=None)
    assert evaluate_guardrail(legacy, few).outcome == Outcome.SUCCESSFUL


def test_stated_power_matches_the_failure_rate_of_simulated_harm() -> None:
    """Independent check: with the candidate truly ``max_harm_rel`` worse, the share of
    simulated samples the check fails is the power it states (within Monte-Carlo error)."""
    rng = np.random.default_rng(7)
    check = GuardrailCheck(type="guardrail", name="g", tuning_n=4000)
    n_s, n_c, p_s = 20_000, 1000, 0.6
    p_c = p_s * (1 - check.max_harm_rel)  # exactly the margin
    expected = evaluate_guardrail(
        check,
        GuardrailArms(
            SufficientStats(n=n_s, sum_y=p_s * n_s, sum_yy=p_s * n_s),
            SufficientStats(n=n_c, sum_y=p_c * n_c, sum_yy=p_c * n_c),
        ),
    ).detail["power"]
    sims = 600
    failed = sum(
        evaluate_guardrail(
            check, GuardrailArms(_binary(n_s, p_s, rng), _binary(n_c, p_c, rng))
        ).outcome
        == Outcome.FAILED
        for _ in range(sims)
    )
    assert 0.2 < expected < 0.8  # a design where power is informative
    se = (expected * (1 - expected) / sims) ** 0.5
    assert abs(failed / sims - expected) < 4 * se + 0.02
