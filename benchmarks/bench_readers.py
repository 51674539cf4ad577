"""Raw read throughput of the streaming file readers (no validation), against peers.

What is timed: from opening the file to the last batch in hand (Arrow tables with canonical
names, ``_line`` and structural rejects). Peers, on the same file in the same run:

* ``duckdb.read_csv(path).to_arrow_table()``: DuckDB's CSV sniffer and parser, into Arrow.
* ``CREATE TABLE AS SELECT * FROM read_csv(path)``: the plain load the project goals use.
* ``pyarrow.csv.read_csv`` of the whole file, every column as text: one parallel pass with no
  line numbers and unbounded memory. It shows what the parser alone costs.
* JSON Lines: ``duckdb.read_json`` into Arrow, and :func:`json.loads` line by line.

The machine is shared and noisy, so each case runs in its own process (peak RSS is its own).
Cases are interleaved round by round, one warm-up round is discarded, and medians are reported.
Data: ``n_rows`` seeded synthetic events (learner_id, ISO ts, domain, item_id, outcome,
duration_s) written under ``/tmp/cohortlens_bench`` (outside the repository), reused when present.

Usage: ``python -m benchmarks.bench_readers [--rows 10000000] [--rounds 5] [--jsonl-rows N]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DATA_DIR = Path("/tmp/cohortlens_bench")
COLUMNS = ("learner_id", "ts", "domain", "item_id", "outcome", "duration_s")


def make_csv(n_rows: int, seed: int = 3) -> Path:
    """A seeded events CSV of ``n_rows`` rows (about 57 bytes a row), built in chunks."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pv

    path = DATA_DIR / f"events_{n_rows}.csv"
    if path.exists():
        return path
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    domains = np.array(["math", "reading", "science", "history", "art"])
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as out:
        out.write((",".join(COLUMNS) + "\n").encode())
        options = pv.WriteOptions(include_header=False, quoting_style="none")
        start_us = 1_700_000_000_000_000
        for first in range(0, n_rows, 1_000_000):
            m = min(1_000_000, n_rows - first)
            ts_us = start_us + np.sort(rng.integers(0, 180 * 86_400 * 10**6, m))
            start_us = int(ts_us[-1])
            table = pa.table(
                {
                    "learner_id": pc.binary_join_element_wise(
                        "L", pc.cast(pa.array(rng.integers(0, 50_000, m)), pa.string()), ""
                    ),
                    "ts": pc.strftime(
                        pa.array(ts_us.astype("datetime64[us]")), format="%Y-%m-%dT%H:%M:%SZ"
                    ),
                    "domain": pa.array(domains[rng.integers(0, 5, m)]),
                    "item_id": pc.binary_join_element_wise(
                        "item_", pc.cast(pa.array(rng.integers(0, 2000, m)), pa.string()), ""
                    ),
                    "outcome": pc.cast(pa.array(rng.integers(0, 2, m).astype(float)), pa.string()),
                    "duration_s": pc.cast(
                        pa.array(np.round(rng.exponential(30.0, m), 1)), pa.string()
                    ),
                }
            )
            pv.write_csv(table, out, write_options=options)
    tmp.rename(path)
    return path


def make_jsonl(csv_path: Path, n_rows: int) -> Path:
    """The first ``n_rows`` rows of the CSV as JSON Lines (numbers as JSON numbers)."""
    import duckdb

    path = DATA_DIR / f"events_{n_rows}.jsonl"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        duckdb.sql(
            f"COPY (SELECT learner_id, CAST(ts AS VARCHAR) AS ts, domain, item_id, outcome, "
            f"duration_s FROM read_csv('{csv_path}') LIMIT {n_rows}) TO '{tmp}' "
            "(FORMAT json)"
        )
        tmp.rename(path)
    return path


# ------------------------------------------------------------------------------------------
# Cases (each runs in a fresh process)


