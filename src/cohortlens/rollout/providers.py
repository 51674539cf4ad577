"""Metric providers (service ``/metrics``, Prometheus' query API) and guardrail sources.

I/O at the edge: each provider fetches, the pure parts (:mod:`~cohortlens.rollout.measure`,
:mod:`~cohortlens.rollout.routing`) compute. A provider never raises for an unreachable
endpoint: it returns a :class:`~cohortlens.rollout.controller.MetricsFetch` with ``error``
set, which the controller counts toward ``consecutive_error_limit``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from cohortlens.rollout.checks import GuardrailArms
from cohortlens.rollout.controller import MetricsFetch
from cohortlens.rollout.measure import (
    FAILURES,
    LATENCY,
    REQUESTS,
    VERSIONS,
    MetricsFormatError,
    Snapshot,
    VersionCounts,
    Window,
    candidate_loaded,
    parse_service_metrics,
    snapshot_delta,
    sum_counts,
)
from cohortlens.rollout.routing import guardrail_arms, outcome_columns


class ProviderError(Exception):
    """A provider could not answer (unreachable, bad status, unparsable)."""


class MetricsProvider(Protocol):
    """Where service metrics come from."""

    #: How the provider is named in pre-flight and readiness messages.
    name: str

    def fetch(
        self, window_start: datetime, now: datetime, baseline: Mapping[str, Any] | None
    ) -> MetricsFetch:
        """Counts per version over ``[window_start, now]`` (see :class:`MetricsFetch`)."""

    def candidate_replicas(self) -> dict[str, bool | str]:
        """Per replica: whether it serves the candidate (``cohortlens_model_info``), or why
        it could not be asked."""


class GuardrailSource(Protocol):
    """Where learner outcomes come from."""

    name: str

    def arms(
        self,
        metric: str,
        *,
        since: datetime,
        until: datetime,
        salt: str,
        weight: float,
        overrides: Sequence[str] = (),
    ) -> GuardrailArms:
        """Outcome statistics of stable- and candidate-routed learners in the window
        (override learners left out)."""


# ---------------------------------------------------------------------------- /metrics


def _http_get_text(timeout_s: float) -> Callable[[str], str]:
    client = httpx.Client(timeout=timeout_s)

    def get(url: str) -> str:
        try:
            resp = client.get(url)
        except httpx.HTTPError as exc:
            raise ProviderError(f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code != 200:
            raise ProviderError(f"HTTP {resp.status_code}")
        return resp.text

    return get


class ServiceMetricsProvider:
    """Scrapes every URL (one per replica), diffs against the last scrape, sums the replicas.

    The state kept between fetches is the last scrape of each URL; the controller persists
    it, so a restarted controller still measures from its last baseline.
    """

    def __init__(
        self,
        urls: Sequence[str],
        candidate_version: str,
        *,
        routes: Sequence[str] | None = None,
        timeout_s: float = 2.0,
        transport: Callable[[str], str] | None = None,
    ) -> None:
        self.urls = tuple(urls)
        self.candidate_version = candidate_version
        self.routes = tuple(routes) if routes is not None else None
        self._get = transport or _http_get_text(timeout_s)
        self.name = "metrics (service /metrics: " + ", ".join(self.urls) + ")"

    def candidate_replicas(self) -> dict[str, bool | str]:
        """Scrape every replica: does it serve the candidate yet?"""
        out: dict[str, bool | str] = {}
        for url in self.urls:
            try:
                out[url] = candidate_loaded(self._get(url), self.candidate_version)
            except (ProviderError, MetricsFormatError) as exc:
                out[url] = str(exc) or type(exc).__name__
        return out

    def fetch(
        self, window_start: datetime, now: datetime, baseline: Mapping[str, Any] | None
    ) -> MetricsFetch:
        """Scrape all URLs; a window when a baseline of the same URLs and version exists."""
        snaps: dict[str, Snapshot] = {}
        for url in self.urls:
            try:
                snaps[url] = parse_service_metrics(
                    self._get(url), self.candidate_version, self.routes
                )
            except (ProviderError, MetricsFormatError) as exc:
                return MetricsFetch(None, {}, error=f"{url}: {exc}")
        state = {
            "candidate_version": self.candidate_version,
            "scrapes": {u: s.to_dict() for u, s in snaps.items()},
        }
        if (
            baseline is None
            or baseline.get("candidate_version") != self.candidate_version
            or set(baseline.get("scrapes", {})) != set(self.urls)
        ):
            return MetricsFetch(None, state)
        parts: dict[str, list[VersionCounts]] = {v: [] for v in VERSIONS}
        try:
            for url, snap in snaps.items():
                prev = Snapshot.from_dict(baseline["scrapes"][url])
                for v, counts in snapshot_delta(prev, snap).items():
                    parts[v].append(counts)
            window = Window(
                candidate=sum_counts(parts["candidate"]),
                stable=sum_counts(parts["stable"]),
                window_s=(now - window_start).total_seconds(),
            )
        except (MetricsFormatError, KeyError, ValueError) as exc:
            return MetricsFetch(None, {}, error=f"cannot combine scrapes: {exc}")
        return MetricsFetch(window, state)


# ---------------------------------------------------------------------------- Prometheus


def _http_query(url: str, timeout_s: float) -> Callable[[str, float], list[dict[str, Any]]]:
    client = httpx.Client(timeout=timeout_s)
    endpoint = url.rstrip("/") + "/api/v1/query"

    def query(promql: str, at: float) -> list[dict[str, Any]]:
        try:
            resp = client.get(endpoint, params={"query": promql, "time": f"{at:.3f}"})
        except httpx.HTTPError as exc:
            raise ProviderError(f"{type(exc).__name__}: {exc}") from exc
        try:
            body = resp.json()
        except ValueError as exc:
            raise ProviderError(f"HTTP {resp.status_code}, not JSON") from exc
        if resp.status_code != 200 or body.get("status") != "success":
            raise ProviderError(
                f"HTTP {resp.status_code}: {body.get('errorType', '')} {body.get('error', '')}".strip()
            )
        data = body.get("data", {})
        if data.get("resultType") != "vector":
            raise ProviderError(f"expected a vector result, got {data.get('resultType')!r}")
        result: list[dict[str, Any]] = data.get("result", [])
        return result

    return query


class PrometheusProvider:
    """Window counts from PromQL ``increase(...[Ns])`` at the measurement time (stateless).

    ``increase`` extrapolates to the window edges, so counts may be fractional; they are
    used as they are for rates and rounded for the tests that need whole counts.
    """

    def __init__(
        self,
        url: str,
        candidate_version: str,
        *,
        selector: str = "",
        routes: Sequence[str] | None = None,
        timeout_s: float = 5.0,
        transport: Callable[[str, float], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.url = url
        self.candidate_version = candidate_version
        self.selector = selector.strip().strip(",")
        self.routes = tuple(routes) if routes is not None else None
        self._query = transport or _http_query(url, timeout_s)
        self.name = f"metrics (prometheus {url})"

    def candidate_replicas(self) -> dict[str, bool | str]:
        """Per scraped replica (``instance``): does it serve the candidate yet?"""
        sel = [self.selector] if self.selector else []
        every = "cohortlens_routing_revision{" + ",".join(sel) + "}"
        wanted = [*sel, 'model_role="candidate"', f'model_version="{self.candidate_version}"']
        loaded = "cohortlens_model_info{" + ",".join(wanted) + "} == 1"
        at = datetime.now(UTC).timestamp()
        try:
            replicas = self._query(every, at)
            ready = {_instance(x) for x in self._query(loaded, at)}
        except ProviderError as exc:
            return {self.url: str(exc)}
        except (KeyError, ValueError, TypeError) as exc:
            return {self.url: f"unexpected answer: {exc}"}
        return {_instance(x): _instance(x) in ready for x in replicas}

    def matchers(self, version: str, *, with_route: bool = True) -> str:
        """The label matchers of ``version`` (``candidate`` or ``stable``)."""
        parts = [self.selector] if self.selector else []
        if version == "candidate":
            parts += ['model_role="candidate"', f'model_version="{self.candidate_version}"']
        else:
            parts.append('model_role="stable"')
        if with_route and self.routes is not None:
            alternatives = "|".join(re.escape(r) for r in self.routes)
            parts.append(f'route=~"{alternatives}"')
        return ",".join(parts)

    def queries(self, version: str, window_s: float) -> dict[str, str]:
        """PromQL per quantity over a window of ``window_s`` seconds."""
        rng = f"[{max(1, math.ceil(window_s))}s]"
        m = self.matchers(version)
        return {
            "requests": f"sum(increase({REQUESTS}_total{{{m}}}{rng}))",
            "errors_5xx": f'sum(increase({REQUESTS}_total{{{m},status=~"5.."}}{rng}))',
            "failures": (
                f"sum(increase({FAILURES}_total{{{self.matchers(version, with_route=False)}}}{rng}))"
            ),
            "buckets": f"sum by (le) (increase({LATENCY}_bucket{{{m}}}{rng}))",
        }

    def fetch(
        self, window_start: datetime, now: datetime, baseline: Mapping[str, Any] | None
    ) -> MetricsFetch:
        """Query every quantity of both versions for ``[window_start, now]``."""
        window_s = (now - window_start).total_seconds()
        if window_s < 1.0:
            return MetricsFetch(None, {})
        at = now.timestamp()
        counts: dict[str, VersionCounts] = {}
        try:
            for version in VERSIONS:
                q = self.queries(version, window_s)
                requests = _scalar(self._query(q["requests"], at))
                errors = _scalar(self._query(q["errors_5xx"], at)) + _scalar(
                    self._query(q["failures"], at)
                )
                edges, cum = _buckets(self._query(q["buckets"], at))
                per_bucket = [max(0.0, c - p) for c, p in zip(cum, [0.0, *cum[:-1]], strict=True)]
                counts[version] = VersionCounts(requests, errors, edges, tuple(per_bucket))
        except ProviderError as exc:
            return MetricsFetch(None, {}, error=f"{self.url}: {exc}")
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            return MetricsFetch(None, {}, error=f"{self.url}: unexpected answer: {exc}")
        return MetricsFetch(Window(counts["candidate"], counts["stable"], window_s), {})


def _instance(sample: dict[str, Any]) -> str:
    labels = sample.get("metric", {})
    return str(labels.get("instance") or labels.get("pod") or labels)


def _scalar(result: list[dict[str, Any]]) -> float:
    """The value of a one-sample vector (0 for an empty vector: no such series yet)."""
    total = 0.0
    for sample in result:
        value = float(sample["value"][1])
        if math.isfinite(value):
            total += value
    return total


def _buckets(result: list[dict[str, Any]]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    pairs = []
    for sample in result:
        value = float(sample["value"][1])
        pairs.append((float(sample["metric"]["le"]), value if math.isfinite(value) else 0.0))
    pairs.sort()
    # increase() of cumulative buckets may break monotonicity slightly: enforce it.
    cum: list[float] = []
    for _, v in pairs:
        cum.append(max(v, cum[-1]) if cum else v)
    return tuple(e for e, _ in pairs), tuple(cum)


# ---------------------------------------------------------------------------- outcomes


class StoreOutcomes:
    """Guardrail arms from the store's learner outcomes (``read_outcomes``)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.name = f"guardrail_source (store_outcomes {getattr(store, 'url', store)})"

    def arms(
        self,
        metric: str,
        *,
        since: datetime,
        until: datetime,
        salt: str,
        weight: float,
        overrides: Sequence[str] = (),
    ) -> GuardrailArms:
        """Outcomes recorded in ``[since, until)``, split by the release's routing."""
        ids, values, as_of = outcome_columns(self.store.read_outcomes(), metric)
        return guardrail_arms(
            ids,
            values,
            as_of,
            since=since,
            until=until,
            salt=salt,
            weight=weight,
            overrides=overrides,
        )


__all__ = [
    "GuardrailSource",
    "MetricsProvider",
    "PrometheusProvider",
    "ProviderError",
    "ServiceMetricsProvider",
    "StoreOutcomes",
]
