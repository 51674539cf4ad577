"""Experiment analysis speed: analysis from sufficient statistics, and DuckDB reduction.

Cases (each in its own process, median of ``repeats`` after a warm-up):

* ``analyze``: 100 metrics × 5 variants (400 comparisons: 40 binary, 30 mean of which 15
  with CUPED, 30 ratio) from sufficient statistics, fixed-horizon + always-valid, Holm/BH,
  SRM. Peer: the same tests from the same sums with scipy/statsmodels
  (``ttest_ind_from_stats``, ``proportions_ztest``, a normal test for ratios), no CUPED,
  no relative lift, no sequential results.
* ``segments``: the per-cohort acceptance case (issue 14): 20 segments × 10 metrics × 3
  variants (4 binary, 3 mean of which 2 with CUPED, 3 ratio) from sufficient statistics,
  through ``analyze_segments`` (every segment analysed, BH across segments, per-segment SRM
  Holm-adjusted, Cochran's Q and pairwise tests per comparison). Peer: the same 400 tests
  from the same sums with scipy/statsmodels (``ttest_ind_from_stats``, ``proportions_ztest``,
  a normal test for ratios) and ``multipletests(fdr_bh)`` across segments; no CUPED, lifts,
  SRM or heterogeneity.
* ``reduce``: 10M per-learner rows (Parquet) to sufficient statistics for a binary metric,
  a capped mean with a covariate, and a ratio. Peer: one plain DuckDB ``GROUP BY`` with the
  same sums (no capping, no null rules, no validation).

Usage: ``python -m benchmarks.bench_experiments [--rows N] [--repeats R]``.
Targets (issue): analyze < 50 ms, segments < 50 ms, reduce < 5 s.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import OUT, emit, run_case


def make_stats(n_metrics: int = 100, n_variants: int = 5, seed: int = 0) -> tuple[list[Any], Any]:
    """Metric specs and one period of synthetic sufficient statistics."""
    from cohortlens.experiments import ExperimentStats, MetricKind, MetricSpec, SufficientStats

    rng = np.random.default_rng(seed)
    variants = ["control"] + [f"v{i}" for i in range(1, n_variants)]
    specs, metrics = [], {}
    for i in range(n_metrics):
        n = 20_000
        if i < 40:
            spec = MetricSpec(f"binary_{i}", MetricKind.BINARY)
            arms = {
                v: SufficientStats(n=n, sum_y=float(s), sum_yy=float(s))
                for v, s in zip(variants, rng.binomial(n, 0.3, n_variants), strict=True)
            }
        elif i < 70:
            spec = MetricSpec(f"mean_{i}", MetricKind.MEAN, covariate="pre" if i % 2 else None)
            arms = {}
            for v in variants:
                y = rng.lognormal(1, 1, 2000)
                x = y * 0.5 + rng.lognormal(1, 1, 2000) if spec.covariate else None
                s = SufficientStats.from_arrays(y, x=x)
                arms[v] = s
        else:
            spec = MetricSpec(f"ratio_{i}", MetricKind.RATIO, denominator="sessions")
            arms = {}
            for v in variants:
                d = 1.0 + rng.poisson(4, 2000)
                arms[v] = SufficientStats.from_arrays(d * rng.gamma(2, 2, 2000), d=d)
        specs.append(spec)
        metrics[spec.name] = arms
    return specs, ExperimentStats(units=dict.fromkeys(variants, 20_000), metrics=metrics)


def _peer_pvalues(specs: list[Any], stats: Any) -> list[float]:
    """scipy/statsmodels on the same sums: the tests only (no CUPED, lift CIs, sequential)."""
    from scipy import stats as sps
    from statsmodels.stats.proportion import proportions_ztest

    pvalues = []
    for spec in specs:
        arms = stats.metrics[spec.name]
        c = arms["control"]
        for v, t in arms.items():
            if v == "control":
                continue
            if spec.kind.value == "binary":
                pvalues.append(proportions_ztest([t.sum_y, c.sum_y], [t.n, c.n])[1])
            elif spec.kind.value == "mean":
                sd = [np.sqrt((s.sum_yy - s.sum_y**2 / s.n) / (s.n - 1)) for s in (t, c)]
                pvalues.append(
                    sps.ttest_ind_from_stats(
                        t.sum_y / t.n, sd[0], t.n, c.sum_y / c.n, sd[1], c.n, equal_var=False
                    ).pvalue
                )
            else:
                se2 = 0.0
                for s in (t, c):
                    mean, cov = s.moments(1)
                    r = mean[0] / mean[1]
                    se2 += (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / mean[1] ** 2 / s.n
                diff = t.sum_y / t.sum_d - c.sum_y / c.sum_d
                pvalues.append(2 * sps.norm.sf(abs(diff) / np.sqrt(se2)))
    return pvalues


def _peer_analyze(specs: list[Any], stats: Any) -> int:
    from statsmodels.stats.multitest import multipletests

    pvalues = _peer_pvalues(specs, stats)
    multipletests(pvalues, method="fdr_bh")
    return len(pvalues)


def make_segments(
    n_segments: int = 20, n_metrics: int = 10, n_variants: int = 3, seed: int = 0
) -> tuple[list[Any], dict[str, list[Any]]]:
    """Metric specs (4 binary, 3 mean of which 2 with CUPED, 3 ratio per 10) and one period
    of sufficient statistics per segment."""
    from cohortlens.experiments import ExperimentStats, MetricKind, MetricSpec, SufficientStats

    rng = np.random.default_rng(seed)
    variants = ["control"] + [f"v{i}" for i in range(1, n_variants)]
    specs = []
    for i in range(n_metrics):
        r = i % 10
        if r < 4:
            specs.append(MetricSpec(f"binary_{i}", MetricKind.BINARY))
        elif r < 7:
            specs.append(
                MetricSpec(f"mean_{i}", MetricKind.MEAN, covariate="pre" if r < 6 else None)
            )
        else:
            specs.append(MetricSpec(f"ratio_{i}", MetricKind.RATIO, denominator="sessions"))
    segments = {}
    for seg in range(n_segments):
        n = int(rng.integers(500, 3000))
        metrics = {}
        for spec in specs:
            arms = {}
            for v in variants:
                if spec.kind is MetricKind.BINARY:
                    k = float(rng.binomial(n, 0.2 + 0.02 * (seg % 10)))
                    arms[v] = SufficientStats(n=n, sum_y=k, sum_yy=k)
                elif spec.kind is MetricKind.MEAN:
                    y = rng.lognormal(1, 1, n)
                    x = y * 0.5 + rng.lognormal(1, 1, n) if spec.covariate else None
                    arms[v] = SufficientStats.from_arrays(y, x=x)
                else:
                    d = 1.0 + rng.poisson(4, n)
                    arms[v] = SufficientStats.from_arrays(d * rng.gamma(2, 2, n), d=d)
            metrics[spec.name] = arms
        segments[f"segment_{seg}"] = [
            ExperimentStats(units=dict.fromkeys(variants, n), metrics=metrics)
        ]
    return specs, segments


def _peer_segments(specs: list[Any], segments: dict[str, list[Any]]) -> int:
    """The same tests per segment, then BH across segments per (metric, variant)."""
    from statsmodels.stats.multitest import multipletests

    per_segment = np.array([_peer_pvalues(specs, periods[0]) for periods in segments.values()])
    for j in range(per_segment.shape[1]):
        multipletests(per_segment[:, j], method="fdr_bh")
    return int(per_segment.size)


def _case_segments(kind: str, repeats_inner: int = 20) -> None:
    from cohortlens.experiments.segments import analyze_segments

    specs, segments = make_segments()
    run = (
        (lambda: analyze_segments(specs, segments, by="segment"))
        if kind == "ours"
        else (lambda: _peer_segments(specs, segments))
    )
    run()  # warm-up
    times = []
    for _ in range(repeats_inner):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    emit(
        {
            "seconds": float(np.median(times)),
            "min_seconds": float(np.min(times)),
            "comparisons": 400,
        }
    )


def _case_analyze(kind: str, repeats_inner: int = 20) -> None:
    from cohortlens.experiments import AnalysisConfig, SequentialParams, analyze

    specs, stats = make_stats()
    config = AnalysisConfig(sequential=SequentialParams(tuning_n=40_000))
    run = (
        (lambda: analyze(specs, stats, config))
        if kind == "ours"
        else (lambda: _peer_analyze(specs, stats))
    )
    run()  # warm-up (imports, scipy ufunc setup)
    times = []
    for _ in range(repeats_inner):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    emit(
        {
            "seconds": float(np.median(times)),
            "min_seconds": float(np.min(times)),
            "comparisons": 400,
        }
    )


def make_rows(n_rows: int, seed: int = 1) -> Path:
    """Per-learner rows as Parquet (cached under bench_output/data)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = OUT / "data" / f"experiment_rows_{n_rows}.parquet"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pre = rng.lognormal(2, 1, n_rows) * (rng.random(n_rows) < 0.4)
    table = pa.table(
        {
            "learner_id": pa.array(np.char.add("u", np.arange(n_rows).astype(str))),
            "variant": pa.array(np.where(rng.random(n_rows) < 0.5, "control", "treatment")),
            "day": pa.array(rng.integers(1, 15, n_rows).astype(np.int32)),
            "completed": pa.array(rng.random(n_rows) < 0.3),
            "revenue": pa.array(
                0.5 * pre + rng.lognormal(2, 1, n_rows) * (rng.random(n_rows) < 0.4)
            ),
            "pre_revenue": pa.array(pre),
            "events": pa.array(1.0 + rng.poisson(6, n_rows)),
        }
    )
    pq.write_table(table, path)
    return path


