"""Spark engine in local mode beside the local engine; k-means on the driver vs Spark MLlib.

Cases (one process, one Spark session ``local[2]`` for the whole run; the session start and a
warm-up run on the smallest size are not timed):

* ``features``: per size, the local engine ``build_features(path, n_workers=2)`` (in memory,
  returns an Arrow table) and ``spark_features(spark, path, out)`` (global pass, kernel pass
  through ``applyInArrow``, Parquet written), alternating, ``repeats`` times each; medians,
  events/s, the ratio (Spark time ÷ local time), Spark's split into global pass and kernel +
  write, peak RSS of the process tree (driver JVM and Python workers included), and the
  largest relative difference between the two feature tables.
* ``kmeans``: per number of learners, one k-means fit (k = 8, one k-means++ / k-means||
  initialisation, at most 100 Lloyd iterations; scikit-learn's tol 1e-4 is relative to the
  mean feature variance, MLlib gets the same tolerance in absolute units) of an 8-feature
  matrix read from Parquet: scikit-learn on the driver (read + fit) vs Spark MLlib
  ``KMeans`` (read + ``VectorAssembler`` + cache, then fit); times, iterations and the
  objective (inertia) each.

Data: the simulated event sets of ``bench_features`` (cached under ``bench_output/data``) and,
for k-means, an 8-cluster Gaussian mixture.

Usage: ``python -m benchmarks.bench_spark [--sizes 1000000 10000000 50000000] [--repeats 1]
[--cases features kmeans] [--learners 100000 1000000 4000000] [--driver-memory 4g]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks._harness import OUT
from benchmarks.bench_features import TreeRss, make_data

K = 8
DIM = 8


def session(driver_memory: str, shuffle_partitions: int = 32) -> Any:
    """A ``local[2]`` session sized for the benchmark (UI and progress bars off)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("cohortlens-bench")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.local.dir", str(OUT / "spark-tmp"))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def max_rel_diff(a: pa.Table, b: pa.Table) -> float:
    """Largest relative difference over the float columns (after sorting by learner).

    Raises if learners, nulls or any non-float column differ.
    """
    a = a.take(pc.sort_indices(a, [("learner_id", "ascending")]))
    b = b.cast(a.schema)
    b = b.take(pc.sort_indices(b, [("learner_id", "ascending")]))
    worst = 0.0
    for name in a.column_names:
        x, y = a.column(name), b.column(name)
        if not x.is_null().equals(y.is_null()):
            raise AssertionError(f"{name}: nulls differ")
        if pa.types.is_floating(x.type):
            u = np.asarray(x.drop_null().to_numpy(), float)
            v = np.asarray(y.drop_null().to_numpy(), float)
            scale = np.maximum(np.abs(u), np.abs(v))
            rel = np.divide(np.abs(u - v), scale, out=np.zeros_like(u), where=scale > 0)
            worst = max(worst, float(rel.max(initial=0.0)))
        elif not x.equals(y):
            raise AssertionError(f"{name} differs")
    return worst


def _spark_run(spark: Any, path: Path, out: Path) -> tuple[float, float, int]:
    """(total seconds, global-pass seconds, buckets) of one Spark run writing ``out``."""
    from cohortlens.features.spark import feature_frame, write_parquet

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    run = feature_frame(spark, str(path))
    t_global = time.perf_counter() - t0
    write_parquet(run.frame, str(out))
    return time.perf_counter() - t0, t_global, run.n_buckets


def features_case(spark: Any, n_events: int, repeats: int) -> dict[str, Any]:
    """Local engine vs Spark (local mode) on about ``n_events`` simulated events."""
    from cohortlens.features import build_features

    path = make_data(n_events)
    n = int((path / "_DONE").read_text())
    out = OUT / "spark-features"
    local_runs, spark_runs, global_runs, peaks = [], [], [], {"local": 0.0, "spark": 0.0}
    local = None
    buckets = 0
    for _ in range(repeats):
        with TreeRss() as rss:
            t0 = time.perf_counter()
            local = build_features(path, n_workers=2)
            local_runs.append(time.perf_counter() - t0)
        peaks["local"] = max(peaks["local"], rss.peak)
        with TreeRss() as rss:
            total, t_global, buckets = _spark_run(spark, path, out)
        spark_runs.append(total)
        global_runs.append(t_global)
        peaks["spark"] = max(peaks["spark"], rss.peak)
    assert local is not None
    diff = max_rel_diff(local, pq.read_table(out))
    t_local, t_spark = statistics.median(local_runs), statistics.median(spark_runs)
    return {
        "case": "features",
        "events": n,
        "learners": local.num_rows,
        "buckets": buckets,
        "local_s": round(t_local, 2),
        "spark_s": round(t_spark, 2),
        "spark_global_pass_s": round(statistics.median(global_runs), 2),
        "local_events_per_s": round(n / t_local),
        "spark_events_per_s": round(n / t_spark),
        "spark_time_over_local": round(t_spark / t_local, 2),
        "max_rel_diff": diff,
        "peak_tree_rss_mib": {k: round(v, 1) for k, v in peaks.items()},
        "runs": {
            "local": [round(r, 2) for r in local_runs],
            "spark": [round(r, 2) for r in spark_runs],
        },
        "load_avg_1m": os.getloadavg()[0],
    }


