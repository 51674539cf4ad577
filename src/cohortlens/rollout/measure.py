"""Service metrics over one analysis window: parsing, deltas and the statistics on them.

Pure functions. The service exports cumulative counters (``/metrics``, prometheus_client
text format); a measurement is the difference of two scrapes, per version:

* ``requests``: ``Δcohortlens_http_requests_total`` over routes served by that version;
* ``errors``: ``Δcohortlens_model_failures_total`` + ``Δ`` 5xx responses (a failed
  candidate is answered by the stable model with a 200, so both count);
* ``buckets``: ``Δcohortlens_http_request_duration_seconds_bucket``, de-cumulated to counts
  per latency bucket.

"candidate" is ``model_role="candidate"`` with ``model_version`` = the rollout's model;
"stable" is ``model_role="stable"`` (any version). A counter that went down between two
scrapes was reset (the process restarted): its delta is its new value, as Prometheus'
``increase`` assumes.

Latency statistics on buckets:

* quantiles interpolate linearly inside the bucket that holds the rank, with 0 as the
  lower edge of the first bucket, and the largest finite edge when the rank falls in
  ``+Inf`` (the convention of Prometheus' ``histogram_quantile``);
* Mann–Whitney U treats observations in the same bucket as ties: each bucket gets the
  mid-rank of its block, and the variance carries the tie correction
  ``n₁n₂/12 · ((N+1) − Σ(tᵢ³ − tᵢ)/(N(N−1)))``. This is exact for the bucketed data, and
  conservative for the underlying latencies (ties only lose information). The effect size
  is the common-language effect size ``U₁/(n₁n₂) = P(X₁ > X₂) + ½·P(tie)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from scipy import special, stats

from cohortlens.experiments.analysis import compare
from cohortlens.experiments.spec import MetricKind
from cohortlens.experiments.stats import SufficientStats

REQUESTS = "cohortlens_http_requests"
LATENCY = "cohortlens_http_request_duration_seconds"
FAILURES = "cohortlens_model_failures"
MODEL_INFO = "cohortlens_model_info"
VERSIONS = ("candidate", "stable")


class MetricsFormatError(ValueError):
    """The scraped text is not the service's metrics (unparsable or missing families)."""


@dataclass(frozen=True)
class VersionCounts:
    """Counts of one version (cumulative in a snapshot, deltas in a window).

    Attributes:
        requests: requests routed to the version.
        errors: failed requests (model failures + 5xx responses).
        buckets: latency bucket upper edges in seconds (ascending, ``inf`` last) and the
            matching counts, cumulative as exported (``le``) in a snapshot.
    """

    requests: float = 0.0
    errors: float = 0.0
    bucket_edges_s: tuple[float, ...] = ()
    bucket_counts: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``inf`` as the string ``"+Inf"``)."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "le": [_le_str(e) for e in self.bucket_edges_s],
            "counts": list(self.bucket_counts),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VersionCounts:
        """Inverse of :meth:`to_dict`."""
        return cls(
            requests=float(data["requests"]),
            errors=float(data["errors"]),
            bucket_edges_s=tuple(float(e) for e in data["le"]),
            bucket_counts=tuple(float(c) for c in data["counts"]),
        )


