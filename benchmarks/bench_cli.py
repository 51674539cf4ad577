"""Start-up of the ``cohortlens`` command, against bare Python and a one-command Typer app.

What is timed: a whole process, from ``exec`` to exit, as a user runs it — ``cohortlens
--help`` and a trivial command that fails before opening a store (``cohortlens models --db
MISSING``: exit 3). Peers in the same run: ``python -c pass`` (the interpreter's own start)
and ``python -m benchmarks.bench_cli --typer-floor --help`` (a Typer app with one command:
what the CLI framework costs before any of our code). Cases are interleaved round by round
after one warm-up round; each reports the median wall time and the median CPU time of the
child (user + system, from ``wait4``), which is what a loaded machine does not inflate.

Usage: ``python -m benchmarks.bench_cli [--rounds 11]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Goal of issue 16: the command starts in at most half a second.
GOAL_S = 0.5


def _cases(missing: Path) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "python -c pass (peer)": [py, "-c", "pass"],
        "one-command Typer app --help (peer)": [
            py,
            "-m",
            "benchmarks.bench_cli",
            "--typer-floor",
            "--help",
        ],
        "cohortlens --help": [py, "-m", "cohortlens", "--help"],
        "cohortlens models --db MISSING (exit 3)": [
            py,
            "-m",
            "cohortlens",
            "models",
            "--db",
            str(missing),
        ],
    }


def _time(argv: list[str]) -> tuple[float, float, int]:
    """Wall seconds, child CPU seconds and exit code of one run of ``argv``."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


def run(rounds: int = 11) -> list[dict[str, Any]]:
    """Interleave the cases for ``rounds`` rounds after a warm-up round; one row per case."""
    with tempfile.TemporaryDirectory() as tmp:
        cases = _cases(Path(tmp) / "missing.duckdb")
        walls: dict[str, list[float]] = {name: [] for name in cases}
        cpus: dict[str, list[float]] = {name: [] for name in cases}
        for r in range(rounds + 1):
            for name, argv in cases.items():
                wall, cpu, code = _time(argv)
                expected = 3 if "MISSING" in name else 0
                if code != expected:
                    raise RuntimeError(f"{name}: exit {code}, expected {expected}")
                if r > 0:
                    walls[name].append(wall)
                    cpus[name].append(cpu)
    bare = statistics.median(walls["python -c pass (peer)"])
    rows = []
    for name in cases:
        wall = statistics.median(walls[name])
        rows.append(
            {
                "case": name,
                "wall_s_median": round(wall, 3),
                "wall_s_min": round(min(walls[name]), 3),
                "cpu_s_median": round(statistics.median(cpus[name]), 3),
                "over_bare_python_s": round(wall - bare, 3),
                "goal": ""
                if "peer" in name
                else f"<= {GOAL_S} s: {'met' if wall <= GOAL_S else 'not met'}",
                "rounds": rounds,
            }
        )
    return rows


def _typer_floor() -> None:
    """The smallest Typer app with one option: the framework's own start-up."""
    import typer

    app = typer.Typer(add_completion=False)

    @app.command()
    def hello(name: str = "world") -> None:
        """Say hello."""
        typer.echo(f"hello {name}")

    app()


def main() -> None:
    if "--typer-floor" in sys.argv:
        sys.argv.remove("--typer-floor")
        _typer_floor()
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    print(json.dumps(run(args.rounds), indent=2))


if __name__ == "__main__":
    main()
