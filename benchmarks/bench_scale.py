"""The user's path at scale: every step as its own process, beside a DuckDB-only peer.

Per size (``--learners 250000,1000000``), in one scratch directory per size:

* **ours** — the real commands, each one fresh process (``python -m cohortlens ...``):
  ``simulate`` (Parquet out), ``ingest`` (the simulated events and outcomes into a fresh
  DuckDB store), ``features`` (from the store, also written as Parquet), ``discover --report``
  and ``assign`` (the feature Parquet against the active model). ``--memory-limit`` is passed to
  every command whose ``--help`` lists it (so the harness runs before and after the streaming
  work lands). With ``--spark`` also ``features --engine spark`` over the simulated Parquet, its
  rows compared with the local engine's (largest relative difference; must be ≤ 1e-9).
* **peer** — DuckDB alone over the same files, each step its own process: ``peer_load``
  (``CREATE TABLE`` + ``INSERT INTO ... SELECT * FROM read_parquet(...)`` into a fresh DuckDB
  file: no validation, no quarantine, no dedup) and ``peer_features`` (the simplified feature
  SQL of ``benchmarks.bench_features`` over that table, stored as a table: per learner the
  domain-share entropy, the weekly-activity EMA, and over review pairs (repeat attempts of an
  item ≥ 1 h apart) the mean recall, mean gap and the crude half-life
  ``mean_gap / -log2(clip(recall))`` — a subset of what ``features`` computes). DuckDB gets
  the same memory budget as ``memory_limit`` (at least 256 MiB) and a temp directory in the
  scratch dir.

Each step is measured as a process: wall time, peak RSS of its process tree (the sum of
``VmRSS`` over the process and its descendants, sampled every 50 ms; the larger of that and
the exit status's ``ru_maxrss`` from ``wait4``), and the peak size of the scratch directory
(Parquet, store, temp files). One run per step (1M learners is ~237M events and ~10 GB of
disk); steps of ours and the peer alternate so that drifting machine load hits both.

Reported: per step wall, events/s, peak RSS, the ratios ours ÷ peer (load vs ingest, peer
features vs features); the per-event slope of each step (least squares of wall against events
over the sizes); the end-to-end total (ingest → features → discover + report → assign, not
simulate) against the ≤ 6 min goal at 1M learners (projected from the slope at smaller sizes);
flatness (peak RSS at the largest ÷ smallest size, goal ≤ 1.15); pass/fail against issue 16's
goals. Writes ``bench_output/scale.json`` and ``bench_output/scale.md``; the scratch directory
is deleted unless ``--keep``.

Usage: ``python -m benchmarks.bench_scale --learners 250000,1000000 [--memory-limit 3GiB]
[--spark] [--keep] [--scratch DIR] [--out-dir bench_output]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._harness import OUT

#: Issue 16's goals (whole processes, this 2-core machine).
GOALS = {
    "simulate_events_per_s": 2_000_000,
    "ingest_rows_per_s": 1_500_000,
    "features_events_per_s": 3_000_000,
    "peak_rss_mib": 4096,
    "end_to_end_s_at_1m": 360,
    "rss_flatness": 1.15,
}
#: The steps of the end-to-end total (simulate excluded, as in the issue).
E2E_STEPS = ("ingest", "features", "discover", "assign")
#: The 10M-learner projection in docs/SCALING.md.
PROJECT_LEARNERS = 10_000_000
_POLL_S = 0.05


# ---------------------------------------------------------------- measuring one process


@dataclass
class Measured:
    """One step run as its own process."""

    step: str
    seconds: float
    peak_rss_mib: float
    peak_disk_mib: float
    returncode: int
    load_avg_1m: float
    stdout: str = field(repr=False, default="")
    stderr: str = field(repr=False, default="")


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        with contextlib.suppress(OSError):
            kids += [int(k) for k in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return kids


def tree_rss_mib(root: int) -> float:
    """Summed ``VmRSS`` of ``root`` and all its descendants, in MiB (0 when gone)."""
    total, frontier = 0, [root]
    while frontier:
        pid = frontier.pop()
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
        frontier += _children(pid)
    return total / 1024


def dir_mib(path: Path) -> float:
    """Bytes of ``path`` or of all files under it (allocated blocks), in MiB (0 if absent)."""
    if path.is_file():
        return path.stat().st_blocks * 512 / (1 << 20)
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total / (1 << 20)


def measure(
    step: str, cmd: list[str], cwd: Path, scratch: Path, env: dict[str, str] | None = None
) -> Measured:
    """Run ``cmd`` as a fresh process; wall time, peak tree RSS and peak scratch disk use."""
    out_path, err_path = cwd / f".{step}.stdout", cwd / f".{step}.stderr"
    peak = {"rss": 0.0, "disk": 0.0}
    stop = threading.Event()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, env=env)

        def poll() -> None:
            last_disk = 0.0
            while not stop.is_set():
                peak["rss"] = max(peak["rss"], tree_rss_mib(proc.pid))
                now = time.perf_counter()
                if now - last_disk >= 0.5:  # walking the directory costs more than /proc
                    peak["disk"] = max(peak["disk"], dir_mib(scratch))
                    last_disk = now
                stop.wait(_POLL_S)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        poller.join()
    peak["disk"] = max(peak["disk"], dir_mib(scratch))
    return Measured(
        step=step,
        seconds=seconds,
        peak_rss_mib=max(peak["rss"], usage.ru_maxrss / 1024),
        peak_disk_mib=peak["disk"],
        returncode=proc.returncode,
        load_avg_1m=os.getloadavg()[0],
        stdout=out_path.read_text(),
        stderr=err_path.read_text(),
    )


# ---------------------------------------------------------------- the commands


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cohortlens", *args]


_HELP_CACHE: dict[str, bool] = {}


def supports_memory_limit(command: str) -> bool:
    """Whether ``cohortlens COMMAND --help`` lists ``--memory-limit`` (asked once per command)."""
    if command not in _HELP_CACHE:
        env = os.environ | {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
        proc = subprocess.run(
            _cli(command, "--help"), capture_output=True, text=True, check=False, env=env
        )
        _HELP_CACHE[command] = "--memory-limit" in proc.stdout
    return _HELP_CACHE[command]


def _with_limit(command: str, args: list[str], memory_limit: str | None) -> list[str]:
    """``args`` plus ``--memory-limit`` when given and ``command`` accepts it."""
    if memory_limit is not None and supports_memory_limit(command):
        return [*args, "--memory-limit", memory_limit]
    return args


def _json_out(m: Measured) -> dict[str, Any]:
    """The JSON document a ``--json`` command printed (its last top-level object)."""
    text = m.stdout.strip()
    start = text.rfind("\n{")
    return dict(json.loads(text[start + 1 :] if start >= 0 else text))


class StepFailedError(RuntimeError):
    """A step exited non-zero; the steps that need its output cannot run."""

    def __init__(self, measured: Measured) -> None:
        super().__init__(f"step {measured.step} failed: {why(measured)}")
        self.measured = measured


def why(m: Measured) -> str:
    """How a step ended, in words (a SIGKILL is what the kernel's OOM killer sends)."""
    if m.returncode == 0:
        return "ok"
    if m.returncode == -9:
        return "killed by SIGKILL (out of memory?)"
    if m.returncode < 0:
        return f"killed by signal {-m.returncode}"
    return f"exit {m.returncode}"


def _check(m: Measured) -> None:
    if m.returncode != 0:
        raise StepFailedError(m)


def _parquet_glob(path: Path) -> str:
    """``read_parquet`` argument for a file or a directory of Parquet files (any depth)."""
    return str(path / "**" / "*.parquet") if path.is_dir() else str(path)


# ---------------------------------------------------------------- the peer (own processes)


def peer_main(argv: list[str]) -> None:
    """``python -m benchmarks.bench_scale --peer load|features --db FILE [--events PATH]``."""
    import duckdb

    from benchmarks.bench_features import _duck_sql

    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", choices=("load", "features"), required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--events")
    ap.add_argument("--memory-limit-bytes", type=int, required=True)
    a = ap.parse_args(argv)
    con = duckdb.connect(a.db)
    con.execute("SET enable_progress_bar = false")
    con.execute(f"SET memory_limit = '{a.memory_limit_bytes}B'")
    con.execute(f"SET temp_directory = '{a.db}.tmp'")
    if a.peer == "load":
        src = f"read_parquet('{_parquet_glob(Path(a.events))}')"
        con.execute(f"CREATE TABLE ev AS SELECT * FROM {src} LIMIT 0")
        con.execute(f"INSERT INTO ev SELECT * FROM {src}")
        n = con.execute("SELECT count(*) FROM ev").fetchone()
    else:
        con.execute(f"CREATE TABLE peer_features AS {_duck_sql()}")
        n = con.execute("SELECT count(*) FROM peer_features").fetchone()
    con.close()
    print(json.dumps({"rows": int(n[0]) if n else 0}))


