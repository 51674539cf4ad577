"""The controller's own Prometheus metrics (phase, step, weight, measurement outcomes).

A private registry per controller, so tests and simulations can run several. ``serve``
exposes it on 127.0.0.1 (``cohortlens rollout run --metrics-port``). docs/RUNBOOK.md lists
the alerts built on these series; docs/grafana/cohortlens.json charts them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from cohortlens.rollout.state import Event, HoldReason, Phase, RolloutStatus

#: Buckets of ``cohortlens_rollout_duration_seconds``: 1 min … 3 days.
DURATION_BUCKETS_S = (60, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400, 259200)


class _Lifetime(Collector):
    """``cohortlens_rollout_{completed,aborted}_total`` from the store's lifetime counters
    (so a restarted controller does not start them over)."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, int]] = {}

    def collect(self) -> Any:
        for counter, help_text in (
            ("completed", "Rollouts of this name promoted, over the store's lifetime."),
            ("aborted", "Rollouts of this name aborted, over the store's lifetime."),
        ):
            family = CounterMetricFamily(
                f"cohortlens_rollout_{counter}", help_text, labels=["rollout"]
            )
            for name, counters in sorted(self.values.items()):
                family.add_metric([name], float(counters.get(counter, 0)))
            yield family


class ControllerMetrics:
    """Gauges mirror the persisted status; counters count this process's events, except the
    lifetime completed/aborted counters, which mirror the store."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.lifetime = _Lifetime()
        r.register(self.lifetime)
        self.traffic = Gauge(
            "cohortlens_rollout_traffic_weight",
            "Share of learners (0..1) the rollout wants on each version (stable, candidate).",
            ["rollout", "version"],
            registry=r,
        )
        self.check_value = Gauge(
            "cohortlens_rollout_check_value",
            "Last measured value of a check, per version (error rate, latency in seconds, "
            "outcome mean...).",
            ["rollout", "check", "version"],
            registry=r,
        )
        self.duration = Histogram(
            "cohortlens_rollout_duration_seconds",
            "Time from a rollout attempt's start to Promoted or Aborted.",
            ["rollout", "phase"],
            buckets=DURATION_BUCKETS_S,
            registry=r,
        )
        self.ready = Gauge(
            "cohortlens_rollout_candidate_ready",
            "1 once the candidate passed the readiness gate (it may then get traffic).",
            ["rollout"],
            registry=r,
        )
        self.notifications = Counter(
            "cohortlens_rollout_notifications",
            "Webhook notifications by outcome (delivered, failed after retries, dropped).",
            ["rollout", "outcome"],
            registry=r,
        )
        self.phase = Gauge(
            "cohortlens_rollout_phase",
            "1 for the rollout's current phase.",
            ["rollout", "phase"],
            registry=r,
        )
        self.step = Gauge(
            "cohortlens_rollout_step", "Index of the current step.", ["rollout"], registry=r
        )
        self.steps = Gauge(
            "cohortlens_rollout_steps", "Number of steps in the spec.", ["rollout"], registry=r
        )
        self.weight = Gauge(
            "cohortlens_rollout_weight",
            "Candidate weight (0..1) the rollout wants in the routing.",
            ["rollout"],
            registry=r,
        )
        self.paused = Gauge(
            "cohortlens_rollout_held",
            "1 while held by an operator or an inconclusive / erroring analysis.",
            ["rollout", "reason"],
            registry=r,
        )
        self.outcomes = Gauge(
            "cohortlens_rollout_measurement_outcomes",
            "Measurements over the rollout's life by outcome (from the persisted status).",
            ["rollout", "outcome"],
            registry=r,
        )
        self.check_failures = Gauge(
            "cohortlens_rollout_check_failures",
            "Failed measurements of a check in the current analysis step.",
            ["rollout", "check"],
            registry=r,
        )
        self.check_successes = Gauge(
            "cohortlens_rollout_check_consecutive_successes",
            "Successful measurements in a row of a check in the current analysis step.",
            ["rollout", "check"],
            registry=r,
        )
        self.measurements = Counter(
            "cohortlens_rollout_measurements",
            "Check measurements taken by this controller process, by outcome.",
            ["rollout", "check", "outcome"],
            registry=r,
        )
        self.events = Counter(
            "cohortlens_rollout_events",
            "History events written by this controller process, by kind and reason.",
            ["rollout", "kind", "reason"],
            registry=r,
        )
        self.lease = Gauge(
            "cohortlens_rollout_lease_held",
            "1 while this process holds the rollout's lease.",
            ["rollout"],
            registry=r,
        )
        self.last_tick = Gauge(
            "cohortlens_rollout_last_tick_timestamp_seconds",
            "Time of the controller's latest reconcile.",
            ["rollout"],
            registry=r,
        )

    def update(
        self,
        status: RolloutStatus,
        events: Iterable[Event],
        *,
        n_steps: int,
        at: float,
        counters: Mapping[str, int] | None = None,
    ) -> None:
        """Mirror ``status``; count ``events`` (the ones just persisted); ``counters``: the
        rollout's lifetime counters as the store has them."""
        name = status.name
        for phase in Phase:
            self.phase.labels(name, phase.value).set(1.0 if status.phase == phase else 0.0)
        self.step.labels(name).set(status.step_index)
        self.steps.labels(name).set(n_steps)
        self.weight.labels(name).set(status.weight)
        candidate = status.weight if status.phase not in (Phase.PROMOTED, Phase.ABORTED) else 0.0
        self.ready.labels(name).set(1.0 if status.ready_at is not None else 0.0)
        self.traffic.labels(name, "candidate").set(candidate)
        self.traffic.labels(name, "stable").set(1.0 - candidate)
        for reason in HoldReason:
            held = status.hold is not None and status.hold.reason == reason
            self.paused.labels(name, reason.value).set(1.0 if held else 0.0)
        for outcome, count in status.totals.items():
            self.outcomes.labels(name, outcome).set(count)
        if status.analysis is not None:
            for check, cs in status.analysis.checks.items():
                self.check_failures.labels(name, check).set(cs.failures)
                self.check_successes.labels(name, check).set(cs.consecutive_successes)
                for version, value in cs.last_values.items():
                    self.check_value.labels(name, check, version).set(value)
        for ev in events:
            self.events.labels(name, ev.kind, ev.reason).inc()
            if ev.kind == "measurement":
                checks: dict[str, Any] = ev.detail.get("checks", {})
                for check, result in checks.items():
                    self.measurements.labels(name, check, result["outcome"]).inc()
                    for version, value in (result.get("by_version") or {}).items():
                        if isinstance(value, int | float):
                            self.check_value.labels(name, check, version).set(value)
            duration = ev.detail.get("duration_s")
            if ev.kind in ("promoted", "aborted") and isinstance(duration, int | float):
                ended = "Promoted" if ev.kind == "promoted" else "Aborted"
                self.duration.labels(name, ended).observe(max(0.0, float(duration)))
        if counters is not None:
            self.lifetime.values[name] = dict(counters)
        self.last_tick.labels(name).set(at)

    def notification(self, rollout: str, outcome: str) -> None:
        """Count one webhook notification's outcome."""
        self.notifications.labels(rollout, outcome).inc()

    def set_lease(self, rollout: str, held: bool) -> None:
        """Whether this process holds the lease."""
        self.lease.labels(rollout).set(1.0 if held else 0.0)

    def render(self) -> bytes:
        """Text exposition format."""
        return generate_latest(self.registry)

    def serve(self, port: int) -> Any:
        """Expose ``/metrics`` on 127.0.0.1:``port`` (0 picks a free port); returns the server."""
        server, _thread = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        return server


__all__ = ["ControllerMetrics"]
