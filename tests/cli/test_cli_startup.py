"""The command starts without the heavy libraries: each stage imports what it needs when it runs.

Start-up time itself is measured in benchmarks/bench_cli.py (never timed in a test); what a
test can check deterministically is which modules a command loaded (issue 16).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: Libraries that cost a tenth of a second or more to import, none needed to start.
HEAVY = (
    "numpy",
    "pyarrow",
    "duckdb",
    "sklearn",
    "scipy",
    "fastapi",
    "numba",
    "pandas",
    "pyspark",
    "psycopg",
)

#: Runs ``cohortlens ARGS`` in this process and writes its exit code and the heavy modules
#: it loaded to the file named by the first argument.
_PROBE = """
import json, runpy, sys
out, args = sys.argv[1], json.loads(sys.argv[2])
heavy = json.loads(sys.argv[3])
sys.argv = ["cohortlens", *args]
code = 0
try:
    if args == ["<import>"]:
        import cohortlens.cli.main
    else:
        runpy.run_module("cohortlens", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
loaded = sorted(m for m in heavy if m in sys.modules)
with open(out, "w") as f:
    json.dump({"code": code, "loaded": loaded}, f)
"""


def _run(tmp_path: Path, *args: str) -> tuple[int, list[str]]:
    out = tmp_path / "probe.json"
    subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), json.dumps(list(args)), json.dumps(HEAVY)],
        capture_output=True,
        check=False,
        cwd=tmp_path,
        timeout=300,
    )
    result = json.loads(out.read_text())
    return int(result["code"]), list(result["loaded"])


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("<import>",), 0),
        (("--help",), 0),
        (("models", "--db", "missing.duckdb"), 3),
        (("rollout", "--help"), 0),
    ],
)
def test_starting_loads_no_heavy_library(tmp_path: Path, args: tuple[str, ...], code: int) -> None:
    assert _run(tmp_path, *args) == (code, [])


def test_a_lazy_sub_app_loads_when_a_command_of_it_runs(tmp_path: Path) -> None:
    """The probe sees imports: naming the experiment sub-app loads it, and SciPy with it."""
    code, loaded = _run(tmp_path, "experiment", "--help")
    assert code == 0
    assert "scipy" in loaded
