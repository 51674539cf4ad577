"""The rollout spec (desired state): steps, checks, traffic router and metric sources.

A spec is YAML validated by pydantic; every error names the field path it is about
(``steps[3].analysis.checks``). Weights in ``set_weight`` steps are **percent** (as in Argo
Rollouts' ``setWeight``); the store and the service hold fractions. docs/RUNBOOK.md documents
every field with its default.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from cohortlens.errors import InputError

_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------- checks


class _CheckBase(_Model):
    """Fields every check has: its name and how its measurements turn into decisions.

    Counters are per analysis step (a new step starts from zero), as in Argo Rollouts.
    """

    name: str = Field(pattern=_NAME_PATTERN)
    #: The analysis fails when failed measurements exceed this (0: the first failure aborts).
    failure_limit: int = Field(default=1, ge=0)
    #: The rollout pauses for a human when inconclusive measurements exceed this.
    inconclusive_limit: int = Field(default=5, ge=0)
    #: Provider errors in a row tolerated; one more triggers ``analysis.on_error``.
    consecutive_error_limit: int = Field(default=4, ge=0)
    #: Successful measurements in a row needed before the step may advance.
    consecutive_success_limit: int = Field(default=3, ge=1)
    #: Evaluated and reported, never decisive (no abort, no pause, not awaited to advance);
    #: ``analysis.dry_run`` name patterns make checks dry-run too.
    dry_run: bool = False
    #: Measurements to take in a step (``None``: until a limit is reached). Reaching it
    #: with neither ``consecutive_success_limit`` nor a failure limit reached is
    #: Inconclusive, which pauses for a human (Argo Rollouts' ``count``).
    count: int | None = Field(default=None, ge=1)
    #: Aborts on its own (``failure_limit``) also under a score judge, and zeroes the
    #: judge's score when it does not pass (Kayenta's ``critical``).
    critical: bool = False
    #: Weight in the score judge (Kayenta's group weight; relative to the other checks).
    weight: float = Field(default=1.0, gt=0.0)
    #: A window with no data at all fails instead of being NoData (Kayenta's
    #: ``mustHaveData``).
    must_have_data: bool = False


class ErrorRateCheck(_CheckBase):
    """Absolute threshold: the version's error rate over one interval must stay at or below."""

    type: Literal["error_rate"]
    version: Literal["candidate", "stable"] = "candidate"
    #: Failure condition: the error rate is above this.
    max_error_rate: float = Field(ge=0.0, le=1.0)
    #: Success condition: the error rate is at or below this (default ``max_error_rate``);
    #: between the two the measurement is inconclusive.
    success_max_error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    #: Fewer requests than this in the interval: inconclusive (none at all: NoData).
    min_requests: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _band(self) -> ErrorRateCheck:
        _check_band(self.success_max_error_rate, self.max_error_rate, "success_max_error_rate")
        return self


class LatencyCheck(_CheckBase):
    """Absolute threshold on a latency quantile (from the service's histogram buckets)."""

    type: Literal["latency"]
    version: Literal["candidate", "stable"] = "candidate"
    quantile: float = Field(default=0.99, gt=0.0, lt=1.0)
    #: Failure condition: the quantile is above this.
    max_latency_s: float = Field(gt=0.0)
    #: Success condition: the quantile is at or below this (default ``max_latency_s``).
    success_max_latency_s: float | None = Field(default=None, gt=0.0)
    min_requests: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _band(self) -> LatencyCheck:
        _check_band(self.success_max_latency_s, self.max_latency_s, "success_max_latency_s")
        return self


