"""Metric providers over real HTTP: /metrics of several replicas, and a real Prometheus server.

The Prometheus test runs the ``prometheus`` binary (Debian package ``prometheus``) scraping a
prometheus_client exporter on 127.0.0.1; it is skipped, saying why, when the binary is absent.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from cohortlens.rollout.checks import Outcome, evaluate_service_check
from cohortlens.rollout.providers import PrometheusProvider, ProviderError, ServiceMetricsProvider
from cohortlens.rollout.readiness import ReplicaProbe
from cohortlens.rollout.spec import CompareErrorsCheck

ROUTE = "/v1/learners/{learner_id}/cohort"


class Replica:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cohortlens_http_requests",
            "r",
            ["route", "method", "status", "model_role", "model_version"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cohortlens_http_request_duration_seconds",
            "l",
            ["route", "model_role", "model_version"],
            buckets=(0.01, 0.1, 1.0),
            registry=self.registry,
        )
        self.failures = Counter(
            "cohortlens_model_failures",
            "f",
            ["model_role", "model_version"],
            registry=self.registry,
        )
        self.server, _ = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/metrics"

    def traffic(self, cand: int, cand_fail: int, stable: int) -> None:
        self.requests.labels(ROUTE, "GET", "200", "candidate", "9").inc(cand)
        self.failures.labels("candidate", "9").inc(cand_fail)
        self.requests.labels(ROUTE, "GET", "200", "stable", "4").inc(stable)
        for _ in range(cand):
            self.latency.labels(ROUTE, "candidate", "9").observe(0.05)
        for _ in range(stable):
            self.latency.labels(ROUTE, "stable", "4").observe(0.005)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    rs = [Replica(), Replica()]
    yield rs
    for r in rs:
        r.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_service_provider_sums_replicas_between_scrapes(replicas: list[Replica]) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    provider = ServiceMetricsProvider([r.url for r in replicas], "9")
    replicas[0].traffic(10, 1, 100)
    first = provider.fetch(now, now, None)
    assert first.error is None
    assert first.window is None
    replicas[0].traffic(30, 3, 300)
    replicas[1].traffic(20, 4, 200)
    second = provider.fetch(now, now + timedelta(seconds=60), first.state)
    assert second.error is None
    assert second.window is not None
    w = second.window
    assert (w.candidate.requests, w.candidate.errors, w.stable.requests) == (50.0, 7.0, 500.0)
    assert w.candidate.bucket_counts == (0.0, 50.0, 0.0, 0.0)
    assert w.stable.bucket_counts == (500.0, 0.0, 0.0, 0.0)
    assert w.window_s == 60.0
    # The baseline is per URL: a changed URL list starts over with a baseline.
    other = ServiceMetricsProvider([replicas[0].url], "9").fetch(now, now, second.state)
    assert other.window is None
    assert other.error is None


def test_service_provider_reports_an_unreachable_replica(replicas: list[Replica]) -> None:
    dead = f"http://127.0.0.1:{_free_port()}/metrics"
    provider = ServiceMetricsProvider([replicas[0].url, dead], "9", timeout_s=1.0)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    got = provider.fetch(now, now, None)
    assert got.window is None
    assert got.error is not None
    assert dead in got.error
    assert "ConnectError" in got.error
    # Another exporter (no cohortlens series) is an error, not "no traffic".
    server, _ = start_http_server(0, addr="127.0.0.1", registry=CollectorRegistry())
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        bad = ServiceMetricsProvider([url], "9").fetch(now, now, None)
    finally:
        server.shutdown()
        server.server_close()
    assert bad.error is not None
    assert "no cohortlens_http_requests_total counter" in bad.error


def test_prometheus_provider_builds_promql_and_reads_vectors() -> None:
    asked: list[str] = []

    def transport(query: str, at: float) -> list[dict[str, Any]]:
        asked.append(query)
        if "sum by (le)" in query:
            return [
                {"metric": {"le": "+Inf"}, "value": [at, "40"]},
                {"metric": {"le": "0.1"}, "value": [at, "30"]},
                {"metric": {"le": "0.01"}, "value": [at, "10"]},
            ]
        if 'status=~"5.."' in query:
            return []
        if "model_failures" in query:
            return [{"metric": {}, "value": [at, "2.5"]}]
        return [{"metric": {}, "value": [at, "40"]}]

    p = PrometheusProvider(
        "http://prom:9090", "9", selector='job="cohortlens"', routes=[ROUTE], transport=transport
    )
    now = datetime(2030, 1, 1, tzinfo=UTC)
    got = p.fetch(now - timedelta(seconds=59.5), now, None)
    assert got.error is None
    assert got.window is not None
    assert got.window.candidate.requests == 40.0
    assert got.window.candidate.errors == 2.5
    assert got.window.candidate.bucket_edges_s == (0.01, 0.1, float("inf"))
    assert got.window.candidate.bucket_counts == (10.0, 20.0, 10.0)
    assert asked[0] == (
        'sum(increase(cohortlens_http_requests_total{job="cohortlens",model_role="candidate",'
        'model_version="9",route=~"/v1/learners/\\{learner_id\\}/cohort"}[60s]))'
    )
    assert 'model_role="stable"' in asked[-1]
    assert p.fetch(now, now, None).window is None  # an empty window only sets a baseline

    def down(query: str, at: float) -> list[dict[str, Any]]:
        raise ProviderError("ConnectError: refused")

    failed = PrometheusProvider("http://prom:9090", "9", transport=down).fetch(
        now - timedelta(seconds=60), now, None
    )
    assert failed.window is None
    assert failed.error == "http://prom:9090: ConnectError: refused"


@pytest.fixture
def prometheus(tmp_path: Path, replicas: list[Replica]) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is not installed (Debian package 'prometheus')")
    port = _free_port()
    targets = ", ".join(f"'127.0.0.1:{r.port}'" for r in replicas)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 500ms, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: cohortlens, static_configs: [{{targets: [{targets}]}}]}}]\n"
    )
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("prometheus did not become ready in 20 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _up(url: str) -> float:
    body = httpx.get(
        f"{url}/api/v1/query", params={"query": 'count(up{job="cohortlens"} == 1)'}, timeout=2
    ).json()
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def test_prometheus_provider_against_a_real_server(
    prometheus: str, replicas: list[Replica]
) -> None:
    for r in replicas:
        r.traffic(1, 0, 1)  # the series exist before the window starts
    deadline = time.monotonic() + 15
    while _up(prometheus) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    time.sleep(1.2)  # two scrapes of the initial values
    start = datetime.now(UTC)
    replicas[0].traffic(60, 30, 300)
    replicas[1].traffic(40, 20, 200)
    provider = PrometheusProvider(prometheus, "9", selector='job="cohortlens"')
    # Wait for scrapes that hold the traffic (on a busy machine they can come late), bounded.
    deadline = time.monotonic() + 30
    while True:
        time.sleep(0.5)
        got = provider.fetch(start - timedelta(seconds=1), datetime.now(UTC), None)
        assert got.error is None, got.error
        w = got.window
        assert w is not None
        seen = w.candidate.requests >= 80 and w.stable.requests >= 400
        if seen or time.monotonic() > deadline:
            break
    # increase() extrapolates to the window's edges: allow for it.
    assert 80 <= w.candidate.requests <= 180
    assert 40 <= w.candidate.errors <= 90
    assert 400 <= w.stable.requests <= 900
    assert w.candidate.errors / w.candidate.requests == pytest.approx(0.5, abs=0.02)
    assert sum(w.candidate.bucket_counts) == pytest.approx(w.candidate.requests, rel=0.02)
    result = evaluate_service_check(CompareErrorsCheck(type="compare_errors", name="e"), w)
    assert result.outcome == Outcome.INCONCLUSIVE or result.outcome == Outcome.FAILED
    check = CompareErrorsCheck(type="compare_errors", name="e", min_requests=50)
    assert evaluate_service_check(check, w).outcome == Outcome.FAILED


def test_replicas_report_whether_they_serve_the_candidate() -> None:
    """The readiness gate reads cohortlens_model_info from every replica's /metrics."""
    texts = {
        "http://a/metrics": (
            "# TYPE cohortlens_model_info gauge\n"
            'cohortlens_model_info{model_role="stable",model_version="1"} 1.0\n'
            'cohortlens_model_info{model_role="candidate",model_version="9"} 1.0\n'
        ),
        "http://b/metrics": (
            "# TYPE cohortlens_model_info gauge\n"
            'cohortlens_model_info{model_role="stable",model_version="1"} 1.0\n'
            'cohortlens_model_info{model_role="candidate",model_version="8"} 1.0\n'
        ),
    }

    def get(url: str) -> str:
        if url == "http://c/metrics":
            raise ProviderError("ConnectError: refused")
        return texts[url]

    urls = [*texts, "http://c/metrics"]
    provider = ServiceMetricsProvider(urls, "9", transport=get)
    assert provider.candidate_replicas() == {
        "http://a/metrics": True,
        "http://b/metrics": False,  # an older candidate
        "http://c/metrics": "ConnectError: refused",
    }
    ready = ReplicaProbe(provider).check(9)
    assert not ready.ready
    assert ready.message.startswith("1 of 3 replicas serve the candidate")


def test_prometheus_replicas_are_the_instances_of_the_routing_revision() -> None:
    asked: list[str] = []

    def query(promql: str, at: float) -> list[dict[str, Any]]:
        asked.append(promql)
        if promql.startswith("cohortlens_routing_revision"):
            return [{"metric": {"instance": i}, "value": [at, "3"]} for i in ("r1", "r2")]
        return [{"metric": {"instance": "r1"}, "value": [at, "1"]}]

    provider = PrometheusProvider("http://prom", "9", selector='job="cl"', transport=query)
    assert provider.candidate_replicas() == {"r1": True, "r2": False}
    assert asked == [
        'cohortlens_routing_revision{job="cl"}',
        'cohortlens_model_info{job="cl",model_role="candidate",model_version="9"} == 1',
    ]
