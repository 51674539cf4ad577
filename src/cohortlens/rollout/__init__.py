"""Progressive delivery of cohort models: canary → ramp → full, health gates, auto-rollback.

* :mod:`~cohortlens.rollout.spec`: the YAML spec (steps, checks, router, metric sources);
* :mod:`~cohortlens.rollout.controller`: the state machine as pure functions;
* :mod:`~cohortlens.rollout.checks` and :mod:`~cohortlens.rollout.measure`: one measurement
  (thresholds, Mann–Whitney on histogram buckets, two-proportion test, guardrails);
* :mod:`~cohortlens.rollout.routing`: which learners the candidate gets; outcome arms;
* :mod:`~cohortlens.rollout.providers` and :mod:`~cohortlens.rollout.routers`: I/O edges;
* :mod:`~cohortlens.rollout.runner`: the controller process (lease, persist, act);
* :mod:`~cohortlens.rollout.simulation`: a whole rollout under a virtual clock with faults;
* :mod:`~cohortlens.rollout.exporter`: the controller's Prometheus metrics.

Operator guide: docs/RUNBOOK.md.
"""

from cohortlens.rollout.checks import CheckResult, GuardrailArms, Outcome
from cohortlens.rollout.controller import (
    Command,
    MetricsFetch,
    Observation,
    RoutingView,
    apply_command,
    initial_status,
    plan,
    reconcile,
)
from cohortlens.rollout.routing import candidate_mask, candidate_threshold, guardrail_arms
from cohortlens.rollout.runner import Controller, LeaseLostError, run_command
from cohortlens.rollout.simulation import Fault, FleetParams, SimulationResult, simulate
from cohortlens.rollout.spec import RolloutSpec, load_spec, parse_spec
from cohortlens.rollout.state import Decision, Phase, RolloutStatus

__all__ = [
    "CheckResult",
    "Command",
    "Controller",
    "Decision",
    "Fault",
    "FleetParams",
    "GuardrailArms",
    "LeaseLostError",
    "MetricsFetch",
    "Observation",
    "Outcome",
    "Phase",
    "RolloutSpec",
    "RolloutStatus",
    "RoutingView",
    "SimulationResult",
    "apply_command",
    "candidate_mask",
    "candidate_threshold",
    "guardrail_arms",
    "initial_status",
    "load_spec",
    "parse_spec",
    "plan",
    "reconcile",
    "run_command",
    "simulate",
]
