"""Ingest throughput: validated CSV and Parquet ingestion vs a plain DuckDB load (the peer).

Peer: ``CREATE TABLE AS SELECT * FROM read_csv(...)`` / ``read_parquet(...)`` into a fresh DuckDB
file: no validation, no quarantine, no dedup. Ours: ``cohortlens.ingest`` into a fresh store.
Usage: ``python -m benchmarks.bench_ingest [--events N] [--repeats R]`` (default 10M simulated
events, 3 rounds after a warm-up round).

Each round runs the peer and ours once each, back to back, every run in its own process: on a
shared machine the load drifts, and a ratio taken within a round compares like with like. The
table reports median seconds, the median of the per-round ratios, CPU seconds (user + system)
and the 1-minute load average seen by each run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import OUT, emit


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
        load = os.getloadavg()[0]
        cpu = _cpu_s()
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
        seconds = time.perf_counter() - start
        cpu = _cpu_s() - cpu
        emit({"seconds": seconds, "cpu_s": cpu, "load": max(load, os.getloadavg()[0]), **extra})


def _cpu_s() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _one(kind: str, path: str) -> dict[str, Any]:
    """One run of a case in a fresh process; its emitted figures."""
    cmd = [sys.executable, "-m", "benchmarks.bench_ingest", "--case", kind, "--path", path]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run(n_events: int = 10_000_000, repeats: int = 3) -> list[dict[str, Any]]:
    """Measure the four cases (peer and ours interleaved, round by round) and return table rows."""
    files = make_data(n_events)
    rows = []
    for fmt in ("csv", "parquet"):
        path = str(files[fmt].resolve())
        runs: dict[str, list[dict[str, Any]]] = {"peer": [], "ours": []}
        for round_ in range(repeats + 1):
            pair = {kind: _one(kind, path) for kind in ("peer", "ours")}
            if round_ > 0:  # the first round warms the page cache and JIT caches
                for kind, result in pair.items():
                    runs[kind].append(result)
        # Ours over the peer within each round; the peer's own row shows 1.0.
        ratios = {
            "peer": [1.0] * repeats,
            "ours": [
                o["seconds"] / p["seconds"] for p, o in zip(runs["peer"], runs["ours"], strict=True)
            ],
        }
        peer_s = statistics.median(r["seconds"] for r in runs["peer"])
        peer_cpu = statistics.median(r["cpu_s"] for r in runs["peer"])
        for kind, name in (("peer", "duckdb plain load (peer)"), ("ours", "cohortlens ingest")):
            got = runs[kind]
            seconds = statistics.median(r["seconds"] for r in got)
            cpu = statistics.median(r["cpu_s"] for r in got)
            rows.append(
                {
                    "format": fmt,
                    "engine": name,
                    "rows": got[-1]["rows"],
                    "seconds": round(seconds, 2),
                    "runs": [round(r["seconds"], 2) for r in got],
                    "rows_per_s": round(got[-1]["rows"] / seconds),
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in got),
                    "cpu_s": round(cpu, 1),
                    "load_1min": [round(r["load"], 1) for r in got],
                    "time_vs_peer": round(seconds / peer_s, 2),
                    "round_ratios": [round(x, 2) for x in ratios[kind]],
                    "median_round_ratio": round(statistics.median(ratios[kind]), 2),
                    "cpu_vs_peer": round(cpu / peer_cpu, 2),
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
