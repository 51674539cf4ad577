"""Service metrics parsing, deltas, and the statistics on histogram buckets.

References: prometheus_client writes the text (as the service does); scipy's
``mannwhitneyu`` on the expanded samples; statsmodels' two-proportion z-test; scipy's exact
binomial test for the conditional test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from scipy import stats
from statsmodels.stats.proportion import proportions_ztest

from cohortlens.rollout.measure import (
    MetricsFormatError,
    Snapshot,
    VersionCounts,
    compare_error_rates,
    counter_delta,
    histogram_quantile,
    mann_whitney_buckets,
    parse_service_metrics,
    snapshot_delta,
    sum_counts,
)

EDGES = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ROUTE = "/v1/learners/{learner_id}/cohort"


def _service_registry() -> tuple[CollectorRegistry, Counter, Histogram, Counter]:
    reg = CollectorRegistry()
    req = Counter(
        "cohortlens_http_requests",
        "requests",
        ["route", "method", "status", "model_role", "model_version"],
        registry=reg,
    )
    lat = Histogram(
        "cohortlens_http_request_duration_seconds",
        "latency",
        ["route", "model_role", "model_version"],
        buckets=EDGES,
        registry=reg,
    )
    fail = Counter(
        "cohortlens_model_failures", "failures", ["model_role", "model_version"], registry=reg
    )
    return reg, req, lat, fail


def _traffic(req: Counter, lat: Histogram, fail: Counter) -> None:
    for _ in range(10):
        req.labels(ROUTE, "GET", "200", "candidate", "7").inc()
        lat.labels(ROUTE, "candidate", "7").observe(0.02)
    for _ in range(3):
        req.labels(ROUTE, "GET", "500", "candidate", "7").inc()
        lat.labels(ROUTE, "candidate", "7").observe(0.3)
    fail.labels("candidate", "7").inc(2)
    # An older candidate's leftovers and model-less routes must not count.
    req.labels(ROUTE, "GET", "200", "candidate", "6").inc(100)
    req.labels("/healthz", "GET", "200", "none", "none").inc(50)
    for _ in range(40):
        req.labels(ROUTE, "GET", "200", "stable", "5").inc()
        lat.labels(ROUTE, "stable", "5").observe(0.004)
    req.labels("/v1/cohorts/assign", "POST", "200", "stable", "5").inc(5)
    lat.labels("/v1/cohorts/assign", "stable", "5").observe(1.2)


def test_parse_counts_each_version_from_prometheus_client_text() -> None:
    reg, req, lat, fail = _service_registry()
    _traffic(req, lat, fail)
    snap = parse_service_metrics(generate_latest(reg).decode(), "7")
    cand, stable = snap.versions["candidate"], snap.versions["stable"]
    assert cand.requests == 13.0
    assert cand.errors == 5.0  # 3 responses with status 500 + 2 model failures
    assert stable.requests == 45.0
    assert stable.errors == 0.0
    assert cand.bucket_edges_s == (*EDGES, math.inf)
    # Cumulative as exported: 10 at <= 0.025 (0.02), all 13 at <= 0.5.
    cum = dict(zip(cand.bucket_edges_s, cand.bucket_counts, strict=True))
    assert cum[0.01] == 0.0
    assert cum[0.025] == 10.0
    assert cum[0.25] == 10.0
    assert cum[0.5] == 13.0
    assert cum[math.inf] == 13.0
    stable_cum = dict(zip(stable.bucket_edges_s, stable.bucket_counts, strict=True))
    assert stable_cum[0.005] == 40.0
    assert stable_cum[math.inf] == 41.0  # the assign route's histogram child counts too


def test_parse_route_filter_keeps_only_listed_routes() -> None:
    reg, req, lat, fail = _service_registry()
    _traffic(req, lat, fail)
    snap = parse_service_metrics(generate_latest(reg).decode(), "7", routes=[ROUTE])
    assert snap.versions["stable"].requests == 40.0
    assert snap.versions["stable"].bucket_counts[-1] == 40.0


def test_parse_rejects_text_without_the_request_counter() -> None:
    with pytest.raises(MetricsFormatError, match="cohortlens_http_requests_total"):
        parse_service_metrics("# HELP x y\n# TYPE x counter\nx_total 1\n", "7")
    with pytest.raises(MetricsFormatError, match="not Prometheus text"):
        parse_service_metrics('x{a="1" 2\n', "7")


def test_snapshot_round_trips_through_json_form() -> None:
    reg, req, lat, fail = _service_registry()
    _traffic(req, lat, fail)
    snap = parse_service_metrics(generate_latest(reg).decode(), "7")
    assert Snapshot.from_dict(snap.to_dict()) == snap


def test_deltas_between_scrapes_decumulate_buckets() -> None:
    reg, req, lat, fail = _service_registry()
    _traffic(req, lat, fail)
    first = parse_service_metrics(generate_latest(reg).decode(), "7")
    for _ in range(4):
        req.labels(ROUTE, "GET", "200", "candidate", "7").inc()
        lat.labels(ROUTE, "candidate", "7").observe(0.07)
    fail.labels("candidate", "7").inc()
    second = parse_service_metrics(generate_latest(reg).decode(), "7")
    d = snapshot_delta(first, second)
    assert d["candidate"].requests == 4.0
    assert d["candidate"].errors == 1.0
    per_bucket = dict(zip(d["candidate"].bucket_edges_s, d["candidate"].bucket_counts, strict=True))
    assert per_bucket[0.1] == 4.0
    assert sum(d["candidate"].bucket_counts) == 4.0
    assert d["stable"].requests == 0.0


def test_counter_reset_counts_the_new_value() -> None:
    assert counter_delta(10.0, 14.0) == 4.0
    assert counter_delta(10.0, 3.0) == 3.0
    prev = Snapshot({"candidate": VersionCounts(100.0, 5.0, (0.1, math.inf), (90.0, 100.0))})
    cur = Snapshot({"candidate": VersionCounts(7.0, 1.0, (0.1, math.inf), (6.0, 7.0))})
    d = snapshot_delta(prev, cur)["candidate"]
    assert (d.requests, d.errors, d.bucket_counts) == (7.0, 1.0, (6.0, 1.0))


def test_sum_counts_adds_replicas_and_refuses_different_buckets() -> None:
    a = VersionCounts(10.0, 1.0, (0.1, math.inf), (8.0, 2.0))
    b = VersionCounts(5.0, 2.0, (0.1, math.inf), (1.0, 4.0))
    total = sum_counts([a, b])
    assert total == VersionCounts(15.0, 3.0, (0.1, math.inf), (9.0, 6.0))
    with pytest.raises(MetricsFormatError, match="different latency buckets"):
        sum_counts([a, VersionCounts(1.0, 0.0, (0.2, math.inf), (1.0, 0.0))])


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    edges = (0.1, 0.2, 0.4, math.inf)
    counts = (50.0, 30.0, 20.0, 0.0)
    # rank 0.5*100 = 50 falls at the top of the first bucket.
    assert histogram_quantile(0.5, edges, counts) == pytest.approx(0.1)
    # rank 90: 10 into the third bucket of 20 -> 0.2 + 0.2 * 10/20.
    assert histogram_quantile(0.9, edges, counts) == pytest.approx(0.3)
    # rank 25: half of the first bucket (lower edge 0).
    assert histogram_quantile(0.25, edges, counts) == pytest.approx(0.05)
    # In +Inf: the largest finite edge.
    assert histogram_quantile(0.99, edges, (1.0, 0.0, 0.0, 99.0)) == 0.4
    assert math.isnan(histogram_quantile(0.99, edges, (0.0, 0.0, 0.0, 0.0)))


def test_histogram_quantile_matches_uniform_data() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, 200_000)
    edges = (*tuple(np.linspace(0.05, 1.0, 20)), math.inf)
    counts = np.histogram(x, bins=[0.0, *edges[:-1], np.inf])[0]
    for q in (0.5, 0.9, 0.99):
        assert histogram_quantile(q, edges, tuple(counts)) == pytest.approx(
            np.quantile(x, q), abs=2e-3
        )


def _expand(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts), dtype=float), counts)


@pytest.mark.parametrize(
    ("c1", "c2"),
    [
        ([0, 5, 10, 3, 1], [2, 20, 15, 2, 0]),
        ([1, 1, 1, 1, 30], [30, 1, 1, 1, 1]),
        ([4, 0, 0, 0, 0], [0, 0, 0, 0, 6]),
        ([3, 3, 3], [3, 3, 3]),
    ],
)
def test_mann_whitney_on_buckets_equals_scipy_on_tied_samples(c1: list[int], c2: list[int]) -> None:
    mw = mann_whitney_buckets(c1, c2)
    ref = stats.mannwhitneyu(
        _expand(c1), _expand(c2), alternative="greater", method="asymptotic", use_continuity=True
    )
    assert mw.u == pytest.approx(ref.statistic, rel=1e-12)
    assert mw.pvalue_greater == pytest.approx(ref.pvalue, rel=1e-9)
    n1, n2 = sum(c1), sum(c2)
    assert mw.cles == pytest.approx(ref.statistic / (n1 * n2), rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 40), min_size=2, max_size=8).flatmap(
        lambda a: st.tuples(
            st.just(a), st.lists(st.integers(0, 40), min_size=len(a), max_size=len(a))
        )
    )
)
def test_mann_whitney_property_matches_scipy(pair: tuple[list[int], list[int]]) -> None:
    c1, c2 = pair
    x, y = _expand(c1), _expand(c2)
    mw = mann_whitney_buckets(c1, c2)
    if x.size == 0 or y.size == 0:
        assert math.isnan(mw.u)
        return
    ref = stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic", use_continuity=True)
    assert mw.u == pytest.approx(ref.statistic, rel=1e-12, abs=1e-9)
    if np.unique(np.concatenate([x, y])).size > 1:
        assert mw.pvalue_greater == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-12)
    else:
        assert mw.pvalue_greater == 1.0  # everything tied: no evidence
    assert 0.0 <= mw.cles <= 1.0


def test_mann_whitney_empty_sample_is_nan() -> None:
    mw = mann_whitney_buckets([0, 0], [3, 4])
    assert math.isnan(mw.pvalue_greater)
    with pytest.raises(ValueError, match="differ in length"):
        mann_whitney_buckets([1, 2], [1])


def test_error_comparison_uses_pooled_z_with_enough_errors() -> None:
    cmp = compare_error_rates(60, 1000, 400, 20000)
    z, p_two = proportions_ztest([60, 400], [1000, 20000], alternative="larger")
    assert cmp.method == "z_pooled"
    assert cmp.z == pytest.approx(z, rel=1e-10)
    assert cmp.pvalue_greater == pytest.approx(p_two, rel=1e-9)
    assert cmp.rate_candidate == 0.06
    assert cmp.rate_stable == 0.02


def test_error_comparison_is_exact_for_rare_errors() -> None:
    # 2 errors in 160 requests against 8 in 16000: the z-test says p ~ 1e-8.
    cmp = compare_error_rates(2, 160, 8, 16000)
    assert cmp.method == "exact_conditional"
    ref = stats.binomtest(2, 10, 160 / 16160, alternative="greater").pvalue
    assert cmp.pvalue_greater == pytest.approx(ref, rel=1e-10)
    assert cmp.pvalue_greater > 1e-3
    none = compare_error_rates(0, 100, 0, 1000)
    assert none.pvalue_greater == 1.0
