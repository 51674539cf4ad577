"""Prometheus metrics of one service process (its own registry, so tests can run several).

Names and labels are part of the rollout controller's contract (docs/SERVING.md): request
counts, latency histograms and model failures, each labelled by route and model version.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

#: Latency buckets in seconds: fine below 10 ms, where a look-up lives.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServiceMetrics:
    """Counters, histograms and gauges of the service; children cached per label set."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "cohortlens_http_requests",
            "HTTP requests by route template, method, status and routed model.",
            ["route", "method", "status", "model_role", "model_version"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cohortlens_http_request_duration_seconds",
            "Time from request start to the last response byte, by route and routed model.",
            ["route", "model_role", "model_version"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.model_failures = Counter(
            "cohortlens_model_failures",
            "Requests whose routed model failed (the stable model answered for a candidate).",
            ["model_role", "model_version"],
            registry=self.registry,
        )
        self.routing_weight = Gauge(
            "cohortlens_routing_weight",
            "Share of learners routed to each model role (0..1).",
            ["model_role"],
            registry=self.registry,
        )
        self.routing_revision = Gauge(
            "cohortlens_routing_revision",
            "Revision of the routing record this process serves.",
            registry=self.registry,
        )
        self.model_info = Gauge(
            "cohortlens_model_info",
            "1 for each model version this process serves, by role.",
            ["model_role", "model_version"],
            registry=self.registry,
        )
        self.exposures_logged = Counter(
            "cohortlens_exposures_logged",
            "Experiment exposure records written to the store.",
            registry=self.registry,
        )
        self.store_busy = Gauge(
            "cohortlens_store_busy",
            "1 while another process holds the embedded store (writes wait in the spool).",
            registry=self.registry,
        )
        self.spool_segments = Gauge(
            "cohortlens_spool_segments",
            "Spooled batches (exposures, posted events) waiting for the store.",
            registry=self.registry,
        )
        self.provisional_learners = Gauge(
            "cohortlens_provisional_learners",
            "Learners the served models have not seen, answered from their stored events.",
            registry=self.registry,
        )
        self.provisional_skipped_events = Counter(
            "cohortlens_provisional_skipped_events",
            "Events of unseen learners left out of provisional scoring (domain unknown to the "
            "stable model's feature run).",
            registry=self.registry,
        )
        self.ood_assessed = Counter(
            "cohortlens_ood_assessed_learners",
            "Learners of batch assignments checked against the answering model's training "
            "distribution.",
            ["model_role", "model_version"],
            registry=self.registry,
        )
        self.ood_beyond = Counter(
            "cohortlens_ood_beyond_learners",
            "Of those, learners farther from every centre than the model's training "
            "99th-percentile distance (about 1 % on data like the training data).",
            ["model_role", "model_version"],
            registry=self.registry,
        )
        self.ood_warnings = Counter(
            "cohortlens_ood_warnings",
            "Batch assignments whose share beyond the training distance exceeded the limit.",
            ["model_role", "model_version"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, ...], tuple[Counter, Histogram]] = {}

    def observe(
        self, route: str, method: str, status: int, role: str, version: str, seconds: float
    ) -> None:
        """Count one request and its latency (label children are cached: this is hot)."""
        key = (route, method, str(status), role, version)
        pair = self._children.get(key)
        if pair is None:
            pair = (
                self.requests.labels(route, method, str(status), role, version),
                self.latency.labels(route, role, version),
            )
            self._children[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def set_routing(
        self, revision: int, weight: float, stable: int | None, candidate: int | None
    ) -> None:
        """Publish the routing this process serves."""
        self.routing_revision.set(revision)
        self.routing_weight.labels("candidate").set(weight if candidate is not None else 0.0)
        self.routing_weight.labels("stable").set(1.0 - weight if candidate is not None else 1.0)
        self.model_info.clear()
        if stable is not None:
            self.model_info.labels("stable", str(stable)).set(1)
        if candidate is not None:
            self.model_info.labels("candidate", str(candidate)).set(1)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