class CompareErrorsCheck(_CheckBase):
    """Canary vs stable: two-proportion z-test on errors (Kayenta-style comparison).

    Fails when the candidate's error rate is significantly higher (one-sided, ``alpha``)
    *and* more than ``max_ratio`` times the stable one *and* higher by more than
    ``min_rate_diff`` (effect-size floors: a negligible but significant difference at high
    traffic, or three errors instead of one at low traffic, does not abort).
    """

    type: Literal["compare_errors"]
    alpha: float = Field(default=0.01, gt=0.0, lt=1.0)
    max_ratio: float = Field(default=2.0, ge=1.0)
    min_rate_diff: float = Field(default=0.005, ge=0.0, le=1.0)
    #: Success condition: candidate/stable error-rate ratio at or below this (default: any
    #: ratio that does not fail); between the two conditions: inconclusive.
    success_max_ratio: float | None = Field(default=None, ge=0.0)
    min_requests: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _band(self) -> CompareErrorsCheck:
        _check_band(self.success_max_ratio, self.max_ratio, "success_max_ratio")
        return self


class CompareLatencyCheck(_CheckBase):
    """Canary vs stable: Mann–Whitney U on latency histogram deltas (ties within buckets).

    Fails when candidate latencies are significantly larger (one-sided, ``alpha``) *and*
    the common-language effect size ``P(candidate > stable) + ½·P(tie)`` exceeds
    ``max_cles`` (Kayenta's ``effectSize.measure: cles``).
    """

    type: Literal["compare_latency"]
    alpha: float = Field(default=0.01, gt=0.0, lt=1.0)
    max_cles: float = Field(default=0.6, ge=0.5, lt=1.0)
    #: Success condition: ``P(candidate slower)`` at or below this (default: any value that
    #: does not fail); between the two conditions: inconclusive.
    success_max_cles: float | None = Field(default=None, ge=0.0, lt=1.0)
    min_requests: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _band(self) -> CompareLatencyCheck:
        _check_band(self.success_max_cles, self.max_cles, "success_max_cles")
        return self


class GuardrailCheck(_CheckBase):
    """Business guardrail: learner outcomes of candidate-routed vs stable-routed learners.

    Routing is a salted hash, so the two groups are a randomized comparison. Evaluated with
    the always-valid (mSPRT) confidence sequence of :mod:`cohortlens.experiments`, so it
    may be looked at every interval. Fails when the interval lies entirely on the harmful
    side (the metric is significantly worse); succeeds only when it also rules out a
    relative harm larger than ``max_harm_rel`` (non-inferiority); otherwise, with too
    little data to tell, it is inconclusive and states its power to see that harm.
    """

    type: Literal["guardrail"]
    #: Outcome column (``completed``, ``churned`` or ``revenue``).
    metric: str = Field(default="completed", pattern=r"^[a-z_][a-z0-9_]*$")
    kind: Literal["binary", "mean"] = "binary"
    lower_is_better: bool = False
    alpha: float = Field(default=0.01, gt=0.0, lt=1.0)
    #: mSPRT mixture tuning (learners in both arms at which the boundary is tightest).
    tuning_n: int = Field(default=10_000, ge=1)
    #: Fewer learners than this in either arm: inconclusive.
    min_learners: int = Field(default=100, ge=2)
    #: Success condition: the interval of the relative lift excludes a harm larger than
    #: this (0.1: 10 % worse than stable). ``None``: success whenever it does not fail.
    max_harm_rel: float | None = Field(default=0.1, gt=0.0)
    #: Outcomes accumulate over the whole step, so a guardrail waits longer than a
    #: service check before asking a human (20 inconclusive measurements: 20 min at 60 s).
    inconclusive_limit: int = Field(default=20, ge=0)


def _check_band(success: float | None, failure: float, field: str) -> None:
    if success is not None and success > failure:
        raise ValueError(
            f"{field} == {success:g} must be at or below the failure threshold {failure:g} "
            "(values between the two are inconclusive)"
        )


Check = Annotated[
    ErrorRateCheck | LatencyCheck | CompareErrorsCheck | CompareLatencyCheck | GuardrailCheck,
    Field(discriminator="type"),
]
#: Check types that compare the candidate with the stable version (need both to have traffic).
COMPARISON_TYPES = frozenset({"compare_errors", "compare_latency", "guardrail"})
#: Check types that read the service metrics (the others read learner outcomes).
SERVICE_METRIC_TYPES = frozenset({"error_rate", "latency", "compare_errors", "compare_latency"})


