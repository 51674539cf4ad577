"""Raw read throughput of the streaming file readers (no validation), against peers.

What is timed: from opening the file to the last batch in hand. Every case produces the same
table: the six columns with the same names, types and values — CSV: every column as text, as
our reader gives it (validation parses later); JSON Lines: the four string columns as text and
``outcome``, ``duration_s`` as doubles. Peers, on the same file in the same run:

* ``duckdb.read_csv(path, all_varchar=true).to_arrow_table()``: DuckDB's CSV parser, into Arrow.
* ``CREATE TABLE AS SELECT * FROM read_csv(path, all_varchar=true)``: a DuckDB table.
* ``pyarrow.csv.read_csv`` of the whole file, every column as text: one parallel pass with no
  line numbers and unbounded memory. It shows what the parser alone costs.
* JSON Lines: ``duckdb.read_json`` with the same column types, into Arrow; and
  :func:`json.loads` line by line (Python objects, no table: a floor for per-line parsing).

Ours also gives each row's line number (``_line``; JSON Lines: the line's text, ``_raw``);
the peers do not. After each case (not timed) its output is summarised per column (text: total
bytes and nulls; numbers: sum and nulls) and the run fails unless every case of a format read
the same rows with the same summaries.

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


#: JSON Lines columns as every case reads them (our reader's types).
JSON_TYPES = {
    "learner_id": "VARCHAR",
    "ts": "VARCHAR",
    "domain": "VARCHAR",
    "item_id": "VARCHAR",
    "outcome": "DOUBLE",
    "duration_s": "DOUBLE",
}


def _summary(table: Any) -> dict[str, list[float]]:
    """Per column of ``COLUMNS``: [total UTF-8 bytes or sum, nulls] (Arrow table or batch)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = {}
    for c in COLUMNS:
        col = table.column(c)
        total = pc.sum(pc.binary_length(col) if pa.types.is_string(col.type) else col).as_py()
        out[c] = [float(total or 0), float(col.null_count)]
    return out


def _add(a: dict[str, list[float]], b: dict[str, list[float]]) -> dict[str, list[float]]:
    return {c: [x + y for x, y in zip(a.get(c, [0.0, 0.0]), b[c], strict=True)] for c in b}


def _case(name: str, path: str) -> dict[str, Any]:
    """Run one case once; rows, seconds (imports and the summary not timed) and the summary."""
    import json as _json

    import duckdb
    import pyarrow as pa
    import pyarrow.csv as pv

    from cohortlens.events.readers import open_source
    from cohortlens.events.source import ReadOptions

    extra: dict[str, Any] = {}
    summary: dict[str, list[float]] = {}
    untimed = 0.0
    start = time.perf_counter()
    if name in ("ours_csv", "ours_jsonl"):
        rows = batches = 0
        for batch in open_source(Path(path), None, ReadOptions()).batches():
            rows += batch.n_rows
            batches += 1
            t0 = time.perf_counter()
            summary = _add(summary, _summary(batch.table))
            untimed += time.perf_counter() - t0
        extra["batches"] = batches
        seconds = time.perf_counter() - start - untimed
    elif name == "duckdb_read_csv_arrow":
        table = duckdb.read_csv(path, all_varchar=True).to_arrow_table()
        seconds = time.perf_counter() - start
        rows, summary = table.num_rows, _summary(table)
    elif name == "duckdb_create_table":
        con = duckdb.connect()
        con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{path}', all_varchar = true)")
        seconds = time.perf_counter() - start
        rows = con.execute("SELECT count(*) FROM t").fetchone()[0]  # type: ignore[index]
        sums = ", ".join(f"sum(strlen({c})), count(*) - count({c})" for c in COLUMNS)
        values = con.execute(f"SELECT {sums} FROM t").fetchone()
        assert values is not None
        summary = {
            c: [float(values[2 * i] or 0), float(values[2 * i + 1])] for i, c in enumerate(COLUMNS)
        }
    elif name == "pyarrow_read_csv_text":
        types = dict.fromkeys(COLUMNS, pa.string())
        table = pv.read_csv(path, convert_options=pv.ConvertOptions(column_types=types))
        seconds = time.perf_counter() - start
        rows, summary = table.num_rows, _summary(table)
    elif name == "duckdb_read_json_arrow":
        table = duckdb.read_json(
            path, format="newline_delimited", columns=JSON_TYPES
        ).to_arrow_table()
        seconds = time.perf_counter() - start
        rows, summary = table.num_rows, _summary(table)
    elif name == "json_loads_per_line":
        rows = 0
        with open(path, "rb") as f:
            for line in f:
                if line.strip():
                    _json.loads(line)
                    rows += 1
        seconds = time.perf_counter() - start
        summary = {}  # Python objects, no table: rows compared only
    else:
        raise ValueError(name)
    return {"seconds": seconds, "rows": rows, "summary": summary, **extra}


