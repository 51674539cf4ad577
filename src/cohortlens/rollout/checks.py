"""One measurement of one check: a window of service metrics or guardrail arms → an outcome.

Pure. Four outcomes, as in Argo Rollouts: ``successful``, ``failed``, ``inconclusive`` (not
enough data to judge: too few requests or learners, or no stable traffic to compare with)
and ``error`` (the provider could not be read). The controller turns counts of these into
decisions (:mod:`cohortlens.rollout.controller`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cohortlens.experiments.analysis import compare
from cohortlens.experiments.errors import AnalysisStatus
from cohortlens.experiments.sequential import SequentialParams
from cohortlens.experiments.spec import MetricKind
from cohortlens.experiments.stats import SufficientStats
from cohortlens.rollout.measure import (
    Window,
    compare_error_rates,
    histogram_quantile,
    mann_whitney_buckets,
)
from cohortlens.rollout.spec import (
    CompareErrorsCheck,
    CompareLatencyCheck,
    ErrorRateCheck,
    GuardrailCheck,
    LatencyCheck,
)


class Outcome(StrEnum):
    """Result class of one measurement."""

    SUCCESSFUL = "successful"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"


#: Severity order used to summarise several results (worst first).
SEVERITY = (Outcome.FAILED, Outcome.ERROR, Outcome.INCONCLUSIVE, Outcome.SUCCESSFUL)


@dataclass(frozen=True)
class GuardrailArms:
    """Sufficient statistics of one outcome metric for stable- and candidate-routed learners."""

    stable: SufficientStats
    candidate: SufficientStats


@dataclass(frozen=True)
class CheckResult:
    """One measurement of one check.

    Attributes:
        check: the check's name.
        outcome: successful / failed / inconclusive / error.
        value: the measured quantity (error rate, latency in seconds, p-value's statistic
            or effect), ``None`` when there was nothing to measure.
        message: one human sentence saying why.
        detail: the numbers behind the verdict (JSON-ready).
    """

    check: str
    outcome: Outcome
    value: float | None
    message: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (NaN becomes ``None``)."""
        return {
            "outcome": self.outcome.value,
            "value": _num(self.value),
            "message": self.message,
            "detail": {k: _num(v) if isinstance(v, float) else v for k, v in self.detail.items()},
        }


def error_result(check: str, message: str) -> CheckResult:
    """The provider behind ``check`` could not be read."""
    return CheckResult(check, Outcome.ERROR, None, message)


def evaluate_service_check(check: Any, window: Window) -> CheckResult:
    """Judge a service-metrics check on one window."""
    if isinstance(check, ErrorRateCheck):
        return _error_rate(check, window)
    if isinstance(check, LatencyCheck):
        return _latency(check, window)
    if isinstance(check, CompareErrorsCheck):
        return _compare_errors(check, window)
    if isinstance(check, CompareLatencyCheck):
        return _compare_latency(check, window)
    raise TypeError(f"{type(check).__name__} is not a service-metrics check")


def _error_rate(check: ErrorRateCheck, window: Window) -> CheckResult:
    v = window.version(check.version)
    detail = {"requests": v.requests, "errors": v.errors, "max_error_rate": check.max_error_rate}
    if v.requests < check.min_requests:
        return _too_few(check.name, check.version, v.requests, check.min_requests, detail)
    rate = v.errors / v.requests
    if rate > check.max_error_rate:
        return CheckResult(
            check.name,
            Outcome.FAILED,
            rate,
            f"{check.version} error rate {rate:.2%} > {check.max_error_rate:.2%} "
            f"({v.errors:g} of {v.requests:g} requests)",
            detail,
        )
    return CheckResult(
        check.name,
        Outcome.SUCCESSFUL,
        rate,
        f"{check.version} error rate {rate:.2%} <= {check.max_error_rate:.2%}",
        detail,
    )


def _latency(check: LatencyCheck, window: Window) -> CheckResult:
    v = window.version(check.version)
    n = float(sum(v.bucket_counts))
    detail = {"requests": n, "quantile": check.quantile, "max_latency_s": check.max_latency_s}
    if n < check.min_requests:
        return _too_few(check.name, check.version, n, check.min_requests, detail)
    q = histogram_quantile(check.quantile, v.bucket_edges_s, v.bucket_counts)
    label = f"p{check.quantile * 100:g}"
    if q > check.max_latency_s:
        return CheckResult(
            check.name,
            Outcome.FAILED,
            q,
            f"{check.version} {label} latency {q * 1000:.1f} ms > {check.max_latency_s * 1000:g} ms",
            detail,
        )
    return CheckResult(
        check.name,
        Outcome.SUCCESSFUL,
        q,
        f"{check.version} {label} latency {q * 1000:.1f} ms <= {check.max_latency_s * 1000:g} ms",
        detail,
    )