# ---------------------------------------------------------------------------- steps


class PauseSpec(_Model):
    """``pause: {}`` waits for ``rollout promote``; ``pause: {duration_s: N}`` for N seconds."""

    duration_s: float | None = Field(default=None, gt=0.0)


class AnalysisStepSpec(_Model):
    """Run checks every interval until each decisive one has enough successes in a row."""

    #: Names of the checks to run; ``None`` runs every check of the spec (at 100 %: every
    #: absolute check, since there is no stable traffic to compare with).
    checks: tuple[str, ...] | None = None
    #: Overrides ``analysis.interval_s`` for this step.
    interval_s: float | None = Field(default=None, gt=0.0)
    #: The step lasts at least this long, whatever the checks say early on.
    min_duration_s: float | None = Field(default=None, gt=0.0)


class SetWeightStep(_Model):
    """Route this percentage of learners to the candidate (weights may only rise)."""

    set_weight: float = Field(ge=0.0, le=100.0)

    @property
    def kind(self) -> str:
        return "set_weight"


class PauseStep(_Model):
    """Hold the current weight for a duration, or until promoted."""

    pause: PauseSpec

    @property
    def kind(self) -> str:
        return "pause"


class AnalysisStep(_Model):
    """Judge the current weight with checks before moving on."""

    analysis: AnalysisStepSpec

    @property
    def kind(self) -> str:
        return "analysis"


_STEP_KEYS = ("set_weight", "pause", "analysis")


def _step_kind(value: Any) -> str | None:
    if isinstance(value, Mapping):
        keys = [k for k in _STEP_KEYS if k in value]
        return keys[0] if len(keys) == 1 else None
    return getattr(value, "kind", None)


Step = Annotated[
    Annotated[SetWeightStep, Tag("set_weight")]
    | Annotated[PauseStep, Tag("pause")]
    | Annotated[AnalysisStep, Tag("analysis")],
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message="a step is a mapping with exactly one key: set_weight, pause or analysis",
    ),
]


# ---------------------------------------------------------------------------- sources


class StoreRouterSpec(_Model):
    """Weights go to the store's routing row; service replicas poll it (PostgreSQL fleet)."""

    kind: Literal["store"] = "store"


class AdminApiRouterSpec(_Model):
    """Weights go through the service's admin HTTP API (one DuckDB-backed server)."""

    kind: Literal["admin_api"]
    url: str = Field(pattern=r"^https?://")
    #: Environment variable holding the bearer token.
    token_env: str = "COHORTLENS_ADMIN_TOKEN"
    timeout_s: float = Field(default=5.0, gt=0.0)


class ServiceMetricsSpec(_Model):
    """Scrape the service's ``/metrics`` (several URLs: replicas, summed)."""

    kind: Literal["service"] = "service"
    urls: tuple[str, ...] = Field(default=("http://127.0.0.1:8000/metrics",), min_length=1)
    timeout_s: float = Field(default=2.0, gt=0.0)
    #: Only count these route templates (``None``: every route served by a model).
    routes: tuple[str, ...] | None = None


class PrometheusMetricsSpec(_Model):
    """Query a Prometheus server's HTTP API (``/api/v1/query``) with PromQL ``increase``."""

    kind: Literal["prometheus"]
    url: str = Field(pattern=r"^https?://")
    #: Extra label matchers added to every selector, e.g. ``job="cohortlens"``.
    selector: str = ""
    timeout_s: float = Field(default=5.0, gt=0.0)
    routes: tuple[str, ...] | None = None


class StoreOutcomesSpec(_Model):
    """Learner outcomes from a store (default: the controller's own ``--db``)."""

    kind: Literal["store_outcomes"] = "store_outcomes"
    db: str | None = None