def _case_reduce(kind: str, path: str) -> None:
    import duckdb

    from cohortlens.experiments import MetricKind, MetricSpec, reduce_to_stats

    specs = [
        MetricSpec("completed", MetricKind.BINARY),
        MetricSpec("revenue", MetricKind.MEAN, covariate="pre_revenue", cap_quantile=0.99),
        MetricSpec(
            "revenue_per_event", MetricKind.RATIO, numerator="revenue", denominator="events"
        ),
    ]
    start = time.perf_counter()
    if kind == "ours":
        (stats,) = reduce_to_stats(path, variant_col="variant", metrics=specs)
        rows = sum(stats.units.values())
    else:
        sql = (
            "SELECT variant, count(*), sum(c), sum(c*c), sum(r), sum(r*r), sum(p), sum(p*p), sum(p*r), "
            "sum(e), sum(e*e), sum(r*e) FROM (SELECT variant, CAST(completed AS DOUBLE) c, revenue r, "
            f"pre_revenue p, events e FROM read_parquet('{path}')) GROUP BY variant"
        )
        with duckdb.connect() as con:
            rows = sum(r[1] for r in con.execute(sql).fetchall())
    emit({"seconds": time.perf_counter() - start, "rows": rows})


def run(n_rows: int = 10_000_000, repeats: int = 3) -> list[dict[str, Any]]:
    """Measure the cases and return table rows."""
    rows: list[dict[str, Any]] = []
    peer = run_case("benchmarks.bench_experiments", ["--case", "analyze-peer"], 1)
    ours = run_case("benchmarks.bench_experiments", ["--case", "analyze-ours"], 1)
    for name, r in (("scipy/statsmodels tests only (peer)", peer), ("cohortlens analyze", ours)):
        rows.append(
            {
                "task": "analyze 100 metrics x 5 variants",
                "engine": name,
                "ms": round(1000 * r["seconds"], 1),
                "min_ms": round(1000 * r["min_seconds"], 1),
                "peak_rss_mb": r["peak_rss_mb"],
                "time_vs_peer": round(r["seconds"] / peer["seconds"], 2),
            }
        )
    peer = run_case("benchmarks.bench_experiments", ["--case", "segments-peer"], 1)
    ours = run_case("benchmarks.bench_experiments", ["--case", "segments-ours"], 1)
    for name, r in (
        ("scipy/statsmodels tests + BH (peer)", peer),
        ("cohortlens analyze_segments", ours),
    ):
        rows.append(
            {
                "task": "per segment: 20 segments x 10 metrics x 3 variants",
                "engine": name,
                "ms": round(1000 * r["seconds"], 1),
                "min_ms": round(1000 * r["min_seconds"], 1),
                "peak_rss_mb": r["peak_rss_mb"],
                "time_vs_peer": round(r["seconds"] / peer["seconds"], 2),
            }
        )
    path = str(make_rows(n_rows).resolve())
    peer = run_case(
        "benchmarks.bench_experiments", ["--case", "reduce-peer", "--path", path], repeats
    )
    ours = run_case(
        "benchmarks.bench_experiments", ["--case", "reduce-ours", "--path", path], repeats
    )
    for name, r in (("plain duckdb GROUP BY (peer)", peer), ("cohortlens reduce_to_stats", ours)):
        rows.append(
            {
                "task": f"reduce {n_rows:,} rows (3 metrics)",
                "engine": name,
                "ms": round(1000 * r["seconds"]),
                "min_ms": round(1000 * min(r["runs"])),
                "peak_rss_mb": r["peak_rss_mb"],
                "time_vs_peer": round(r["seconds"] / peer["seconds"], 2),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case")
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.case:
        task, kind = args.case.split("-")
        if task == "analyze":
            _case_analyze(kind)
        elif task == "segments":
            _case_segments(kind)
        else:
            _case_reduce(kind, args.path)
        return
    print(json.dumps(run(args.rows, args.repeats), indent=2))


if __name__ == "__main__":
    main()