#: The peer's smallest ``memory_limit``: DuckDB's own load fails under tiny limits (1 MiB does).
PEER_MIN_LIMIT_BYTES = 256 << 20


def _peer(kind: str, db: Path, budget_bytes: int, events: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "benchmarks.bench_scale", "--peer", kind, "--db", str(db)]
    cmd += ["--memory-limit-bytes", str(max(budget_bytes, PEER_MIN_LIMIT_BYTES))]
    return cmd + (["--events", str(events)] if events is not None else [])


# ---------------------------------------------------------------- one size


def run_size(
    learners: int,
    scratch: Path,
    memory_limit: str | None,
    *,
    spark: bool = False,
    weeks: int = 26,
    seed: int = 0,
) -> dict[str, Any]:
    """Every step of ours and of the peer at one size.

    A failing step ends the size (later steps need its output): the result keeps the steps
    measured so far, the failed one included (its wall time and peak RSS up to the failure),
    and says which step failed and how under ``failed``.
    """
    from cohortlens.budget import MemoryBudget

    budget = MemoryBudget.from_option(memory_limit)
    root = scratch / f"learners-{learners}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    db, peer_db = root / "store.duckdb", root / "peer.duckdb"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORTLENS_")}
    steps: dict[str, Measured] = {}

    def step(name: str, cmd: list[str]) -> Measured:
        m = measure(name, cmd, root, root, env)
        steps[name] = m
        print(
            f"  {learners:>9,} {name:<15} {m.seconds:8.1f} s  {m.peak_rss_mib:8.0f} MiB"
            f"  disk {m.peak_disk_mib:8.0f} MiB  load {m.load_avg_1m:.1f}"
            + ("" if m.returncode == 0 else f"  FAILED: {why(m)}"),
            file=sys.stderr,
            flush=True,
        )
        _check(m)
        return m

    def ours(*args: str) -> Measured:
        """``cohortlens ARGS [--memory-limit L] --json`` as the step named ``args[0]``."""
        cmd = _with_limit(args[0], [*args, "--json"], memory_limit)
        return step(args[0], _cli(*cmd))

    result: dict[str, Any] = {"learners": learners, "events": None, "accepted": None}
    result |= {"feature_rows": None, "sizes": {}, "spark": None, "failed": None}
    try:
        _steps(result, ours, step, root, db, peer_db, budget.limit_bytes, seed, weeks, spark,
               memory_limit)  # fmt: skip
    except StepFailedError as exc:
        m = exc.measured
        result["failed"] = {"step": m.step, "how": why(m), "stderr_tail": m.stderr[-2000:]}
    result["steps"] = {
        k: {kk: vv for kk, vv in asdict(v).items() if kk not in ("stdout", "stderr")}
        for k, v in steps.items()
    }
    return result