class ScoreJudgeSpec(_Model):
    """Kayenta-style judge: each measurement round of an analysis step is scored.

    A round's score is the weighted share of checks that passed (a check with no data
    counts as passing, as in Kayenta's ``WeightedSumScorer``), 0 when a critical check did
    not pass or when half the checks or more had no data. An interim score below
    ``marginal_score`` aborts at once (``early_stop``); the ``rounds``-th score is final:
    at least ``pass_score`` advances, at least ``marginal_score`` pauses for a human
    (Inconclusive), below aborts.
    """

    pass_score: float = Field(default=95.0, gt=0.0, le=100.0)
    marginal_score: float = Field(default=75.0, ge=0.0, le=100.0)
    #: Scored rounds per analysis step; the last one is the final judgement.
    rounds: int = Field(default=3, ge=1)
    #: An interim score below ``marginal_score`` ends the analysis (Kayenta's TERMINAL).
    early_stop: bool = True

    @model_validator(mode="after")
    def _order(self) -> ScoreJudgeSpec:
        if self.marginal_score > self.pass_score:
            raise ValueError(
                f"marginal_score == {self.marginal_score:g} must be at or below "
                f"pass_score == {self.pass_score:g}"
            )
        return self


class AnalysisDefaults(_Model):
    """Settings shared by the analysis steps."""

    interval_s: float = Field(default=60.0, gt=0.0)
    #: A failed provider call is retried after this (not after a whole interval).
    error_retry_interval_s: float = Field(default=10.0, gt=0.0)
    #: What a check's consecutive-error limit does: abort (default) or pause; never promote.
    on_error: Literal["abort", "pause"] = "abort"
    #: Measure during pause steps too (background analysis): a failure aborts, too many
    #: inconclusive measurements hold, a success never ends the pause.
    during_pauses: bool = True
    #: Check-name patterns (``fnmatch``: ``latency-*``) that run in dry-run mode.
    dry_run: tuple[str, ...] = ()
    #: Score the checks together (Kayenta) instead of per-check limits (Argo Rollouts).
    judge: ScoreJudgeSpec | None = None


class ReadinessSpec(_Model):
    """What "the candidate is ready" means before it gets any traffic."""

    #: Every replica the metrics provider reads reports the candidate loaded
    #: (``cohortlens_model_info{model_role="candidate"}``).
    replicas: bool = True
    #: The candidate's artifact loads and it has assignments (``router: store`` only: the
    #: controller's store is then the service's).
    store: bool = True
    #: How often readiness is probed while waiting.
    interval_s: float = Field(default=5.0, gt=0.0)


class WebhookSpec(_Model):
    """One notification endpoint: a JSON POST on every phase change and abort."""

    url: str = Field(pattern=r"^https?://")
    #: Environment variable holding the HMAC-SHA256 key of ``X-Cohortlens-Signature``.
    secret_env: str = "COHORTLENS_WEBHOOK_SECRET"
    timeout_s: float = Field(default=5.0, gt=0.0)
    #: Deliveries tried per notification (the first plus retries).
    max_attempts: int = Field(default=5, ge=1)
    #: Delay before the first retry; doubles after each failed attempt.
    backoff_s: float = Field(default=1.0, gt=0.0)


class NotificationsSpec(_Model):
    """Where the controller reports phase changes (never blocking it)."""

    webhooks: tuple[WebhookSpec, ...] = ()


# ---------------------------------------------------------------------------- the spec


def default_checks() -> tuple[Any, ...]:
    """The default checks (docs/RUNBOOK.md explains each)."""
    return (
        ErrorRateCheck(type="error_rate", name="candidate-error-rate", max_error_rate=0.01),
        LatencyCheck(type="latency", name="candidate-p99-latency", max_latency_s=0.25),
        CompareErrorsCheck(type="compare_errors", name="errors-vs-stable"),
        CompareLatencyCheck(type="compare_latency", name="latency-vs-stable"),
        GuardrailCheck(type="guardrail", name="completion-guardrail"),
    )