@dataclass(frozen=True)
class Snapshot:
    """Cumulative counters of one scrape of one service process, per version."""

    versions: Mapping[str, VersionCounts] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (persisted as the provider's baseline in the rollout status)."""
        return {v: c.to_dict() for v, c in self.versions.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        """Inverse of :meth:`to_dict`."""
        return cls({v: VersionCounts.from_dict(c) for v, c in data.items()})


@dataclass(frozen=True)
class Window:
    """What each version did during one analysis window (non-cumulative bucket counts)."""

    candidate: VersionCounts
    stable: VersionCounts
    window_s: float

    def version(self, name: str) -> VersionCounts:
        """``candidate`` or ``stable``."""
        return self.candidate if name == "candidate" else self.stable

    def to_dict(self) -> dict[str, Any]:
        """JSON form for measurement events."""
        return {
            "window_s": self.window_s,
            "candidate": self.candidate.to_dict(),
            "stable": self.stable.to_dict(),
        }


# ---------------------------------------------------------------------------- parsing


def parse_service_metrics(
    text: str, candidate_version: str, routes: Iterable[str] | None = None
) -> Snapshot:
    """Cumulative counters per version from the service's ``/metrics`` text.

    Raises:
        MetricsFormatError: the text cannot be parsed, or lacks the request counter.
    """
    route_set = set(routes) if routes is not None else None
    req = {v: 0.0 for v in VERSIONS}
    err = {v: 0.0 for v in VERSIONS}
    buckets: dict[str, dict[float, float]] = {v: {} for v in VERSIONS}
    seen_requests = False
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError) as exc:
        raise MetricsFormatError(f"not Prometheus text format: {exc}") from exc
    for family in families:
        if family.name not in (REQUESTS, LATENCY, FAILURES):
            continue
        seen_requests = seen_requests or family.name == REQUESTS
        for sample in family.samples:
            labels = sample.labels
            version = _version_of(labels, candidate_version)
            if version is None:
                continue
            if (
                family.name != FAILURES
                and route_set is not None
                and labels.get("route") not in route_set
            ):
                continue
            if family.name == REQUESTS and sample.name == REQUESTS + "_total":
                req[version] += sample.value
                if str(labels.get("status", "")).startswith("5"):
                    err[version] += sample.value
            elif family.name == FAILURES and sample.name == FAILURES + "_total":
                err[version] += sample.value
            elif family.name == LATENCY and sample.name == LATENCY + "_bucket":
                edge = float(labels["le"])
                buckets[version][edge] = buckets[version].get(edge, 0.0) + sample.value
    if not seen_requests:
        raise MetricsFormatError(f"no {REQUESTS}_total counter in the scraped text")
    versions = {}
    for v in VERSIONS:
        edges = tuple(sorted(buckets[v]))
        versions[v] = VersionCounts(
            requests=req[v],
            errors=err[v],
            bucket_edges_s=edges,
            bucket_counts=tuple(buckets[v][e] for e in edges),
        )
    return Snapshot(versions)


def candidate_loaded(text: str, candidate_version: str) -> bool:
    """Whether a replica's ``/metrics`` say it serves ``candidate_version`` as the candidate
    (``cohortlens_model_info{model_role="candidate",model_version=...} 1``, published only
    once the replica has loaded the model).

    Raises:
        MetricsFormatError: the text cannot be parsed.
    """
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError) as exc:
        raise MetricsFormatError(f"not Prometheus text format: {exc}") from exc
    for family in families:
        if family.name != MODEL_INFO:
            continue
        for sample in family.samples:
            labels = sample.labels
            if (
                labels.get("model_role") == "candidate"
                and labels.get("model_version") == candidate_version
                and sample.value >= 1.0
            ):
                return True
    return False


def _version_of(labels: Mapping[str, str], candidate_version: str) -> str | None:
    role = labels.get("model_role")
    if role == "stable":
        return "stable"
    if role == "candidate" and labels.get("model_version") == candidate_version:
        return "candidate"
    return None


# ---------------------------------------------------------------------------- deltas


def counter_delta(prev: float, cur: float) -> float:
    """Increase of a counter between two scrapes; a decrease means a reset (delta = cur)."""
    return cur - prev if cur >= prev else cur