def _steps(
    result: dict[str, Any],
    ours: Any,
    step: Any,
    root: Path,
    db: Path,
    peer_db: Path,
    budget_bytes: int,
    seed: int,
    weeks: int,
    spark: bool,
    memory_limit: str | None,
) -> None:
    """The steps of one size in order, filling ``result`` as their outputs appear."""
    learners = result["learners"]
    sizes = result["sizes"]
    sim = ours("simulate", "--learners", str(learners), "--weeks", str(weeks), "--seed", str(seed),
               "--out", str(root / "sim"))  # fmt: skip
    files = _json_out(sim)["files"]
    events_path, outcomes_path = Path(files["events"]), Path(files["outcomes"])
    result["events"] = int(_json_out(sim)["events"])
    sizes["events_parquet_mib"] = round(dir_mib(events_path), 1)
    ing = ours("ingest", str(events_path), "--outcomes", str(outcomes_path), "--db", str(db))
    result["accepted"] = sum(
        int(s.get("accepted", 0)) for s in _json_out(ing)["sources"] if s.get("kind") == "events"
    )
    sizes["store_after_ingest_mib"] = round(os.path.getsize(db) / (1 << 20), 1)
    step("peer_load", _peer("load", peer_db, budget_bytes, events_path))
    sizes["peer_db_mib"] = round(os.path.getsize(peer_db) / (1 << 20), 1)
    feat_out = root / "features.parquet"
    feat = ours("features", "--db", str(db), "--out", str(feat_out))
    result["feature_rows"] = int(_json_out(feat)["learners"])
    sizes["features_parquet_mib"] = round(dir_mib(feat_out), 1)
    step("peer_features", _peer("features", peer_db, budget_bytes))
    ours("discover", "--db", str(db), "--report", str(root / "report.html"))
    ours("assign", "--features", str(feat_out), "--out", str(root / "assign.parquet"),
         "--db", str(db))  # fmt: skip
    sizes["store_mib"] = round(os.path.getsize(db) / (1 << 20), 1)
    if spark:
        result["spark"] = _spark_step(step, root, events_path, feat_out, memory_limit)