def default_steps() -> tuple[Any, ...]:
    """Canary 1 % → ramp 10 % → full 100 %, each judged before moving on."""
    return (
        SetWeightStep(set_weight=1),
        AnalysisStep(analysis=AnalysisStepSpec()),
        SetWeightStep(set_weight=10),
        AnalysisStep(analysis=AnalysisStepSpec()),
        SetWeightStep(set_weight=100),
        AnalysisStep(analysis=AnalysisStepSpec()),  # at 100 %: the absolute checks
    )


class RolloutSpec(_Model):
    """Desired state of one rollout: which model, through which steps, judged how."""

    #: Rollout name (lowercase letters, digits, ``.``, ``_``, ``-``).
    name: str = Field(pattern=_NAME_PATTERN)
    #: The cohort model to ship (a ``cohort_models`` id in the service's store).
    candidate_model_id: int = Field(ge=1)
    router: Annotated[StoreRouterSpec | AdminApiRouterSpec, Field(discriminator="kind")] = (
        StoreRouterSpec()
    )
    metrics: Annotated[ServiceMetricsSpec | PrometheusMetricsSpec, Field(discriminator="kind")] = (
        ServiceMetricsSpec()
    )
    guardrail_source: StoreOutcomesSpec = StoreOutcomesSpec()
    analysis: AnalysisDefaults = AnalysisDefaults()
    checks: tuple[Check, ...] = Field(default_factory=default_checks)
    steps: tuple[Step, ...] = Field(default_factory=default_steps)
    #: The controller's lease lifetime; it renews every tick (at most every ttl/3).
    lease_ttl_s: float = Field(default=30.0, gt=0.0)
    #: The candidate must be ready (``readiness``) this long after its release started, or
    #: the rollout aborts with ``progress_deadline_exceeded`` (Argo's
    #: ``progressDeadlineSeconds``).
    progress_deadline_s: float = Field(default=600.0, gt=0.0)
    #: After an abort, the candidate stays loaded (at weight 0) this long, then is unloaded
    #: from the routing (Argo's ``abortScaleDownDelaySeconds``); 0 keeps it loaded.
    abort_scale_down_delay_s: float = Field(default=30.0, ge=0.0)
    readiness: ReadinessSpec = ReadinessSpec()
    #: Shipping one of the last N stable models again skips the steps and the analysis:
    #: straight to 100 % once ready (Argo's ``rollbackWindow.revisions``); 0 disables.
    rollback_window: int = Field(default=0, ge=0)
    #: Learner ids always routed to the candidate while the rollout is in flight (QA,
    #: pilots), whatever the weight; removed at completion or abort. Their traffic is
    #: labelled ``model_role="override"`` and left out of the analysis.
    overrides: tuple[str, ...] = Field(default=(), max_length=10_000)
    notifications: NotificationsSpec = NotificationsSpec()

    @model_validator(mode="after")
    def _coherent(self) -> RolloutSpec:
        names = [c.name for c in self.checks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"checks: names must be unique, repeated: {', '.join(dupes)}")
        blank = [i for i, learner in enumerate(self.overrides) if not learner.strip()]
        if blank:
            raise ValueError(f"overrides[{blank[0]}]: a learner id must not be empty")
        by_name = {c.name: c for c in self.checks}
        weight = 0.0
        problems: list[str] = [] if self.steps else ["steps: at least one step is needed"]
        for i, step in enumerate(self.steps):
            if isinstance(step, SetWeightStep):
                if step.set_weight < weight:
                    problems.append(
                        f"steps[{i}].set_weight: {step.set_weight:g} is below the earlier "
                        f"{weight:g} (weights only rise, so no learner moves back to stable)"
                    )
                weight = step.set_weight
            elif isinstance(step, AnalysisStep):
                wanted = step.analysis.checks
                if wanted is None:
                    wanted = tuple(
                        n
                        for n in names
                        if weight < 100.0 or by_name[n].type not in COMPARISON_TYPES
                    )
                if not wanted:
                    problems.append(f"steps[{i}].analysis.checks: no checks to run")
                unknown = [n for n in wanted if n not in by_name]
                if unknown:
                    problems.append(
                        f"steps[{i}].analysis.checks: unknown check(s) {', '.join(unknown)}; "
                        f"defined: {', '.join(names) or 'none'}"
                    )
                if weight <= 0.0:
                    problems.append(
                        f"steps[{i}].analysis: the candidate has 0 % of traffic here; "
                        "put a set_weight step first"
                    )
                comparing = [
                    n for n in wanted if n in by_name and by_name[n].type in COMPARISON_TYPES
                ]
                if weight >= 100.0 and comparing:
                    problems.append(
                        f"steps[{i}].analysis.checks: {', '.join(comparing)} compare with the "
                        "stable version, which has no traffic at 100 %; list only absolute "
                        "checks (error_rate, latency) here"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- derived --------------------------------------------------------------------------
    def check(self, name: str) -> Any:
        """The check called ``name`` (KeyError when absent)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def step_checks(self, index: int) -> tuple[Any, ...]:
        """The checks an analysis step runs, in spec order."""
        step = self.steps[index]
        if not isinstance(step, AnalysisStep):
            return ()
        wanted = step.analysis.checks
        if wanted is None:
            full = self.weight_at(index) >= 1.0
            return tuple(c for c in self.checks if not (full and c.type in COMPARISON_TYPES))
        return tuple(c for c in self.checks if c.name in wanted)

    def background_checks(self, index: int) -> tuple[Any, ...]:
        """Checks measured during pause step ``index`` (background analysis).

        Every check that applies at the step's weight (absolute ones only at 100 %); none
        at weight 0 or with ``analysis.during_pauses`` off.
        """
        weight = self.weight_at(index)
        if not isinstance(self.steps[index], PauseStep):
            return ()
        if not self.analysis.during_pauses or weight <= 0.0:
            return ()
        full = weight >= 1.0
        return tuple(c for c in self.checks if not (full and c.type in COMPARISON_TYPES))

    def is_dry_run(self, check: Any) -> bool:
        """Whether ``check`` runs in dry-run mode (its flag, or a name pattern)."""
        return bool(check.dry_run) or any(
            fnmatch.fnmatchcase(check.name, p) for p in self.analysis.dry_run
        )

    def steps_hash(self) -> str:
        """SHA-256 of the steps alone: a change restarts a rollout at step 0 (Argo's
        ``currentStepHash``)."""
        return spec_hash({"steps": self.to_json_dict()["steps"]})

    def step_interval_s(self, index: int) -> float:
        """Measurement interval of an analysis step."""
        step = self.steps[index]
        if isinstance(step, AnalysisStep) and step.analysis.interval_s is not None:
            return step.analysis.interval_s
        return self.analysis.interval_s

    def weight_at(self, index: int) -> float:
        """Candidate weight (fraction) in force while step ``index`` runs."""
        weight = 0.0
        for step in self.steps[: index + 1]:
            if isinstance(step, SetWeightStep):
                weight = step.set_weight / 100.0
        return weight

    def rollback_bound_s(self, index: int) -> float:
        """Worst-case time from a fault to weight 0 during analysis step ``index``.

        ``interval × (failure_limit + 1) + interval`` for failed measurements (the extra
        interval is the window in progress when the fault starts), and
        ``interval + error_retry_interval × consecutive_error_limit`` for an unreachable
        provider (the first failed call comes at the next scheduled measurement), whichever is larger over the step's decisive checks.
        """
        interval = self.step_interval_s(index)
        bounds = [0.0]
        checks = self.step_checks(index) or self.background_checks(index)
        for c in checks:
            if self.is_dry_run(c):
                continue
            bounds.append(interval * (c.failure_limit + 1) + interval)
            bounds.append(
                interval + self.analysis.error_retry_interval_s * c.consecutive_error_limit
            )
        return max(bounds)

    def start_bound_s(self) -> float:
        """Worst-case time to Aborted for a fault present before the first weight change
        (the weight stays 0 throughout): a provider down fails the pre-flight at once; a
        candidate that never becomes ready aborts at ``progress_deadline_s``, seen at most
        one readiness interval late."""
        return self.progress_deadline_s + self.readiness.interval_s

    def to_json_dict(self) -> dict[str, Any]:
        """Canonical JSON-ready form (what the store keeps)."""
        return self.model_dump(mode="json")

    def spec_hash(self) -> str:
        """SHA-256 of the canonical JSON (the store computes the same)."""
        return spec_hash(self.to_json_dict())


def spec_hash(spec: Mapping[str, Any]) -> str:
    """SHA-256 of a spec's canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# ---------------------------------------------------------------------------- loading


def parse_spec(data: Any, *, source: str = "spec") -> RolloutSpec:
    """Validate a spec mapping; InputError names the field path of every problem."""
    if not isinstance(data, Mapping):
        raise InputError(f"{source}: expected a mapping of rollout fields, got {_kind(data)}")
    try:
        return RolloutSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise InputError(f"{source}: {format_validation_error(exc, data)}") from None


def load_spec(path: str | Path) -> RolloutSpec:
    """Read and validate a YAML (or JSON) spec file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{p}: cannot read the rollout spec: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: not valid YAML: {exc}") from None
    return parse_spec(data, source=str(p))


def dump_spec_yaml(spec: RolloutSpec) -> str:
    """The spec as YAML (``rollout init`` output; round-trips through :func:`parse_spec`)."""
    return yaml.safe_dump(spec.to_json_dict(), sort_keys=False)


def format_validation_error(exc: ValidationError, data: Any) -> str:
    """``steps[2].set_weight: Input should be ...; checks[0].max_error_rate: ...``."""
    parts = []
    for err in exc.errors():
        path = _path(err["loc"], data)
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        parts.append(f"{path}: {msg}" if path else msg)
    return "; ".join(parts)


def _path(loc: Sequence[int | str], data: Any) -> str:
    """Render a pydantic location, skipping union tags that are not keys of the input."""
    out = ""
    node = data
    # A union tag that repeats the key it selects (``set_weight.set_weight``) appears once.
    loc = [
        p
        for i, p in enumerate(loc)
        if not (i + 1 < len(loc) and loc[i + 1] == p and isinstance(p, str) and _is_tag(p))
    ]
    for part in loc:
        if isinstance(part, int) and isinstance(node, Sequence) and not isinstance(node, str):
            out += f"[{part}]"
            node = node[part] if 0 <= part < len(node) else None
        elif isinstance(node, Mapping) and part in node:
            out += f".{part}" if out else str(part)
            node = node[part]
        elif isinstance(node, Mapping) and isinstance(part, str) and _is_tag(part):
            continue  # discriminated-union tag
        else:
            out += f".{part}" if out else str(part)
            node = None
    return out


def _is_tag(part: str) -> bool:
    return part in _STEP_KEYS or part in {
        "error_rate",
        "latency",
        "compare_errors",
        "compare_latency",
        "guardrail",
        "store",
        "admin_api",
        "service",
        "prometheus",
    }


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


__all__ = [
    "COMPARISON_TYPES",
    "SERVICE_METRIC_TYPES",
    "AdminApiRouterSpec",
    "AnalysisDefaults",
    "AnalysisStep",
    "AnalysisStepSpec",
    "CompareErrorsCheck",
    "CompareLatencyCheck",
    "ErrorRateCheck",
    "GuardrailCheck",
    "LatencyCheck",
    "NotificationsSpec",
    "PauseSpec",
    "PauseStep",
    "PrometheusMetricsSpec",
    "ReadinessSpec",
    "RolloutSpec",
    "ScoreJudgeSpec",
    "ServiceMetricsSpec",
    "SetWeightStep",
    "StoreOutcomesSpec",
    "StoreRouterSpec",
    "WebhookSpec",
    "default_checks",
    "default_steps",
    "dump_spec_yaml",
    "load_spec",
    "parse_spec",
    "spec_hash",
]