def snapshot_delta(prev: Snapshot, cur: Snapshot) -> dict[str, VersionCounts]:
    """Per-version window counts between two snapshots of the same process.

    Bucket counts come out non-cumulative (one count per bucket). A reset of the request
    counter resets the whole version (every series of a process restarts together).
    """
    out = {}
    for v in VERSIONS:
        p = prev.versions.get(v, VersionCounts())
        c = cur.versions.get(v, VersionCounts())
        reset = c.requests < p.requests
        base = VersionCounts() if reset else p
        prev_cum = dict(zip(base.bucket_edges_s, base.bucket_counts, strict=True))
        edges = c.bucket_edges_s
        cum = np.array(
            [
                counter_delta(prev_cum.get(e, 0.0), n)
                for e, n in zip(edges, c.bucket_counts, strict=True)
            ],
            dtype=np.float64,
        )
        # De-cumulate; clip tiny negatives from resets of single series.
        counts = np.clip(np.diff(cum, prepend=0.0), 0.0, None) if cum.size else cum
        out[v] = VersionCounts(
            requests=counter_delta(base.requests, c.requests),
            errors=counter_delta(base.errors, c.errors),
            bucket_edges_s=edges,
            bucket_counts=tuple(float(x) for x in counts),
        )
    return out


def sum_counts(parts: Iterable[VersionCounts]) -> VersionCounts:
    """Add window counts of several processes (replicas); bucket edges must agree."""
    parts = list(parts)
    edges: tuple[float, ...] = ()
    total = np.zeros(0)
    req = err = 0.0
    for p in parts:
        req += p.requests
        err += p.errors
        if not p.bucket_edges_s:
            continue
        if not edges:
            edges, total = p.bucket_edges_s, np.zeros(len(p.bucket_edges_s))
        if p.bucket_edges_s != edges:
            raise MetricsFormatError(
                f"replicas export different latency buckets: {edges} vs {p.bucket_edges_s}"
            )
        total = total + np.asarray(p.bucket_counts, dtype=np.float64)
    return VersionCounts(req, err, edges, tuple(float(x) for x in total))


# ---------------------------------------------------------------------------- statistics


