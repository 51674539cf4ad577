"""``experiment reduce`` shows a progress bar on a terminal, and nothing extra otherwise."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cohortlens.cli.experiment import app
from cohortlens.experiments import MetricKind, MetricSpec
from cohortlens.experiments.reduce import reduce_data, source_rows

ARGS = ["--metric", "completed:binary", "--metric", "revenue:mean", "--cap", "revenue=0.99"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(4)
    n = 400_000
    table = pa.table(
        {
            "variant": np.where(rng.random(n) < 0.5, "control", "treatment"),
            "completed": rng.random(n) < 0.3,
            "revenue": rng.lognormal(1.0, 1.0, n),
        }
    )
    path = tmp_path_factory.mktemp("progress") / "rows.parquet"
    pq.write_table(table, path, row_group_size=50_000)
    return path


def _run_in_pty(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; return (exit code, output)."""
    master, slave = pty.openpty()
    env = os.environ | {"TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cohortlens", "experiment", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        cwd=cwd,
        env=env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=120), b"".join(chunks).decode("utf-8", "replace")


def test_progress_bar_on_a_terminal(data: Path, tmp_path: Path) -> None:
    code, output = _run_in_pty(
        ["reduce", str(data), *ARGS, "--out", str(tmp_path / "s.json")], tmp_path
    )
    assert code == 0, output
    assert "reduce: cap quantiles" in output
    assert "reduce: sums" in output
    assert "100%" in output
    assert "rows/s" in output
    assert "ETA" in output
    assert (tmp_path / "s.json").exists()


def test_no_progress_with_json_or_without_a_terminal(data: Path, tmp_path: Path) -> None:
    code, output = _run_in_pty(
        ["reduce", str(data), *ARGS, "--out", str(tmp_path / "s.json"), "--json"], tmp_path
    )
    assert code == 0, output
    assert "rows/s" not in output
    assert json.loads(output)["units"]["control"] > 0
    result = CliRunner().invoke(
        app, ["reduce", str(data), *ARGS, "--out", str(tmp_path / "t.json")]
    )
    assert result.exit_code == 0, result.output
    assert "rows/s" not in result.output
    assert "reduce: sums" not in result.output


def test_progress_callback_and_row_counts(data: Path, tmp_path: Path) -> None:
    seen: list[tuple[str, float]] = []
    spec = MetricSpec("revenue", MetricKind.MEAN, cap_quantile=0.99)
    reduce_data(
        data, variant_col="variant", metrics=[spec], progress=lambda s, p: seen.append((s, p))
    )
    stages = [s for s, _ in seen]
    assert stages[0] == "caps"
    assert stages[-1] == "sums"
    assert ("caps", 100.0) in seen
    assert seen[-1] == ("sums", 100.0)
    assert all(0.0 <= p <= 100.0 for _, p in seen)
    assert source_rows(data) == 400_000
    csv = tmp_path / "r.csv"
    csv.write_text("variant,x\n" + "".join(f"a,{i}\n" for i in range(50_000)))
    estimate = source_rows(csv)
    assert estimate is not None
    assert abs(estimate - 50_000) < 10_000  # an estimate: from the first lines' length
    small = tmp_path / "s.csv"
    small.write_text("variant,x\na,1\nb,2")
    assert source_rows(small) == 2