def kmeans_data(n_learners: int) -> Path:
    """An 8-cluster Gaussian mixture in 8 dimensions (Parquet, cached)."""
    path = OUT / "data" / f"kmeans_{n_learners}.parquet"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    centers = rng.normal(0.0, 3.0, (K, DIM))
    label = rng.integers(0, K, n_learners)
    x = centers[label] + rng.normal(0.0, 1.0, (n_learners, DIM))
    pq.write_table(pa.table({f"f{j}": x[:, j] for j in range(DIM)}), path)
    return path


def kmeans_case(spark: Any, n_learners: int) -> dict[str, Any]:
    """scikit-learn on the driver vs MLlib, the same matrix read from Parquet."""
    from pyspark.ml.clustering import KMeans as SparkKMeans
    from pyspark.ml.feature import VectorAssembler
    from sklearn.cluster import KMeans

    path = kmeans_data(n_learners)
    cols = [f"f{j}" for j in range(DIM)]
    t0 = time.perf_counter()
    table = pq.read_table(path)
    x = np.column_stack([table.column(c).to_numpy() for c in cols])
    t_read = time.perf_counter() - t0
    km = KMeans(K, n_init=1, max_iter=100, tol=1e-4, algorithm="lloyd", random_state=0)
    t1 = time.perf_counter()
    km.fit(x)
    t_fit = time.perf_counter() - t1
    # scikit-learn's tol is relative to the mean feature variance; MLlib's is absolute
    abs_tol = 1e-4 * float(np.mean(np.var(x, axis=0)))
    del x, table

    t0 = time.perf_counter()
    df = spark.read.parquet(str(path))
    vec = VectorAssembler(inputCols=cols, outputCol="features").transform(df).select("features")
    vec = vec.cache()
    vec.count()
    t_sread = time.perf_counter() - t0
    skm = SparkKMeans(k=K, maxIter=100, tol=abs_tol, seed=0, initMode="k-means||")
    t1 = time.perf_counter()
    model = skm.fit(vec)
    t_sfit = time.perf_counter() - t1
    summary = model.summary
    vec.unpersist()
    sk_total, sp_total = t_read + t_fit, t_sread + t_sfit
    return {
        "case": "kmeans",
        "learners": n_learners,
        "features": DIM,
        "k": K,
        "sklearn_read_s": round(t_read, 2),
        "sklearn_fit_s": round(t_fit, 2),
        "sklearn_iter": int(km.n_iter_),
        "sklearn_inertia": round(float(km.inertia_), 1),
        "mllib_read_cache_s": round(t_sread, 2),
        "mllib_fit_s": round(t_sfit, 2),
        "mllib_iter": int(summary.numIter),
        "mllib_inertia": round(float(summary.trainingCost), 1),
        "mllib_time_over_sklearn": round(sp_total / sk_total, 2),
        "load_avg_1m": os.getloadavg()[0],
    }


def run(
    sizes: tuple[int, ...] = (1_000_000, 10_000_000, 50_000_000),
    repeats: int = 1,
    cases: tuple[str, ...] = ("features", "kmeans"),
    learners: tuple[int, ...] = (100_000, 1_000_000, 4_000_000),
    driver_memory: str = "4g",
) -> list[dict[str, Any]]:
    """All cases (the ``benchmarks.run`` suite entry point)."""
    import warnings

    warnings.filterwarnings("ignore", "PySpark does not yet fully support", FutureWarning)
    t0 = time.perf_counter()
    spark = session(driver_memory)
    rows: list[dict[str, Any]] = [
        {"case": "session_start", "seconds": round(time.perf_counter() - t0, 2)}
    ]
    try:
        if "features" in cases:
            # warm-up: Python workers, numba caches, JVM code paths (not timed)
            _spark_run(spark, make_data(min(*sizes, 1_000_000)), OUT / "spark-features")
            for n in sizes:
                rows.append(features_case(spark, n, repeats))
                print(json.dumps(rows[-1]), flush=True)
        if "kmeans" in cases:
            for n in learners:
                rows.append(kmeans_case(spark, n))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        spark.stop()
    return rows


def main() -> None:
    """CLI: print one JSON row per case."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000, 50_000_000])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--cases", nargs="*", default=["features", "kmeans"])
    ap.add_argument("--learners", type=int, nargs="*", default=[100_000, 1_000_000, 4_000_000])
    ap.add_argument("--driver-memory", default="4g")
    a = ap.parse_args()
    rows = run(tuple(a.sizes), a.repeats, tuple(a.cases), tuple(a.learners), a.driver_memory)
    print(json.dumps(rows[0]), flush=True)


if __name__ == "__main__":
    main()