def _case(name: str, path: str) -> dict[str, Any]:
    """Run one case once; return rows and seconds (module imports are not timed)."""
    import json as _json

    import duckdb
    import pyarrow as pa
    import pyarrow.csv as pv

    from cohortlens.events.readers import open_source
    from cohortlens.events.source import ReadOptions

    extra: dict[str, Any] = {}
    start = time.perf_counter()
    if name in ("ours_csv", "ours_jsonl"):
        rows = batches = 0
        for batch in open_source(Path(path), None, ReadOptions()).batches():
            rows += batch.n_rows
            batches += 1
        extra["batches"] = batches
    elif name == "duckdb_read_csv_arrow":
        rows = duckdb.read_csv(path).to_arrow_table().num_rows
    elif name == "duckdb_create_table":
        con = duckdb.connect()
        con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{path}')")
        rows = con.execute("SELECT count(*) FROM t").fetchone()[0]  # type: ignore[index]
    elif name == "pyarrow_read_csv_text":
        types = dict.fromkeys(COLUMNS, pa.string())
        rows = pv.read_csv(path, convert_options=pv.ConvertOptions(column_types=types)).num_rows
    elif name == "duckdb_read_json_arrow":
        rows = duckdb.read_json(path, format="newline_delimited").to_arrow_table().num_rows
    elif name == "json_loads_per_line":
        rows = 0
        with open(path, "rb") as f:
            for line in f:
                if line.strip():
                    _json.loads(line)
                    rows += 1
    else:
        raise ValueError(name)
    return {"seconds": time.perf_counter() - start, "rows": rows, **extra}


def _run_case(name: str, path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_readers", "--case", name, "--path", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _rounds(cases: dict[str, Path], rounds: int) -> dict[str, dict[str, Any]]:
    """Interleave the cases for ``rounds`` rounds after a warm-up round; medians per case."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    for r in range(rounds + 1):
        for name, path in cases.items():
            result = _run_case(name, path)
            if r > 0:
                runs[name].append(result)
    out: dict[str, dict[str, Any]] = {}
    first = next(iter(runs.values()))
    for name, results in runs.items():
        seconds = [x["seconds"] for x in results]
        med = statistics.median(seconds)
        out[name] = {
            "rows": results[0]["rows"],
            "seconds_median": round(med, 3),
            "seconds_runs": [round(s, 3) for s in seconds],
            "rows_per_s": round(results[0]["rows"] / med),
            "peak_rss_mb": max(x["peak_rss_mb"] for x in results),
            # Time relative to the first case, per round (runs of a round are back to back, so
            # the ratio is less noisy than a ratio of medians on a shared machine).
            "time_vs_first_paired": round(
                statistics.median(
                    x["seconds"] / f["seconds"] for x, f in zip(results, first, strict=True)
                ),
                3,
            ),
            **{k: v for k, v in results[0].items() if k not in ("seconds", "rows", "peak_rss_mb")},
        }
    return out


def run(n_rows: int, rounds: int = 5, jsonl_rows: int | None = None) -> dict[str, Any]:
    """Measure the CSV reader (and the JSON Lines reader) against their peers on ``n_rows``."""
    csv_path = make_csv(n_rows)
    csv_cases = {
        name: csv_path
        for name in (
            "ours_csv",
            "duckdb_read_csv_arrow",
            "duckdb_create_table",
            "pyarrow_read_csv_text",
        )
    }
    result: dict[str, Any] = {"n_rows": n_rows, "csv_bytes": csv_path.stat().st_size}
    result["csv"] = _rounds(csv_cases, rounds)
    # Our time over each peer's, median over rounds of the per-round ratio.
    result["csv_ours_time_vs_peer"] = {
        peer: round(1 / result["csv"][peer]["time_vs_first_paired"], 2)
        for peer in csv_cases
        if peer != "ours_csv"
    }
    if jsonl_rows:
        jsonl_path = make_jsonl(csv_path, jsonl_rows)
        cases = {
            n: jsonl_path for n in ("ours_jsonl", "duckdb_read_json_arrow", "json_loads_per_line")
        }
        result["jsonl"] = _rounds(cases, rounds)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jsonl-rows", type=int, default=0)
    parser.add_argument("--case")
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.case:
        import resource

        payload = _case(args.case, args.path)
        payload["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(json.dumps(payload))
        return
    print(json.dumps(run(args.rows, args.rounds, args.jsonl_rows or None), indent=2))


if __name__ == "__main__":
    main()