class ReadersDisagreeError(AssertionError):
    """Two cases of one format read different rows: their times compare different work."""


def check_same_output(results: dict[str, dict[str, Any]]) -> None:
    """Every case read the rows of the first one, with the same per-column summary (sums of
    doubles to 1e-9 relative: summation order differs)."""
    first_name, first = next(iter(results.items()))
    for name, result in results.items():
        if result["rows"] != first["rows"]:
            raise ReadersDisagreeError(
                f"{name} read {result['rows']} rows, {first_name} {first['rows']}"
            )
        for col, values in result["summary"].items():
            want = first["summary"][col]
            for what, x, y in zip(("total", "nulls"), values, want, strict=True):
                if abs(x - y) > 1e-9 * max(abs(x), abs(y)):
                    raise ReadersDisagreeError(
                        f"{name} and {first_name} differ on {col} ({what}: {x!r} vs {y!r})"
                    )


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
        outputs = {name: _run_case(name, path) for name, path in cases.items()}
        check_same_output(outputs)  # every round: the same rows from every case
        if r > 0:
            for name, result in outputs.items():
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
            **{
                k: v
                for k, v in results[0].items()
                if k not in ("seconds", "rows", "peak_rss_mb", "summary")
            },
        }
    return out


def run(
    n_rows: int = 10_000_000, rounds: int = 5, jsonl_rows: int | None = 2_000_000
) -> list[dict[str, Any]]:
    """The CSV reader (and the JSON Lines reader) against their peers: one row per case.

    ``ours_time_vs_case``: our time over the case's, median over rounds of the per-round
    ratio (below 1: ours is faster).
    """
    csv_path = make_csv(n_rows)
    formats = {
        "csv": (
            csv_path,
            ("ours_csv", "duckdb_read_csv_arrow", "duckdb_create_table", "pyarrow_read_csv_text"),
        )
    }
    if jsonl_rows:
        formats["jsonl"] = (
            make_jsonl(csv_path, jsonl_rows),
            ("ours_jsonl", "duckdb_read_json_arrow", "json_loads_per_line"),
        )
    rows = []
    for fmt, (path, names) in formats.items():
        for name, result in _rounds(dict.fromkeys(names, path), rounds).items():
            ratio = round(1 / result.pop("time_vs_first_paired"), 2)
            rows.append(
                {
                    "format": fmt,
                    "case": name,
                    "file_mb": round(path.stat().st_size / 2**20),
                    **result,
                    "ours_time_vs_case": ratio,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jsonl-rows", type=int, default=2_000_000, help="0: no JSON Lines")
    parser.add_argument("--case")
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.case:
        from benchmarks._harness import peak_rss_mb

        payload = _case(args.case, args.path)
        payload["peak_rss_mb"] = round(peak_rss_mb())
        print(json.dumps(payload))
        return
    print(json.dumps(run(args.rows, args.rounds, args.jsonl_rows or None), indent=2))


if __name__ == "__main__":
    main()
