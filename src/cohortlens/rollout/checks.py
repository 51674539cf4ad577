"""One measurement of one check: a window of service metrics or guardrail arms → an outcome.

Pure. Five outcomes: ``successful`` and ``failed`` (the success or the failure condition
holds), ``inconclusive`` (some data, but too little to judge, or a value between the success
and the failure condition: the inconclusive band), ``nodata`` (nothing at all in the window:
Kayenta's Nodata; a check with ``must_have_data`` fails instead) and ``error`` (the
provider could not be read), as in Argo Rollouts plus Kayenta's Nodata. The verdicts over
several measurements are in :mod:`cohortlens.rollout.verdict`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from scipy import special

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
    NODATA = "nodata"
    ERROR = "error"


#: Severity order used to summarise several results (worst first).
SEVERITY = (
    Outcome.FAILED,
    Outcome.ERROR,
    Outcome.INCONCLUSIVE,
    Outcome.NODATA,
    Outcome.SUCCESSFUL,
)


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
    #: The measured value per version (``candidate``, ``stable``), where it applies.
    by_version: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (NaN becomes ``None``)."""
        return {
            "outcome": self.outcome.value,
            "value": _num(self.value),
            "message": self.message,
            "by_version": {k: _num(v) for k, v in self.by_version.items()},
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
    success = _or(check.success_max_error_rate, check.max_error_rate)
    detail = {
        "requests": v.requests,
        "errors": v.errors,
        "max_error_rate": check.max_error_rate,
        "success_max_error_rate": success,
    }
    if v.requests < check.min_requests:
        return _too_few(check, check.version, v.requests, check.min_requests, detail)
    rate = v.errors / v.requests
    counts = f"({v.errors:g} of {v.requests:g} requests)"
    outcome, text = _banded(rate, success, check.max_error_rate, lambda x: f"{x:.2%}")
    return CheckResult(
        check.name,
        outcome,
        rate,
        f"{check.version} error rate {text} {counts}",
        detail,
        {check.version: rate},
    )


def _latency(check: LatencyCheck, window: Window) -> CheckResult:
    v = window.version(check.version)
    n = float(sum(v.bucket_counts))
    success = _or(check.success_max_latency_s, check.max_latency_s)
    detail = {
        "requests": n,
        "quantile": check.quantile,
        "max_latency_s": check.max_latency_s,
        "success_max_latency_s": success,
    }
    if n < check.min_requests:
        return _too_few(check, check.version, n, check.min_requests, detail)
    q = histogram_quantile(check.quantile, v.bucket_edges_s, v.bucket_counts)
    label = f"p{check.quantile * 100:g}"
    outcome, text = _banded(q, success, check.max_latency_s, lambda x: f"{x * 1000:.1f} ms")
    return CheckResult(
        check.name,
        outcome,
        q,
        f"{check.version} {label} latency {text}",
        detail,
        {check.version: q},
    )


def _banded(value: float, success: float, failure: float, fmt: Any) -> tuple[Outcome, str]:
    """Failed above ``failure``, successful at or below ``success``, inconclusive between."""
    if value > failure:
        return Outcome.FAILED, f"{fmt(value)} > {fmt(failure)}"
    if value <= success:
        return Outcome.SUCCESSFUL, f"{fmt(value)} <= {fmt(success)}"
    return Outcome.INCONCLUSIVE, (
        f"{fmt(value)} is between the success condition (<= {fmt(success)}) and the "
        f"failure condition (> {fmt(failure)})"
    )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


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
        return _too_few(check, low[0], low[1], check.min_requests, detail)
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
    if not worse and check.success_max_ratio is not None and ratio > check.success_max_ratio:
        verdict = Outcome.INCONCLUSIVE
        text += f": ratio above the success condition (<= {check.success_max_ratio:g})"
    versions = {"candidate": cmp.rate_candidate, "stable": cmp.rate_stable}
    return CheckResult(check.name, verdict, cmp.pvalue_greater, text, detail, versions)


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
        return _too_few(check, low[0], low[1], check.min_requests, detail)
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
    verdict = Outcome.FAILED if worse else Outcome.SUCCESSFUL
    if not worse and check.success_max_cles is not None and mw.cles > check.success_max_cles:
        verdict = Outcome.INCONCLUSIVE
        text += f": above the success condition (<= {check.success_max_cles:g})"
    p50 = {
        v: histogram_quantile(0.5, counts.bucket_edges_s, counts.bucket_counts)
        for v, counts in (("candidate", c), ("stable", s))
    }
    return CheckResult(check.name, verdict, mw.cles, text, detail, p50)


def evaluate_guardrail(check: GuardrailCheck, arms: GuardrailArms) -> CheckResult:
    """Judge a guardrail with the always-valid confidence sequence of the lift.

    Failed: the interval lies wholly on the harmful side. Successful: it also rules out a
    harm larger than ``max_harm_rel`` of the stable value (non-inferiority). In between
    the data cannot tell yet: inconclusive, with the power the check has *now* to fail a
    candidate that is exactly ``max_harm_rel`` worse (``Φ(margin/se − c)``, ``c`` the
    always-valid boundary multiplier at the current sample size).
    """
    s, c = arms.stable, arms.candidate
    detail: dict[str, Any] = {
        "stable_learners": s.n,
        "candidate_learners": c.n,
        "alpha": check.alpha,
        "tuning_n": check.tuning_n,
        "max_harm_rel": check.max_harm_rel,
    }
    low = _low_version(float(c.n), float(s.n), check.min_learners)
    if low is not None:
        version, n = low
        return _too_few(check, version, n, check.min_learners, detail, unit="routed learners")
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
    versions = {"candidate": est.mean_treatment, "stable": est.mean_control}
    detail |= {
        "mean_stable": est.mean_control,
        "mean_candidate": est.mean_treatment,
        "effect": est.effect_size,
        "seq_ci_lower": est.seq_ci_lower,
        "seq_ci_upper": est.seq_ci_upper,
        "seq_pvalue": est.seq_pvalue,
    }
    sign = 1.0 if check.lower_is_better else -1.0  # harm is a lift in this direction
    if est.status not in (AnalysisStatus.OK, AnalysisStatus.ZERO_BASELINE):
        # Constant data in both arms (e.g. everybody completed): nothing to test; with at
        # least min_learners per arm, a worse constant is a real difference.
        delta = est.mean_treatment - est.mean_control
        worse = sign * delta > 0.0
        return CheckResult(
            check.name,
            Outcome.FAILED if worse else Outcome.SUCCESSFUL,
            delta,
            f"{check.metric}: no variation within the arms ({est.status.value}); candidate "
            f"{est.mean_treatment:.4g} vs stable {est.mean_control:.4g}",
            detail,
            versions,
        )
    lo, hi = est.seq_ci_lower, est.seq_ci_upper
    harmful = lo > 0.0 if check.lower_is_better else hi < 0.0
    margin = None if check.max_harm_rel is None else check.max_harm_rel * abs(est.mean_control)
    worst_case = hi if check.lower_is_better else -lo  # the largest harm still allowed
    power = _power_to_fail(est.std_error, hi - est.effect_size, margin)
    detail |= {
        "margin": margin,
        "harm_upper": worst_case,
        "power": power,
        "std_error": est.std_error,
    }
    text = (
        f"{check.metric}: candidate {est.mean_treatment:.4g} vs stable {est.mean_control:.4g}, "
        f"always-valid {1 - check.alpha:.0%} interval of the lift [{lo:.4g}, {hi:.4g}]"
    )
    if harmful:
        return CheckResult(
            check.name,
            Outcome.FAILED,
            est.effect_size,
            text + ": significantly worse",
            detail,
            versions,
        )
    if check.max_harm_rel is None or margin is None:
        return CheckResult(check.name, Outcome.SUCCESSFUL, est.effect_size, text, detail, versions)
    if worst_case < margin:
        return CheckResult(
            check.name,
            Outcome.SUCCESSFUL,
            est.effect_size,
            text + f": rules out a harm above {check.max_harm_rel:.0%}",
            detail,
            versions,
        )
    return CheckResult(
        check.name,
        Outcome.INCONCLUSIVE,
        est.effect_size,
        text + f": a harm up to {_rel(worst_case, est.mean_control)} is still possible (allowed "
        f"{check.max_harm_rel:.0%}); too little data to tell. Power to detect a "
        f"{check.max_harm_rel:.0%} harm now: {power:.0%}",
        detail,
        versions,
    )


def _power_to_fail(se: float, half_width: float, margin: float | None) -> float | None:
    """P(the always-valid interval lies wholly on the harmful side | true harm = margin).

    The interval is ``effect ± c·se``; with ``c = half_width / se`` taken from the
    interval itself, the check fails when ``effect/se`` passes ``c`` on the harmful side:
    ``Φ(margin/se − c)``.
    """
    if margin is None:
        return None
    if not (se > 0.0 and math.isfinite(se) and math.isfinite(half_width)):
        return math.nan
    return float(special.ndtr(margin / se - half_width / se))


def _rel(harm: float, baseline: float) -> str:
    if baseline == 0.0:
        return f"{harm:.4g}"
    return f"{harm / abs(baseline):.0%}"


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
    check: Any,
    version: str,
    n: float,
    minimum: int,
    detail: dict[str, Any],
    *,
    unit: str = "requests",
) -> CheckResult:
    """NoData when the window is empty (failed with ``must_have_data``), else inconclusive."""
    field_name = "min_learners" if unit != "requests" else "min_requests"
    if n <= 0.0:
        outcome = Outcome.FAILED if check.must_have_data else Outcome.NODATA
        suffix = ": must_have_data" if check.must_have_data else ""
        return CheckResult(
            check.name, outcome, None, f"no {version} {unit} in the window{suffix}", detail
        )
    return CheckResult(
        check.name,
        Outcome.INCONCLUSIVE,
        None,
        f"{n:g} {version} {unit} in the window < {field_name} {minimum}",
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