def _spark_step(
    step: Any, root: Path, events: Path, local_features: Path, memory_limit: str | None
) -> dict[str, Any]:
    """``features --engine spark`` over the simulated Parquet; rows compared with ours."""
    import pyarrow.parquet as pq

    from benchmarks.bench_spark import max_rel_diff

    out = root / "features_spark"
    args = ["features", "--engine", "spark", "--events", str(events), "--out", str(out)]
    args += ["--db", str(root / "spark.duckdb"), "--json"]
    m = step("features_spark", _cli(*_with_limit("features", args, memory_limit)))
    local = pq.read_table(local_features)
    remote = pq.read_table(out).select(local.column_names)
    if local.num_rows != remote.num_rows:
        raise AssertionError(f"spark wrote {remote.num_rows} rows, local {local.num_rows}")
    return {
        "seconds": round(m.seconds, 1),
        "rows": remote.num_rows,
        "max_rel_diff": max_rel_diff(local, remote),
        "out_mib": round(dir_mib(out), 1),
    }


# ---------------------------------------------------------------- the summary


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ys on xs; through the origin for one point."""
    if len(xs) == 1:
        return 0.0, ys[0] / xs[0]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - slope * mx, slope


def summarize(sizes: list[dict[str, Any]], memory_limit: str | None) -> dict[str, Any]:
    """Per-step rows, ratios, slopes, the end-to-end total, flatness and the goal checks."""
    rows = []
    for s in sizes:
        st, n = s["steps"], s["events"]
        for name, m in st.items():
            row: dict[str, Any] = {
                "learners": s["learners"],
                "events": n,
                "step": name,
                "wall_s": round(m["seconds"], 2),
                "peak_rss_mib": round(m["peak_rss_mib"]),
                "peak_disk_mib": round(m["peak_disk_mib"]),
                "load_avg_1m": round(m["load_avg_1m"], 1),
            }
            if m["returncode"] != 0:
                row["failed"] = s["failed"]["how"] if s.get("failed") else "failed"
                row["rss_pass"] = False
                rows.append(row)
                continue
            if n:
                row["events_per_s"] = round(n / m["seconds"])
            peer = {"ingest": "peer_load", "features": "peer_features"}.get(name)
            if peer in st and st[peer]["returncode"] == 0:
                row["ours_over_peer"] = round(m["seconds"] / st[peer]["seconds"], 2)
            goal = {
                "simulate": GOALS["simulate_events_per_s"],
                "ingest": GOALS["ingest_rows_per_s"],
                "features": GOALS["features_events_per_s"],
            }.get(name)
            if goal is not None and n:
                row["rate_goal"] = goal
                row["rate_pass"] = row["events_per_s"] >= goal
            if not name.startswith("peer_"):
                row["rss_pass"] = m["peak_rss_mib"] <= GOALS["peak_rss_mib"]
            rows.append(row)

    def ok(s: dict[str, Any], name: str) -> bool:
        return bool(s["events"]) and s["steps"].get(name, {}).get("returncode") == 0

    # slopes, flatness and the projection use the steps that completed at every size
    names = [k for k in sizes[0]["steps"] if all(ok(s, k) for s in sizes)]
    events = [float(s["events"] or 0) for s in sizes]
    slopes = {}
    for name in names:
        a, b = _fit(events, [s["steps"][name]["seconds"] for s in sizes])
        slopes[name] = {"intercept_s": round(a, 3), "ns_per_event": round(b * 1e9, 2)}
    known = [s for s in sizes if s["events"]]
    per_learner = known[-1]["events"] / known[-1]["learners"] if known else 0.0
    e2e = []
    for s in sizes:
        if not all(ok(s, k) for k in (*E2E_STEPS, "peer_load", "peer_features")):
            continue
        total = sum(s["steps"][k]["seconds"] for k in E2E_STEPS)
        peer = s["steps"]["peer_load"]["seconds"] + s["steps"]["peer_features"]["seconds"]
        e2e.append({"learners": s["learners"], "events": s["events"], "ours_s": round(total, 1)})
        e2e[-1]["peer_load_plus_features_s"] = round(peer, 1)
    events_1m = per_learner * 1_000_000
    at_1m = [e for e in e2e if e["learners"] == 1_000_000]
    e2e_check: dict[str, Any] = {
        "goal_s": GOALS["end_to_end_s_at_1m"],
        "measured_at_1m_s": at_1m[0]["ours_s"] if at_1m else None,
        "projected_at_1m_s": None,
    }
    # no projection when a step is missing, or a slope is negative (sizes too close, noise)
    if all(k in slopes and slopes[k]["ns_per_event"] > 0 for k in E2E_STEPS):
        e2e_check["projected_at_1m_s"] = round(
            sum(slopes[k]["intercept_s"] + slopes[k]["ns_per_event"] * 1e-9 * events_1m
                for k in E2E_STEPS),
            1,
        )  # fmt: skip
    judged = e2e_check["measured_at_1m_s"] or e2e_check["projected_at_1m_s"]
    e2e_check["pass"] = None if judged is None else judged <= GOALS["end_to_end_s_at_1m"]
    flat = {}
    if len(sizes) > 1:
        for name in names:
            lo = sizes[0]["steps"][name]["peak_rss_mib"]
            hi = sizes[-1]["steps"][name]["peak_rss_mib"]
            flat[name] = {"ratio": round(hi / lo, 2), "pass": hi / lo <= GOALS["rss_flatness"]}
    projection = project(known, slopes) if known else None
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.bench_scale " + " ".join(sys.argv[1:]),
        "memory_limit": memory_limit,
        "memory_limit_passed_to": sorted(k for k, v in _HELP_CACHE.items() if v),
        "cpus": os.cpu_count(),
        "goals": GOALS,
        "rows": rows,
        "slopes": slopes,
        "end_to_end": e2e,
        "end_to_end_check": e2e_check,
        "rss_flatness": flat,
        "projection_10m": projection,
        "failed": [
            {
                "learners": s["learners"],
                **{k: v for k, v in s["failed"].items() if k != "stderr_tail"},
            }
            for s in sizes
            if s.get("failed")
        ],
        "sizes": sizes,
    }


def project(sizes: list[dict[str, Any]], slopes: dict[str, Any]) -> dict[str, Any]:
    """Time per step and disk at 10M learners from the measured slopes and bytes per event."""
    last = sizes[-1]
    n = last["events"] / last["learners"] * PROJECT_LEARNERS
    per_event = {k: v / last["events"] * (1 << 20) for k, v in last["sizes"].items()}
    return {
        "learners": PROJECT_LEARNERS,
        "events": round(n),
        # None where the fit is not meaningful (a negative slope: sizes too close, load drift)
        "wall_s": {
            k: round(v["intercept_s"] + v["ns_per_event"] * 1e-9 * n)
            if v["ns_per_event"] > 0
            else None
            for k, v in slopes.items()
        },
        "disk_gib": {
            k.removesuffix("_mib"): round(v * n / (1 << 30), 1) for k, v in per_event.items()
        },
        "peak_scratch_disk_gib": round(
            max(m["peak_disk_mib"] for m in last["steps"].values() if m["returncode"] == 0)
            / last["events"]
            * n
            / 1024,
            1,
        ),
    }


def markdown(summary: dict[str, Any]) -> str:
    """The table docs/BENCHMARKS.md and docs/SCALING.md quote."""
    lines = [
        f"### scale ({summary['when']}, `{summary['command']}`)",
        "",
        f"memory limit: {summary['memory_limit'] or 'default'} (passed to: "
        f"{', '.join(summary['memory_limit_passed_to']) or 'none'})",
        "",
        "| learners | events | step | wall s | events/s | peak RSS MiB | ours ÷ peer "
        "| rate goal | rate | RSS ≤ 4 GiB | load |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    for r in summary["rows"]:
        rate = "" if "rate_pass" not in r else ("pass" if r["rate_pass"] else "FAIL")
        rss = "" if "rss_pass" not in r else ("pass" if r["rss_pass"] else "FAIL")
        goal = f"{r['rate_goal'] / 1e6:g}M/s" if "rate_goal" in r else ""
        events = f"{r['events']:,}" if r["events"] else "?"
        speed = f"{r['events_per_s']:,}" if "events_per_s" in r else ""
        if "failed" in r:
            speed, rss = f"FAILED: {r['failed']}", "FAIL (at failure)"
        lines.append(
            f"| {r['learners']:,} | {events} | {r['step']} | {r['wall_s']} "
            f"| {speed} | {r['peak_rss_mib']:,} | {r.get('ours_over_peer', '')} "
            f"| {goal} | {rate} | {rss} | {r['load_avg_1m']} |"
        )
    lines += ["", "| step | slope ns/event | intercept s | RSS largest ÷ smallest |"]
    lines += ["| --- | ---: | ---: | --- |"]
    for name, s in summary["slopes"].items():
        f = summary["rss_flatness"].get(name)
        flat = "" if f is None else f"{f['ratio']} ({'pass' if f['pass'] else 'FAIL'})"
        lines.append(f"| {name} | {s['ns_per_event']} | {s['intercept_s']} | {flat} |")
    e = summary["end_to_end_check"]
    lines += [
        "",
        "End to end (ingest + features + discover/report + assign): "
        + ", ".join(f"{x['learners']:,} learners {x['ours_s']} s" for x in summary["end_to_end"])
        + f"; at 1M learners measured {e['measured_at_1m_s']} s, projected from the slopes "
        f"{e['projected_at_1m_s']} s; goal ≤ {e['goal_s']} s: "
        + {True: "pass", False: "FAIL", None: "n/a"}[e["pass"]]
        + ".",
    ]
    for f in summary["failed"]:
        lines.append(
            f"\n**{f['learners']:,} learners: step {f['step']} failed ({f['how']})**; the steps "
            "after it did not run at this size, and the slopes use the steps that completed at "
            "every size."
        )
    p = summary["projection_10m"]
    if p is None:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        f"Projection to {p['learners']:,} learners ({p['events']:,} events): wall s "
        + ", ".join(f"{k} {'n/a' if v is None else f'{v:,}'}" for k, v in p["wall_s"].items())
        + "; disk GiB "
        + ", ".join(f"{k} {v}" for k, v in p["disk_gib"].items())
        + f"; scratch disk at its peak (every file of the run: Parquet, store, peer, temp) "
        f"{p['peak_scratch_disk_gib']} GiB.",
    ]
    for s in summary["sizes"]:
        if s.get("spark"):
            sp = s["spark"]
            lines.append(
                f"\nSpark (`features --engine spark`, local) at {s['learners']:,} learners: "
                f"{sp['seconds']} s, {sp['rows']:,} rows, largest relative difference to the "
                f"local engine {sp['max_rel_diff']:.3g}."
            )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- entry points


def run(
    learners: tuple[int, ...] = (250_000, 1_000_000),
    memory_limit: str | None = None,
    *,
    spark: bool = False,
    keep: bool = False,
    scratch: Path | None = None,
    out_dir: Path = OUT,
) -> list[dict[str, Any]]:
    """All sizes; writes ``scale.json`` and ``scale.md`` (the ``benchmarks.run`` entry point)."""
    # absolute: every step runs with its size directory as the working directory, where the
    # peer's ``python -m benchmarks.bench_scale`` needs the repository on its path
    scratch = (scratch or out_dir / "scale-scratch").resolve()
    repo = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = []
    try:
        for n in sorted(learners):
            sizes.append(run_size(n, scratch, memory_limit, spark=spark))
            if not keep:  # the next size needs the disk
                shutil.rmtree(scratch / f"learners-{n}", ignore_errors=True)
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    summary = summarize(sizes, memory_limit)
    (out_dir / "scale.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "scale.md").write_text(markdown(summary))
    rows: list[dict[str, Any]] = summary["rows"]
    return rows


def _learners(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x.replace("_", "")) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected e.g. 250000,1000000") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive learner counts")
    return values


def main() -> None:
    """CLI (see the module docstring)."""
    if "--peer" in sys.argv[1:]:
        peer_main(sys.argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--learners", type=_learners, default=(250_000, 1_000_000))
    ap.add_argument("--memory-limit", help="passed to every step that accepts it (e.g. 3GiB)")
    ap.add_argument("--spark", action="store_true", help="also features --engine spark")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--scratch", type=Path, help="scratch dir (default bench_output/scale-scratch)")
    ap.add_argument("--out-dir", type=Path, default=OUT)
    a = ap.parse_args()
    run(
        a.learners,
        a.memory_limit,
        spark=a.spark,
        keep=a.keep,
        scratch=a.scratch,
        out_dir=a.out_dir,
    )
    text = (a.out_dir / "scale.md").read_text()
    print(text)
    print(f"wrote {a.out_dir / 'scale.json'} and {a.out_dir / 'scale.md'}")
    if json.loads((a.out_dir / "scale.json").read_text())["failed"]:
        sys.exit(1)  # a step failed: the table says which and how


if __name__ == "__main__":
    main()
