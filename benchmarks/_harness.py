"""Shared helpers: isolated timed runs (one subprocess per case, so peak RSS is its own)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

OUT = Path("bench_output")


def run_case(module: str, args: list[str], repeats: int = 3) -> dict[str, Any]:
    """Run ``python -m module args`` ``repeats`` times after one warm-up; median seconds."""
    runs = []
    for i in range(repeats + 1):
        proc = subprocess.run(
            [sys.executable, "-m", module, *args], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{module} {args} failed:\n{proc.stderr[-2000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if i > 0:  # the first run warms the page cache and JIT caches
            runs.append(result)
    seconds = [r["seconds"] for r in runs]
    return {
        "seconds": statistics.median(seconds),
        "runs": seconds,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        **{k: v for k, v in runs[-1].items() if k not in ("seconds", "peak_rss_mb")},
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB.

    On Linux this is ``VmHWM`` of ``/proc/self/status``: the high-water mark of this
    process's own memory. ``getrusage().ru_maxrss`` is not: Linux carries the parent's peak
    over fork + exec, so a small case spawned by a large parent reported the parent's peak.
    """
    import resource

    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(payload: dict[str, Any]) -> None:
    """Print the case result as the last stdout line (read by :func:`run_case`)."""
    payload["peak_rss_mb"] = round(peak_rss_mb(), 1)
    sys.stdout.write(json.dumps(payload) + "\n")
