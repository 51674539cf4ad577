"""Cohort discovery and assignment at 1M learners, beside plain scikit-learn KMeans.

Cases (each in its own process, median of ``repeats`` runs after one warm-up):

* ``discover``: ``CohortModel().fit(features, outcomes=...)`` with k chosen automatically over
  3..12: robust scaling, the k sweep (silhouette + bootstrap stability on samples), the final
  Lloyd fit (n_init = 10), k-POD refits for learners with null features, quality (silhouette,
  Davies–Bouldin, outcome association with its logistic ceiling), profiles, names, cards.
* ``sklearn_kmeans``: the peer, ``KMeans(k, n_init=10)`` (Lloyd) on the same scaled matrix of
  complete learners, with the k that ``discover`` chose (timed: the fit only).
* ``assign``: ``predict`` of the 1M learners with a model loaded from its artifact (timed:
  reading the columns from the Arrow table, scaling, nearest centroid, ids), as a service
  does it: after the process's first call, which also loads the compiled kernel from numba's
  cache (reported as ``cold_seconds``).
* ``sklearn_predict``: the peer's ``KMeans.predict`` on the prepared matrix.
* ``assign_one``: ``predict_one`` of a single learner's feature dict, in process (median per
  call over 100K calls of varied learners), in microseconds.

Data: 1M simulated learners (20 simulations of 50K learners, seeds 2000..2019, default
parameters), their feature table (``compute_features``) and outcomes, cached under
``bench_output/data``.

Usage: ``python -m benchmarks.bench_cohorts [--learners 1000000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import OUT, emit, run_case

CHUNK_LEARNERS = 50_000


def make_data(n_learners: int) -> dict[str, Path]:
    """Feature table and outcomes of ``n_learners`` simulated learners (cached Parquet)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from cohortlens.features import compute_features
    from cohortlens.simulate import SimulationParams, simulate

    data = OUT / "data"
    data.mkdir(parents=True, exist_ok=True)
    feats_path = data / f"cohort_features_{n_learners}.parquet"
    out_path = data / f"cohort_outcomes_{n_learners}.parquet"
    if feats_path.exists() and out_path.exists():
        return {"features": feats_path, "outcomes": out_path}
    feats, outs = [], []
    done, i = 0, 0
    while done < n_learners:
        n = min(CHUNK_LEARNERS, n_learners - done)
        sim = simulate(SimulationParams(n_learners=n, seed=2000 + i))
        prefix = f"s{i}-"
        f = compute_features(sim.events)
        f = f.set_column(0, "learner_id", pc.binary_join_element_wise(prefix, f["learner_id"], ""))
        o = sim.outcomes
        o = o.set_column(0, "learner_id", pc.binary_join_element_wise(prefix, o["learner_id"], ""))
        feats.append(f)
        outs.append(o)
        done += n
        i += 1
    pq.write_table(pa.concat_tables(feats), feats_path)
    pq.write_table(pa.concat_tables(outs), out_path)
    return {"features": feats_path, "outcomes": out_path}