def _compare_errors(check: CompareErrorsCheck, window: Window) -> CheckResult:
    c, s = window.candidate, window.stable
    detail: dict[str, Any] = {
        "candidate_requests": c.requests,
        "candidate_errors": c.errors,
        "stable_requests": s.requests,
        "stable_errors": s.errors,
        "alpha": check.alpha,
        "max_ratio": check.max_ratio,
        "min_rate_diff": check.min_rate_diff,
    }
    low = _low_version(c.requests, s.requests, check.min_requests)
    if low is not None:
        return _too_few(check.name, low[0], low[1], check.min_requests, detail)
    cmp = compare_error_rates(c.errors, c.requests, s.errors, s.requests)
    ratio = cmp.rate_candidate / cmp.rate_stable if cmp.rate_stable > 0 else math.inf
    if cmp.rate_candidate == 0.0:
        ratio = 0.0 if cmp.rate_stable > 0 else 1.0
    detail |= {"z": cmp.z, "pvalue": cmp.pvalue_greater, "ratio": ratio, "test": cmp.method}
    diff = cmp.rate_candidate - cmp.rate_stable
    worse = (
        cmp.pvalue_greater < check.alpha and ratio > check.max_ratio and diff > check.min_rate_diff
    )
    verdict = Outcome.FAILED if worse else Outcome.SUCCESSFUL
    text = (
        f"candidate error rate {cmp.rate_candidate:.2%} vs stable {cmp.rate_stable:.2%} "
        f"(ratio {ratio:.2f}, one-sided p = {cmp.pvalue_greater:.3g})"
    )
    return CheckResult(check.name, verdict, cmp.pvalue_greater, text, detail)


def _compare_latency(check: CompareLatencyCheck, window: Window) -> CheckResult:
    c, s = window.candidate, window.stable
    nc, ns = float(sum(c.bucket_counts)), float(sum(s.bucket_counts))
    detail: dict[str, Any] = {
        "candidate_requests": nc,
        "stable_requests": ns,
        "alpha": check.alpha,
        "max_cles": check.max_cles,
    }
    low = _low_version(nc, ns, check.min_requests)
    if low is not None:
        return _too_few(check.name, low[0], low[1], check.min_requests, detail)
    if c.bucket_edges_s != s.bucket_edges_s:
        return CheckResult(
            check.name,
            Outcome.INCONCLUSIVE,
            None,
            "candidate and stable latency histograms have different buckets",
            detail,
        )
    mw = mann_whitney_buckets(c.bucket_counts, s.bucket_counts)
    detail |= {"u": mw.u, "z": mw.z, "pvalue": mw.pvalue_greater, "cles": mw.cles}
    worse = mw.pvalue_greater < check.alpha and mw.cles > check.max_cles
    text = (
        f"P(candidate slower) = {mw.cles:.3f} (max {check.max_cles:g}), "
        f"Mann–Whitney one-sided p = {mw.pvalue_greater:.3g}"
    )
    return CheckResult(
        check.name, Outcome.FAILED if worse else Outcome.SUCCESSFUL, mw.cles, text, detail
    )


def evaluate_guardrail(check: GuardrailCheck, arms: GuardrailArms) -> CheckResult:
    """Judge a guardrail with the always-valid confidence sequence of the lift."""
    s, c = arms.stable, arms.candidate
    detail: dict[str, Any] = {
        "stable_learners": s.n,
        "candidate_learners": c.n,
        "alpha": check.alpha,
        "tuning_n": check.tuning_n,
    }
    low = _low_version(float(c.n), float(s.n), check.min_learners)
    if low is not None:
        version, n = low
        return CheckResult(
            check.name,
            Outcome.INCONCLUSIVE,
            None,
            f"{n:g} {version}-routed learners with outcomes < min_learners {check.min_learners}",
            detail,
        )
    est = compare(
        s,
        c,
        MetricKind(check.kind),
        alpha=check.alpha,
        sequential=SequentialParams(tuning_n=check.tuning_n),
        metric=check.metric,
        variant="candidate",
        control_name="stable",
    )
    detail |= {
        "mean_stable": est.mean_control,
        "mean_candidate": est.mean_treatment,
        "effect": est.effect_size,
        "seq_ci_lower": est.seq_ci_lower,
        "seq_ci_upper": est.seq_ci_upper,
        "seq_pvalue": est.seq_pvalue,
    }
    if est.status not in (AnalysisStatus.OK, AnalysisStatus.ZERO_BASELINE):
        # Constant data in both arms (e.g. everybody completed): nothing got worse.
        return CheckResult(
            check.name,
            Outcome.SUCCESSFUL,
            est.effect_size,
            f"{check.metric}: no variation to test ({est.status.value})",
            detail,
        )
    lo, hi = est.seq_ci_lower, est.seq_ci_upper
    harmful = lo > 0.0 if check.lower_is_better else hi < 0.0
    text = (
        f"{check.metric}: candidate {est.mean_treatment:.4g} vs stable {est.mean_control:.4g}, "
        f"always-valid {1 - check.alpha:.0%} interval of the lift [{lo:.4g}, {hi:.4g}]"
    )
    if harmful:
        return CheckResult(
            check.name, Outcome.FAILED, est.effect_size, text + ": significantly worse", detail
        )
    return CheckResult(check.name, Outcome.SUCCESSFUL, est.effect_size, text, detail)


def worst(outcomes: list[Outcome]) -> Outcome:
    """The most severe outcome (failed > error > inconclusive > successful)."""
    for o in SEVERITY:
        if o in outcomes:
            return o
    return Outcome.SUCCESSFUL


def _low_version(candidate: float, stable: float, minimum: int) -> tuple[str, float] | None:
    if candidate < minimum:
        return ("candidate", candidate)
    if stable < minimum:
        return ("stable", stable)
    return None


def _too_few(
    name: str, version: str, n: float, minimum: int, detail: dict[str, Any]
) -> CheckResult:
    return CheckResult(
        name,
        Outcome.INCONCLUSIVE,
        None,
        f"{n:g} {version} requests in the window < min_requests {minimum}",
        detail,
    )


def _num(v: float | None) -> float | str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


__all__ = [
    "CheckResult",
    "GuardrailArms",
    "Outcome",
    "error_result",
    "evaluate_guardrail",
    "evaluate_service_check",
    "worst",
]
