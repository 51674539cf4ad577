"""``make bench``: run every benchmark and write bench_output/results.json (+ a markdown table).

Every suite is every ``benchmarks/bench_*.py`` (a test checks the list): each times cohortlens
beside a peer. The validity checks (``validity_*.py``, docs/VALIDITY.md) are not benchmarks:
they run with ``python -m benchmarks.validity``. The figures that docs/BENCHMARKS.md quotes
come from these commands.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
from datetime import UTC, datetime
from typing import Any

from benchmarks._harness import OUT

#: name -> module exposing ``run(...) -> list[dict]``.
SUITES = {
    "cli": "benchmarks.bench_cli",
    "readers": "benchmarks.bench_readers",
    "ingest": "benchmarks.bench_ingest",
    "experiments": "benchmarks.bench_experiments",
    "features": "benchmarks.bench_features",
    "cohorts": "benchmarks.bench_cohorts",
    "reports": "benchmarks.bench_reports",
    "spark": "benchmarks.bench_spark",
    "serve": "benchmarks.bench_serve",
    "scale": "benchmarks.bench_scale",
}


def _markdown(name: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"### {name}\n(no rows)\n"
    cols = list(rows[0])
    lines = [f"### {name}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=sorted(SUITES), help="suites to run")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
    }
    report = []
    for name in args.only or list(SUITES):
        rows = importlib.import_module(SUITES[name]).run()
        results[name] = rows
        report.append(_markdown(name, rows))
        print(report[-1], flush=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    (OUT / "results.md").write_text("\n".join(report))
    print(f"wrote {OUT / 'results.json'} and {OUT / 'results.md'}")


if __name__ == "__main__":
    main()