def _case(kind: str, features: str, outcomes: str, model_path: str) -> None:
    """One measured run, in its own process."""
    import numpy as np
    import pyarrow.parquet as pq
    from sklearn.cluster import KMeans

    from cohortlens.cohorts import CohortModel
    from cohortlens.cohorts._matrix import analysis_matrix

    table = pq.read_table(features)
    extra: dict[str, Any] = {"learners": table.num_rows}
    if kind == "discover":
        out = pq.read_table(outcomes)
        start = time.perf_counter()
        model = CohortModel(random_state=0).fit(table, outcomes=out, feature_run="bench")
        seconds = time.perf_counter() - start
        Path(model_path).write_text(json.dumps(model.to_dict(), allow_nan=False))
        extra |= {"k": model.n_cohorts_, "silhouette": round(model.quality_.silhouette, 3)}
        emit({"seconds": seconds, **extra})
        return
    model = CohortModel.from_dict(json.loads(Path(model_path).read_text()))
    if kind == "assign":
        start = time.perf_counter()
        model.predict(table)  # first call of the process: loads the compiled kernel
        extra["cold_seconds"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        labels = model.predict(table)
        seconds = time.perf_counter() - start
        extra["cohorts_seen"] = len(np.unique(labels))
    elif kind == "assign_one":
        rows = table.slice(0, 2000).to_pylist()
        keys = [*(s.column for s in model.features_), "n_events"]
        rows = [{k: r[k] for k in keys} for r in rows]
        for r in rows[:200]:
            model.predict_one(r)  # warm the fast path
        per_call = []
        for _ in range(50):  # 50 x 2000 calls
            start = time.perf_counter()
            for r in rows:
                model.predict_one(r)
            per_call.append((time.perf_counter() - start) / len(rows))
        seconds = statistics.median(per_call)
        extra["microseconds_per_learner"] = round(seconds * 1e6, 2)
    else:
        z = model.scaler_.transform(analysis_matrix(table, model.features_))
        z = np.ascontiguousarray(z[np.isfinite(z).all(axis=1)])
        extra["complete_learners"] = len(z)
        km = KMeans(model.n_cohorts_, n_init=10, algorithm="lloyd", random_state=0)
        start = time.perf_counter()
        km.fit(z)
        seconds = time.perf_counter() - start
        if kind == "sklearn_predict":
            start = time.perf_counter()
            km.predict(z)
            seconds = time.perf_counter() - start
        extra["k"] = model.n_cohorts_
    emit({"seconds": seconds, **extra})


def run(n_learners: int = 1_000_000, repeats: int = 3) -> list[dict[str, Any]]:
    """Measure every case and return table rows."""
    files = make_data(n_learners)
    model_path = str((OUT / "data" / f"cohort_model_{n_learners}.json").resolve())
    args = ["--features", str(files["features"].resolve()), "--outcomes"]
    args += [str(files["outcomes"].resolve()), "--model", model_path]
    results = {}
    for kind in ("discover", "sklearn_kmeans", "assign", "sklearn_predict", "assign_one"):
        results[kind] = run_case("benchmarks.bench_cohorts", ["--case", kind, *args], repeats)
    rows = []
    labels = {
        "discover": ("discover (k auto 3..12, n_init=10, quality, cards)", "sklearn_kmeans"),
        "sklearn_kmeans": ("scikit-learn KMeans(k, n_init=10), fit only (peer)", None),
        "assign": ("assign 1M learners (loaded model, from Arrow)", "sklearn_predict"),
        "sklearn_predict": ("scikit-learn KMeans.predict on the matrix (peer)", None),
        "assign_one": ("assign one learner in process (predict_one)", None),
    }
    for kind, r in results.items():
        name, peer = labels[kind]
        row: dict[str, Any] = {
            "case": name,
            "learners": r["learners"],
            "seconds": round(r["seconds"], 6 if kind == "assign_one" else 3),
            "runs": [round(s, 6 if kind == "assign_one" else 3) for s in r["runs"]],
            "peak_rss_mb": r["peak_rss_mb"],
        }
        if kind == "assign_one":
            row["microseconds_per_learner"] = round(r["seconds"] * 1e6, 2)
        else:
            row["learners_per_s"] = round(r["learners"] / r["seconds"])
        if "k" in r:
            row["k"] = r["k"]
        if "cold_seconds" in r:
            row["first_call_seconds"] = r["cold_seconds"]
        if peer:
            row["time_vs_peer"] = round(r["seconds"] / results[peer]["seconds"], 2)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--learners", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case")
    parser.add_argument("--features")
    parser.add_argument("--outcomes")
    parser.add_argument("--model")
    args = parser.parse_args()
    if args.case:
        _case(args.case, args.features, args.outcomes, args.model)
        return
    print(json.dumps(run(args.learners, args.repeats), indent=2))


if __name__ == "__main__":
    main()
