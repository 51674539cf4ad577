"""The service under load on 127.0.0.1, beside two dict look-up peers in the same run.

Setup (as in ../shared/reference/perf_baselines.md): one server process pinned to CPU 0,
the load generator pinned to CPU 1, uniformly random known learner ids.

* ``lookup``: ``GET /v1/learners/{id}/cohort`` with wrk (Debian's package; 1 thread,
  ``--latency``) at 64 and at 1 connection(s), 6 s after a 2 s warm-up, against
  ``cohortlens serve`` (stable model + a candidate at 10 % weight, so routing is exercised)
  and against two peers over the same learners: :mod:`benchmarks._peer_fastapi` (a plain
  FastAPI ``async def`` dict look-up; FastAPI validates and serialises its response) and
  :mod:`benchmarks._peer_asgi` (the same look-up as a bare ASGI callable: the kind of layer
  ours answers from, without our credential check, routing and metrics). Before timing, every
  server answers the same sampled ids (200, the same ``learner_id``); ratios are given
  against each peer, per round.
* ``assign``: ``POST /v1/cohorts/assign`` with 10,000 learners per request as an Arrow IPC
  stream (and as JSON feature rows), sequential requests for ``--seconds``; learners/s.
* ``memory``: the server's resident memory with N learners loaded, at two sizes; the slope
  gives bytes per learner and the figure for 1M learners.

Data: 50,000 simulated learners (``cohortlens.simulate``, seed 7) and their features,
replicated under new ids to N learners; a ``CohortModel`` (k = 6) fitted on them.

All servers are up for the whole run; each of ``--rounds`` rounds measures ours and the
peers back to back, and the medians over rounds are reported with each round's figures.

Usage: ``python -m benchmarks.bench_serve [--learners 500000] [--seconds 6] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from benchmarks._harness import OUT

BASE_LEARNERS = 50_000
ADMIN_TOKEN = "bench-admin-token"
OURS = "cohortlens"
#: Peer name -> its module (``python -m MODULE ASSIGNMENTS PORT``).
PEERS = {
    "plain FastAPI dict": "benchmarks._peer_fastapi",
    "bare ASGI dict": "benchmarks._peer_asgi",
}


def _base_features() -> Path:
    import pyarrow.parquet as pq

    from cohortlens.features import compute_features
    from cohortlens.simulate import SimulationParams, simulate

    data = OUT / "data"
    data.mkdir(parents=True, exist_ok=True)
    path = data / f"serve_base_features_{BASE_LEARNERS}.parquet"
    if not path.exists():
        sim = simulate(SimulationParams(n_learners=BASE_LEARNERS, seed=7))
        pq.write_table(compute_features(sim.events), path)
    return path


def prepare(n_learners: int) -> dict[str, Path]:
    """A DuckDB store with N learners' features, a stable and a candidate model (cached)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from cohortlens.cli.cohorts import assignments_table
    from cohortlens.cohorts import CohortModel
    from cohortlens.store import DuckDBStore

    data = OUT / "data"
    db = data / f"serve_{n_learners}.duckdb"
    assign_path = data / f"serve_{n_learners}_assignments.parquet"
    feats_path = data / f"serve_{n_learners}_features.parquet"
    if db.exists() and assign_path.exists() and feats_path.exists():
        return {"db": db, "assignments": assign_path, "features": feats_path}
    base = pq.read_table(_base_features())
    parts: list[pa.Table] = []
    rep = 0
    while sum(p.num_rows for p in parts) < n_learners:
        ids = pc.binary_join_element_wise(f"r{rep}-", base["learner_id"], "")
        parts.append(base.set_column(0, "learner_id", ids))
        rep += 1
    feats = pa.concat_tables(parts).slice(0, n_learners).combine_chunks()
    pq.write_table(feats, feats_path)
    stable = CohortModel(6, random_state=0).fit(base, feature_run="1")
    candidate = CohortModel(6, random_state=1).fit(base, feature_run="1", previous=stable)
    if db.exists():
        db.unlink()
    with DuckDBStore(db) as store:
        run_id = store.save_feature_run(base, {}, "bench")
        sid = store.save_model(stable.to_dict(), feature_run_id=run_id, activate=True)
        assigned = assignments_table(stable, feats)
        store.save_assignments(sid, assigned)
        cid = store.save_model(candidate.to_dict(), feature_run_id=run_id, activate=False)
        store.save_assignments(cid, assignments_table(candidate, feats))
        store.start_release(cid, actor="bench")
        store.set_candidate_weight(0.1, actor="bench")
    pq.write_table(assigned, assign_path)
    return {"db": db, "assignments": assign_path, "features": feats_path}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def _server(cmd: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[int]:
    import httpx

    proc = subprocess.Popen(
        ["taskset", "-c", "0", *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd} not ready")
            time.sleep(0.25)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


_LUA = """
local ids = {}
for line in io.lines("%s") do ids[#ids + 1] = line end
math.randomseed(%d)
request = function()
  return wrk.format("GET", "/v1/learners/" .. ids[math.random(#ids)] .. "/cohort")
end
"""


def _wrk(port: int, ids_file: Path, conns: int, seconds: int) -> dict[str, Any]:
    script = ids_file.with_suffix(f".{conns}.lua")
    script.write_text(_LUA % (ids_file, 42))
    base = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", "--latency", "-s", str(script)]
    url = f"http://127.0.0.1:{port}"
    subprocess.run([*base, "-d2s", url], capture_output=True, check=True)  # warm-up
    out = subprocess.run([*base, f"-d{seconds}s", url], capture_output=True, text=True, check=True)
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    pct = {}
    for p in ("50", "99"):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if m:
            scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
            pct[p] = round(float(m.group(1)) * scale, 3)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: (.*)", text)
    return {
        "requests_per_s": round(rps),
        "p50_ms": pct.get("50"),
        "p99_ms": pct.get("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def _assign_load(port: int, features: Path, seconds: float, fmt: str) -> dict[str, Any]:
    """Sequential batch requests of 10,000 learners from one client process."""
    import httpx
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(features)
    batches = [table.slice(i * 10_000, 10_000) for i in range(min(20, table.num_rows // 10_000))]
    arrow = "application/vnd.apache.arrow.stream"
    bodies = []
    for b in batches:
        if fmt == "arrow":
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, b.schema) as w:
                w.write_table(b)
            bodies.append(sink.getvalue().to_pybytes())
        else:
            # Feature values only (timestamps are descriptive and not sent); NaN is not JSON.
            numeric = [
                f.name
                for f in b.schema
                if f.name == "learner_id" or not pa.types.is_timestamp(f.type)
            ]
            rows = [
                {k: v for k, v in r.items() if v is not None and v == v}
                for r in b.select(numeric).to_pylist()
            ]
            bodies.append(json.dumps({"features": rows}).encode())
    headers = (
        {"content-type": arrow, "accept": arrow}
        if fmt == "arrow"
        else {"content-type": "application/json"}
    )
    url = f"http://127.0.0.1:{port}/v1/cohorts/assign"
    n = learners = 0
    with httpx.Client(timeout=60) as c:
        c.post(url, content=bodies[0], headers=headers).raise_for_status()  # warm-up
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            r = c.post(url, content=bodies[n % len(bodies)], headers=headers)
            r.raise_for_status()
            learners += 10_000
            n += 1
        elapsed = time.perf_counter() - start
    return {
        "requests": n,
        "learners_per_s": round(learners / elapsed),
        "ms_per_request": round(1e3 * elapsed / n, 1),
    }


def _same_answers(ports: dict[str, int], ids: list[str]) -> None:
    """Every server answers each sampled id with 200 and that ``learner_id`` (like for like)."""
    import httpx

    for name, port in ports.items():
        for learner in ids:
            r = httpx.get(f"http://127.0.0.1:{port}/v1/learners/{learner}/cohort", timeout=10)
            if r.status_code != 200 or r.json().get("learner_id") != learner:
                raise RuntimeError(f"{name} answered {learner!r} with {r.status_code} {r.text}")


def run(learners: int = 500_000, seconds: int = 6, rounds: int = 3) -> list[dict[str, Any]]:
    """All cases; one row per (case, implementation, connections, round), then medians.

    Both servers stay up for the whole run, and each round measures ours then the peer back
    to back, so a slow spell of the (shared, noisy) machine hits both sides of a ratio.
    """
    if shutil.which("wrk") is None:
        return [{"case": "lookup", "skipped": "wrk is not installed (make loadgen)"}]
    small = prepare(BASE_LEARNERS)
    data = prepare(learners)
    rows: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="cohortlens-bench-serve-"))
    try:
        import pyarrow.parquet as pq

        ids = tmp / "ids.txt"
        ids.write_text("\n".join(pq.read_table(data["assignments"])["learner_id"].to_pylist()))
        db_copy = tmp / "serve.duckdb"
        shutil.copy(data["db"], db_copy)
        env = {"COHORTLENS_ADMIN_TOKEN": ADMIN_TOKEN}
        ours_port = _free_port()
        ours = [
            sys.executable,
            *("-m", "cohortlens", "serve", "--db", str(db_copy), "--no-access-log"),
            *("--port", str(ours_port)),
        ]
        per_round: dict[tuple[str, int], list[dict[str, Any]]] = {}
        assign: dict[str, list[dict[str, Any]]] = {"arrow": [], "json": []}
        with ExitStack() as stack:
            servers = {OURS: (ours_port, stack.enter_context(_server(ours, ours_port, env)))}
            for name, module in PEERS.items():
                port = _free_port()
                cmd = [sys.executable, "-m", module, str(data["assignments"]), str(port)]
                servers[name] = (port, stack.enter_context(_server(cmd, port)))
            ours_pid = servers[OURS][1]
            sample = pq.read_table(data["assignments"])["learner_id"].to_pylist()[::9973][:50]
            _same_answers({name: port for name, (port, _) in servers.items()}, sample)
            for r in range(1, rounds + 1):
                for conns in (64, 1):
                    for name, (port, pid) in servers.items():
                        res = _wrk(port, ids, conns, seconds)
                        per_round.setdefault((name, conns), []).append(res)
                        rows.append(
                            {
                                "case": "lookup",
                                "impl": name,
                                "connections": conns,
                                "round": r,
                                **res,
                                "server_rss_mb": round(_rss_mb(pid)),
                            }
                        )
                for fmt in ("arrow", "json"):
                    a = _assign_load(ours_port, data["features"], seconds, fmt)
                    assign[fmt].append(a)
                    rows.append(
                        {
                            "case": f"assign ({fmt}, 10k/request)",
                            "impl": "cohortlens",
                            "round": r,
                            **a,
                        }
                    )
            rss_big = _rss_mb(ours_pid)
        for (name, conns), results in per_round.items():
            rows.append(
                {
                    "case": "lookup (median of rounds)",
                    "impl": name,
                    "connections": conns,
                    "requests_per_s": round(_median([x["requests_per_s"] for x in results])),
                    "p50_ms": _median([x["p50_ms"] for x in results]),
                    "p99_ms": _median([x["p99_ms"] for x in results]),
                    "p99_ms_range": [
                        min(x["p99_ms"] for x in results),
                        max(x["p99_ms"] for x in results),
                    ],
                }
            )
        for peer_name in PEERS:
            for conns in (64, 1):
                ratios = [
                    o["requests_per_s"] / p["requests_per_s"]
                    for o, p in zip(
                        per_round[(OURS, conns)], per_round[(peer_name, conns)], strict=True
                    )
                ]
                rows.append(
                    {
                        "case": f"lookup ratio (ours / {peer_name}, requests/s, per round)",
                        "connections": conns,
                        "ratios": [round(x, 2) for x in ratios],
                        "median": round(_median(ratios), 2),
                    }
                )
        for fmt, results in assign.items():
            rows.append(
                {
                    "case": f"assign ({fmt}, 10k/request, median of rounds)",
                    "impl": "cohortlens",
                    "learners_per_s": round(_median([x["learners_per_s"] for x in results])),
                    "ms_per_request": _median([x["ms_per_request"] for x in results]),
                }
            )
        shutil.copy(small["db"], tmp / "small.duckdb")
        port = _free_port()
        small_cmd = [
            sys.executable,
            "-m",
            "cohortlens",
            "serve",
            "--db",
            str(tmp / "small.duckdb"),
            "--no-access-log",
            "--port",
            str(port),
        ]
        with _server(small_cmd, port, env) as pid:
            rss_small = _rss_mb(pid)
        per_learner = (rss_big - rss_small) * 2**20 / (learners - BASE_LEARNERS)
        rows.append(
            {
                "case": "memory",
                f"rss_mb_at_{BASE_LEARNERS}": round(rss_small),
                f"rss_mb_at_{learners}": round(rss_big),
                "bytes_per_learner": round(per_learner),
                "mb_per_1M_learners": round(per_learner * 1e6 / 2**20),
            }
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def _median(values: list[float]) -> float:
    import statistics

    return float(statistics.median(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--learners", type=int, default=500_000)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for row in run(args.learners, args.seconds, args.rounds):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
