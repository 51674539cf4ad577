"""Verdicts: from measurement counters to "advance, abort, or ask a human" (pure).

Two ways to judge an analysis step, as the anchors do:

* **Per-check limits** (Argo Rollouts' ``assessMetricStatus``): a check fails when its
  failed measurements exceed ``failure_limit``, errs when provider errors in a row exceed
  ``consecutive_error_limit``, is inconclusive when inconclusive or no-data measurements
  exceed ``inconclusive_limit`` or when it took ``count`` measurements without reaching
  ``consecutive_success_limit`` successes in a row, and succeeds when it reaches them.
* **Score judge** (Kayenta's ``WeightedSumScorer`` and ``ThresholdScoreClassifier``): every
  measurement round is scored 0..100; a critical check that did not pass, or no data for
  half the checks or more, scores 0; an interim score below ``marginal_score`` ends the
  analysis; the final round needs ``pass_score``, and a marginal one asks a human.
  Critical checks also abort on their own (their ``failure_limit``).

Dry-run checks are judged the same way, for the record only: :func:`dry_run_summary`
reports what they would have done.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from cohortlens.rollout.checks import CheckResult, Outcome
from cohortlens.rollout.spec import AnalysisStep, RolloutSpec, ScoreJudgeSpec
from cohortlens.rollout.state import AnalysisState, CheckState, Judgement

#: Kayenta's NODATA_THRESHOLD: this share of checks without data or more scores 0.
NODATA_SHARE = 0.5


class AnalysisPhase(StrEnum):
    """Where a check, or a whole analysis step, stands (Argo's ``AnalysisPhase``)."""

    RUNNING = "running"
    SUCCESSFUL = "successful"
    FAILED = "failed"
    ERROR = "error"
    INCONCLUSIVE = "inconclusive"


#: How a check is judged: by its own limits (Argo), only for failure and errors (a critical
#: check under a score judge), by the score only, or in the background (a pause step).
Mode = Literal["limits", "critical", "scored", "background"]


@dataclass(frozen=True)
class CheckVerdict:
    """One check's verdict in the current step.

    Attributes:
        check: its name.
        phase: see :class:`AnalysisPhase`.
        reason: machine-readable (``failure_limit_exceeded``, ``count_reached_inconclusive``…).
        message: one human sentence, naming the numbers.
    """

    check: str
    phase: AnalysisPhase
    reason: str
    message: str

    def to_dict(self) -> dict[str, str]:
        """JSON form."""
        return {"phase": self.phase.value, "reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class AnalysisVerdict:
    """The verdict of an analysis step (or of a pause step's background analysis).

    Attributes:
        phase: see :class:`AnalysisPhase`.
        reason: machine-readable.
        message: one human sentence.
        check: the check that decided it, when one did.
        checks: every decisive check's verdict.
        wait_until: a successful step that must still run until then (``min_duration_s``).
    """

    phase: AnalysisPhase
    reason: str
    message: str
    check: str | None = None
    checks: dict[str, CheckVerdict] = field(default_factory=dict)
    wait_until: datetime | None = None


def mode_of(spec: RolloutSpec, check: Any, a: AnalysisState) -> Mode:
    """How ``check`` is judged in analysis ``a``."""
    if a.background:
        return "background"
    if spec.analysis.judge is None:
        return "limits"
    return "critical" if check.critical else "scored"


def assess_check(check: Any, cs: CheckState, mode: Mode) -> CheckVerdict:
    """Argo Rollouts' metric assessment, for one check's counters in the current step."""
    name = check.name
    if mode != "scored" and cs.failures > check.failure_limit:
        return CheckVerdict(
            name,
            AnalysisPhase.FAILED,
            "failure_limit_exceeded",
            f"check {name} failed {cs.failures} time(s) (failure_limit {check.failure_limit}): "
            f"{cs.last_message}",
        )
    if cs.consecutive_errors > check.consecutive_error_limit:
        return CheckVerdict(
            name,
            AnalysisPhase.ERROR,
            "consecutive_error_limit_exceeded",
            f"check {name}: {cs.consecutive_errors} provider errors in a row "
            f"(consecutive_error_limit {check.consecutive_error_limit}): {cs.last_message}",
        )
    if mode == "critical":
        return CheckVerdict(name, AnalysisPhase.RUNNING, "running", "")
    undecided = cs.inconclusives + cs.nodata
    if mode != "scored" and undecided > check.inconclusive_limit:
        return CheckVerdict(
            name,
            AnalysisPhase.INCONCLUSIVE,
            "inconclusive_limit_exceeded",
            f"check {name} inconclusive {cs.inconclusives} and without data {cs.nodata} "
            f"time(s) (inconclusive_limit {check.inconclusive_limit}): {cs.last_message}",
        )
    if mode in ("scored", "background"):
        return CheckVerdict(name, AnalysisPhase.RUNNING, "running", "")
    if cs.consecutive_successes >= check.consecutive_success_limit:
        return CheckVerdict(
            name,
            AnalysisPhase.SUCCESSFUL,
            "consecutive_success_limit_reached",
            f"check {name}: {cs.consecutive_successes} successes in a row",
        )
    taken = cs.measurements - cs.errors
    if check.count is not None and taken >= check.count:
        return CheckVerdict(
            name,
            AnalysisPhase.INCONCLUSIVE,
            "count_reached_inconclusive",
            f"check {name} took its {check.count} measurement(s) with neither "
            f"{check.consecutive_success_limit} successes in a row nor more than "
            f"{check.failure_limit} failure(s): {cs.last_message}",
        )
    return CheckVerdict(name, AnalysisPhase.RUNNING, "running", "")


def analysis_checks(spec: RolloutSpec, a: AnalysisState) -> tuple[Any, ...]:
    """The checks analysis ``a`` measures (a pause step's: its background checks)."""
    if a.background:
        return spec.background_checks(a.step_index)
    return spec.step_checks(a.step_index)


def decide(spec: RolloutSpec, a: AnalysisState, now: datetime) -> AnalysisVerdict:
    """The verdict of analysis ``a`` at ``now`` (pure; called after every measurement).

    Order: a failed check, then provider errors, then the score judge, then an
    inconclusive check; success only when every decisive check (or the final score)
    says so, and not before the step's ``min_duration_s``.
    """
    decisive = [c for c in analysis_checks(spec, a) if not spec.is_dry_run(c)]
    verdicts = {
        c.name: assess_check(c, a.checks.get(c.name, CheckState()), mode_of(spec, c, a))
        for c in decisive
    }
    for phase in (AnalysisPhase.FAILED, AnalysisPhase.ERROR):
        hit = next((v for v in verdicts.values() if v.phase == phase), None)
        if hit is not None:
            return AnalysisVerdict(phase, hit.reason, hit.message, hit.check, verdicts)
    judge = spec.analysis.judge
    if judge is not None and not a.background and a.judgements:
        verdict = _judge(judge, a.judgements, verdicts)
        if verdict is not None:
            return _not_before(spec, a, now, verdict)
    hit = next((v for v in verdicts.values() if v.phase == AnalysisPhase.INCONCLUSIVE), None)
    if hit is not None:
        return AnalysisVerdict(
            AnalysisPhase.INCONCLUSIVE, hit.reason, hit.message, hit.check, verdicts
        )
    if (
        judge is None
        and not a.background
        and a.measurements >= 1
        and all(v.phase == AnalysisPhase.SUCCESSFUL for v in verdicts.values())
    ):
        verdict = AnalysisVerdict(
            AnalysisPhase.SUCCESSFUL,
            "consecutive_success_limit_reached",
            f"every check reached its successes in a row after {a.measurements} measurement(s)",
            None,
            verdicts,
        )
        return _not_before(spec, a, now, verdict)
    return AnalysisVerdict(AnalysisPhase.RUNNING, "running", "", None, verdicts)


def _judge(
    judge: ScoreJudgeSpec, judgements: Sequence[Judgement], verdicts: dict[str, CheckVerdict]
) -> AnalysisVerdict | None:
    last = judgements[-1]
    n = len(judgements)
    text = f"round {n}/{judge.rounds}: score {last.score:g} ({last.message})"
    if n >= judge.rounds:
        if last.score >= judge.pass_score:
            return AnalysisVerdict(
                AnalysisPhase.SUCCESSFUL,
                "score_passed",
                f"{text} >= pass_score {judge.pass_score:g}",
                None,
                verdicts,
            )
        if last.score >= judge.marginal_score:
            return AnalysisVerdict(
                AnalysisPhase.INCONCLUSIVE,
                "score_marginal",
                f"{text}: marginal (>= {judge.marginal_score:g}, < pass {judge.pass_score:g})",
                None,
                verdicts,
            )
        return AnalysisVerdict(
            AnalysisPhase.FAILED,
            "score_below_marginal",
            f"{text} < marginal_score {judge.marginal_score:g}",
            None,
            verdicts,
        )
    if judge.early_stop and not last.zero_for_nodata and last.score < judge.marginal_score:
        return AnalysisVerdict(
            AnalysisPhase.FAILED,
            "score_below_marginal",
            f"interim {text} < marginal_score {judge.marginal_score:g}: stopped early",
            None,
            verdicts,
        )
    return None


def _not_before(
    spec: RolloutSpec, a: AnalysisState, now: datetime, verdict: AnalysisVerdict
) -> AnalysisVerdict:
    """A success waits for the step's ``min_duration_s``."""
    if verdict.phase != AnalysisPhase.SUCCESSFUL:
        return verdict
    step = spec.steps[a.step_index] if a.step_index < len(spec.steps) else None
    hold = step.analysis.min_duration_s if isinstance(step, AnalysisStep) else None
    if hold is None:
        return verdict
    until = a.started_at + timedelta(seconds=hold)
    if now >= until:
        return verdict
    return AnalysisVerdict(
        AnalysisPhase.RUNNING,
        "min_duration",
        f"{verdict.message}; the step lasts at least {hold:g} s",
        None,
        verdict.checks,
        wait_until=until,
    )


def score_round(
    spec: RolloutSpec, checks: Sequence[Any], results: Sequence[CheckResult]
) -> Judgement | None:
    """Kayenta's score of one measurement round (``None`` when nothing was classified).

    Per decisive check measured this round: pass (successful), fail (failed) or no data
    (nodata or inconclusive; provider errors are not classified). A critical check that did
    not pass → 0; half the classified checks or more without data → 0; otherwise the
    weighted share of checks that passed, a check without data counting as passing
    (``WeightedSumScorer``'s ``effectiveScore``), rounded to two decimals.
    """
    by_name = {c.name: c for c in checks}
    labels: list[tuple[Any, str]] = []
    for r in results:
        check = by_name.get(r.check)
        if check is None or spec.is_dry_run(check) or r.outcome == Outcome.ERROR:
            continue
        label = {Outcome.SUCCESSFUL: "pass", Outcome.FAILED: "fail"}.get(r.outcome, "nodata")
        labels.append((check, label))
    if not labels:
        return None
    for check, label in labels:
        if check.critical and label != "pass":
            return Judgement(
                score=0.0,
                reason="critical_check_not_passed",
                message=f"critical check {check.name}: {label}",
                zero_for_nodata=label == "nodata",
            )
    nodata = [c.name for c, label in labels if label == "nodata"]
    if len(nodata) / len(labels) >= NODATA_SHARE:
        return Judgement(
            score=0.0,
            reason="too_much_nodata",
            message=f"{len(nodata)} of {len(labels)} checks without data ({', '.join(nodata)})",
            zero_for_nodata=True,
        )
    total = sum(c.weight for c, _ in labels)
    passed = sum(c.weight for c, label in labels if label != "fail")
    failed = [c.name for c, label in labels if label == "fail"]
    return Judgement(
        score=round(100.0 * passed / total, 2),
        reason="weighted",
        message="failed: " + ", ".join(failed) if failed else "every check passed",
    )


def dry_run_summary(spec: RolloutSpec, a: AnalysisState) -> dict[str, Any]:
    """What the dry-run checks of analysis ``a`` would have decided (Argo's
    ``dryRunSummary``): each one's verdict as if it were decisive, and counts by phase."""
    mode: Mode = "background" if a.background else "limits"
    checks = {}
    for c in analysis_checks(spec, a):
        if not spec.is_dry_run(c):
            continue
        v = assess_check(c, a.checks.get(c.name, CheckState()), mode)
        would = {
            AnalysisPhase.FAILED: "would have aborted",
            AnalysisPhase.ERROR: "would have stopped on provider errors",
            AnalysisPhase.INCONCLUSIVE: "would have paused for a human",
            AnalysisPhase.SUCCESSFUL: "would have let the step advance",
            AnalysisPhase.RUNNING: "had not decided yet",
        }[v.phase]
        checks[c.name] = v.to_dict() | {"would": would}
    counts = Counter(v["phase"] for v in checks.values())
    return {"checks": checks, "counts": dict(sorted(counts.items()))}


__all__ = [
    "AnalysisPhase",
    "AnalysisVerdict",
    "CheckVerdict",
    "Mode",
    "analysis_checks",
    "assess_check",
    "decide",
    "dry_run_summary",
    "mode_of",
    "score_round",
]
