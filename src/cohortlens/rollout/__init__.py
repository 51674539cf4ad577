"""Progressive delivery of cohort models: canary → ramp → full, health gates, auto-rollback.

* :mod:`~cohortlens.rollout.spec`: the YAML spec (steps, checks, router, metric sources);
* :mod:`~cohortlens.rollout.controller`: the state machine as pure reconcile steps;
  :mod:`~cohortlens.rollout.commands`: operator commands;
* :mod:`~cohortlens.rollout.checks` and :mod:`~cohortlens.rollout.measure`: one measurement
  (thresholds, Mann–Whitney on histogram buckets, two-proportion test, guardrails);
* :mod:`~cohortlens.rollout.analysis` (collect → record) and
  :mod:`~cohortlens.rollout.verdict` (decide: Argo's limits, Kayenta's score judge);
* :mod:`~cohortlens.rollout.routing`: the routing rule (shared with the service); arms;
* :mod:`~cohortlens.rollout.providers`, :mod:`~cohortlens.rollout.routers`,
  :mod:`~cohortlens.rollout.readiness`, :mod:`~cohortlens.rollout.notify`: I/O edges;
* :mod:`~cohortlens.rollout.runner`: the controller process (lease, persist, act);
* :mod:`~cohortlens.rollout.simulation`: a whole rollout under a virtual clock with faults;
* :mod:`~cohortlens.rollout.exporter`: the controller's Prometheus metrics.

Operator guide: docs/RUNBOOK.md.
"""

from cohortlens.rollout.checks import CheckResult, GuardrailArms, Outcome
from cohortlens.rollout.commands import Command, apply_command
from cohortlens.rollout.controller import (
    MetricsFetch,
    Observation,
    Readiness,
    initial_status,
    plan,
    reconcile,
)
from cohortlens.rollout.routing import Role, candidate_mask, candidate_threshold, guardrail_arms
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
    "Readiness",
    "Role",
    "RolloutSpec",
    "RolloutStatus",
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
