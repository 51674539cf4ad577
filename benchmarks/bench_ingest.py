"""Ingest throughput: validated CSV and Parquet ingestion vs a plain DuckDB load (the peer).

Peer: ``CREATE TABLE AS SELECT * FROM read_csv(...)`` / ``read_parquet(...)`` into a fresh DuckDB
file: no validation, no quarantine, no dedup. Ours: ``cohortlens.ingest`` into a fresh store.
Usage: ``python -m benchmarks.bench_ingest [--events N]`` (default 10M simulated events).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import OUT, emit, run_case


def make_data(n_events: int, seed: int = 11) -> dict[str, Path]:
    """Simulated events of about ``n_events`` rows as Parquet and CSV (cached under bench_output)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from cohortlens.simulate import SimulationParams, simulate

    data = OUT / "data"
    data.mkdir(parents=True, exist_ok=True)
    parquet, csv = data / f"events_{n_events}.parquet", data / f"events_{n_events}.csv"
    if not (parquet.exists() and csv.exists()):
        n_learners = max(100, n_events // 200)
        events = simulate(SimulationParams(n_learners=n_learners, seed=seed)).events
        events = events.slice(0, min(n_events, events.num_rows))
        pq.write_table(events, parquet)
        pacsv.write_csv(events, csv)
    return {"parquet": parquet, "csv": csv}


def _case(kind: str, path: str) -> None:
    """One measured run, in its own process."""
    import duckdb

    from cohortlens.events.ingest import ingest
    from cohortlens.store import DuckDBStore

    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.duckdb")
        start = time.perf_counter()
        if kind == "peer":
            con = duckdb.connect(db)
            reader = "read_parquet" if path.endswith(".parquet") else "read_csv"
            con.execute(f"CREATE TABLE events AS SELECT * FROM {reader}('{path}')").fetchall()
            rows = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
            con.close()
            extra: dict[str, Any] = {"rows": rows}
        else:
            with DuckDBStore(db) as store:
                report = ingest(store, [Path(path)])
            extra = {"rows": report.accepted, "rows_read": report.rows_read}
        emit({"seconds": time.perf_counter() - start, **extra})


def run(n_events: int = 10_000_000, repeats: int = 3) -> list[dict[str, Any]]:
    """Measure the four cases and return table rows."""
    files = make_data(n_events)
    rows = []
    for fmt in ("csv", "parquet"):
        path = str(files[fmt].resolve())
        peer = run_case("benchmarks.bench_ingest", ["--case", "peer", "--path", path], repeats)
        ours = run_case("benchmarks.bench_ingest", ["--case", "ours", "--path", path], repeats)
        for name, r in (("duckdb plain load (peer)", peer), ("cohortlens ingest", ours)):
            rows.append(
                {
                    "format": fmt,
                    "engine": name,
                    "rows": r["rows"],
                    "seconds": round(r["seconds"], 2),
                    "runs": [round(s, 2) for s in r["runs"]],
                    "rows_per_s": round(r["rows"] / r["seconds"]),
                    "peak_rss_mb": r["peak_rss_mb"],
                    "time_vs_peer": round(r["seconds"] / peer["seconds"], 2),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case")
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.case:
        _case(args.case, args.path)
        return
    print(json.dumps(run(args.events, args.repeats), indent=2))


if __name__ == "__main__":
    main()
