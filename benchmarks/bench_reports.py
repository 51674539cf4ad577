"""The cohort report at scale: build time and file size, beside a plain CSV export.

Cases (each in its own process, median of ``repeats`` runs after one warm-up):

* ``report``: ``write_report(model, path, features, outcomes=...)`` with a model loaded from
  its artifact: summaries, cards, the drill-down of every cohort (capped at
  ``MAX_ROWS_PER_COHORT`` learners each, with every learner scored to find the typical
  ones), the 2-D map of 2,500 learners, all charts. Reports the file size.
* ``csv``: the peer, what a user would otherwise export: every learner's id, cohort,
  distance to its centre and clustering features, scored with the same model and written
  by ``pyarrow.csv.write_csv``.

Data: the simulated learners of ``benchmarks.bench_cohorts`` (cached under
``bench_output/data``); the model is fitted once on them (k automatic, in its own process)
and stored.

Usage: ``python -m benchmarks.bench_reports [--learners 250000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import OUT, emit, run_case
from benchmarks.bench_cohorts import make_data


def _case(kind: str, features: str, outcomes: str, model_path: str, out: str) -> None:
    """One measured run, in its own process."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from cohortlens.cohorts import CohortModel, write_report

    table = pq.read_table(features)
    if kind == "fit":
        fitted = CohortModel(random_state=0).fit(table, outcomes=pq.read_table(outcomes))
        Path(model_path).write_text(json.dumps(fitted.to_dict(), allow_nan=False))
        return
    model = CohortModel.from_dict(json.loads(Path(model_path).read_text()))
    if kind == "report":
        outs = pq.read_table(outcomes)
        start = time.perf_counter()
        write_report(model, out, table, outcomes=outs, revenue_unit="currency units")
        seconds = time.perf_counter() - start
    else:
        start = time.perf_counter()
        labels = model.predict(table)
        dist = model.transform(table)
        col = np.clip(np.searchsorted(model.cohort_ids_, labels), 0, dist.shape[1] - 1)
        own = dist[np.arange(len(labels)), col]
        cols = {
            "learner_id": table.column("learner_id"),
            "cohort_id": pa.array(labels),
            "distance": pa.array(own),
        }
        cols |= {s.column: table.column(s.column) for s in model.features_}
        pacsv.write_csv(pa.table(cols), out)
        seconds = time.perf_counter() - start
    emit(
        {
            "seconds": seconds,
            "learners": table.num_rows,
            "mb": round(Path(out).stat().st_size / 1e6, 2),
        }
    )


def run(n_learners: int = 250_000, repeats: int = 3) -> list[dict[str, Any]]:
    """Measure both cases and return table rows."""
    files = make_data(n_learners)
    model_path = (OUT / "data" / f"report_model_{n_learners}.json").resolve()
    args = ["--features", str(files["features"].resolve()), "--outcomes"]
    args += [str(files["outcomes"].resolve()), "--model", str(model_path)]
    if not model_path.exists():
        # fitted in a process of its own: a child's peak RSS starts at its parent's (Linux
        # keeps the larger of the two across fork + exec), so this process stays small
        subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_reports", "--case", "fit", *args],
            check=True,
        )
    results = {}
    for kind, out in (("report", "report.html"), ("csv", "learners.csv")):
        path = str((OUT / f"bench_{n_learners}_{out}").resolve())
        results[kind] = run_case(
            "benchmarks.bench_reports", ["--case", kind, *args, "--out", path], repeats
        )
    names = {
        "report": "cohort report (write_report, drill-down capped at 2,000 per cohort)",
        "csv": "CSV of every learner: id, cohort, distance, features (peer)",
    }
    rows = []
    for kind, r in results.items():
        row: dict[str, Any] = {
            "case": names[kind],
            "learners": r["learners"],
            "seconds": round(r["seconds"], 2),
            "runs": [round(s, 2) for s in r["runs"]],
            "file_mb": r["mb"],
            "peak_rss_mb": r["peak_rss_mb"],
        }
        if kind == "report":
            row["time_vs_peer"] = round(r["seconds"] / results["csv"]["seconds"], 2)
            row["size_vs_peer"] = round(r["mb"] / results["csv"]["mb"], 3)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--learners", type=int, default=250_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case")
    parser.add_argument("--features")
    parser.add_argument("--outcomes")
    parser.add_argument("--model")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.case:
        _case(args.case, args.features, args.outcomes, args.model, args.out)
        return
    print(json.dumps(run(args.learners, args.repeats), indent=2))


if __name__ == "__main__":
    main()