def histogram_quantile(q: float, edges: tuple[float, ...], counts: tuple[float, ...]) -> float:
    """Quantile ``q`` of bucketed data (non-cumulative counts); NaN when empty."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile == {q}, must be in (0, 1)")
    c = np.asarray(counts, dtype=np.float64)
    total = float(c.sum())
    if total <= 0.0 or not edges:
        return math.nan
    cum = np.cumsum(c)
    rank = q * total
    i = int(np.searchsorted(cum, rank, side="left"))
    i = min(i, len(edges) - 1)
    upper = edges[i]
    if math.isinf(upper):
        finite = [e for e in edges if math.isfinite(e)]
        return finite[-1] if finite else math.nan
    lower = edges[i - 1] if i > 0 else 0.0
    below = float(cum[i - 1]) if i > 0 else 0.0
    inside = float(c[i])
    if inside <= 0.0:
        return upper
    return lower + (upper - lower) * (rank - below) / inside


@dataclass(frozen=True)
class MannWhitney:
    """Mann–Whitney U of sample 1 (candidate) against sample 2 (stable) on bucketed data.

    Attributes:
        u: ``U₁ = R₁ − n₁(n₁+1)/2`` (mid-ranks).
        z: standardised U with tie correction and a continuity correction of ½.
        pvalue_greater: one-sided p-value for "sample 1 tends to be larger".
        cles: ``U₁/(n₁n₂)``.
        n1, n2: sample sizes.
    """

    u: float
    z: float
    pvalue_greater: float
    cles: float
    n1: float
    n2: float


def mann_whitney_buckets(counts1: Iterable[float], counts2: Iterable[float]) -> MannWhitney:
    """Mann–Whitney U from per-bucket counts of two samples over the same buckets."""
    c1 = np.asarray(list(counts1), dtype=np.float64)
    c2 = np.asarray(list(counts2), dtype=np.float64)
    if c1.shape != c2.shape:
        raise ValueError(f"bucket counts differ in length: {c1.size} vs {c2.size}")
    n1, n2 = float(c1.sum()), float(c2.sum())
    if n1 <= 0.0 or n2 <= 0.0:
        return MannWhitney(math.nan, math.nan, math.nan, math.nan, n1, n2)
    t = c1 + c2
    n = n1 + n2
    before = np.cumsum(t) - t
    midrank = before + (t + 1.0) / 2.0
    r1 = float(c1 @ midrank)
    u = r1 - n1 * (n1 + 1.0) / 2.0
    mean = n1 * n2 / 2.0
    tie = float(((t**3) - t).sum()) / (n * (n - 1.0)) if n > 1 else 0.0
    var = n1 * n2 / 12.0 * ((n + 1.0) - tie)
    if var <= 0.0:  # every observation in one bucket: no evidence either way
        return MannWhitney(u, 0.0, 1.0, u / (n1 * n2), n1, n2)
    z = (u - mean - 0.5) / math.sqrt(var)
    p = float(special.ndtr(-z))
    return MannWhitney(u, z, p, u / (n1 * n2), n1, n2)


@dataclass(frozen=True)
class ProportionComparison:
    """One-sided test that the candidate's error rate is higher than the stable one's.

    Attributes:
        rate_candidate, rate_stable: the two error rates.
        z: the pooled z statistic (NaN when undefined).
        pvalue_greater: one-sided p-value.
        method: ``z_pooled`` or ``exact_conditional`` (see :func:`compare_error_rates`).
    """

    rate_candidate: float
    rate_stable: float
    z: float
    pvalue_greater: float
    method: str


#: Below this many expected errors in either arm the normal approximation is not trusted.
MIN_EXPECTED_ERRORS = 5.0


def compare_error_rates(
    errors_c: float, requests_c: float, errors_s: float, requests_s: float
) -> ProportionComparison:
    """One-sided two-proportion test that the candidate's error rate is higher.

    With at least :data:`MIN_EXPECTED_ERRORS` expected errors (and successes) in each arm
    under the pooled rate, the pooled z-test of :func:`cohortlens.experiments.compare`
    (binary metric). Below that the normal approximation overstates rare excesses (2 errors
    in 160 requests against a 0.05 % baseline reads as p ≈ 1e-8), so the exact conditional
    test is used: given ``E`` errors in all, the candidate's count is
    ``Binomial(E, n_c / (n_c + n_s))`` under equal rates. Counts are rounded.
    """
    nc, ns = round(requests_c), round(requests_s)
    ec, es = min(round(errors_c), nc), min(round(errors_s), ns)
    rate_c = ec / nc if nc else math.nan
    rate_s = es / ns if ns else math.nan
    stable = SufficientStats(n=ns, sum_y=float(es), sum_yy=float(es))
    cand = SufficientStats(n=nc, sum_y=float(ec), sum_yy=float(ec))
    est = compare(stable, cand, MetricKind.BINARY, binary_test="pooled")
    z = est.statistic
    pooled = (ec + es) / (nc + ns) if nc + ns else math.nan
    expected = (
        min(nc * pooled, ns * pooled, nc * (1 - pooled), ns * (1 - pooled)) if nc and ns else 0.0
    )
    if expected >= MIN_EXPECTED_ERRORS and not math.isnan(z):
        return ProportionComparison(rate_c, rate_s, z, float(special.ndtr(-z)), "z_pooled")
    total = ec + es
    if total == 0 or not nc or not ns:
        return ProportionComparison(rate_c, rate_s, z, 1.0, "exact_conditional")
    share = nc / (nc + ns)
    # P(X >= ec) for X ~ Binomial(total, share)
    p = float(stats.binom.sf(ec - 1, total, share))
    return ProportionComparison(rate_c, rate_s, z, min(1.0, p), "exact_conditional")


def _le_str(edge: float) -> str:
    return "+Inf" if math.isinf(edge) else repr(edge)


__all__ = [
    "MannWhitney",
    "MetricsFormatError",
    "ProportionComparison",
    "Snapshot",
    "VersionCounts",
    "Window",
    "compare_error_rates",
    "counter_delta",
    "histogram_quantile",
    "mann_whitney_buckets",
    "parse_service_metrics",
    "snapshot_delta",
    "sum_counts",
]
