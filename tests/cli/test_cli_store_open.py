"""Commands that read, or need earlier results, never create a store (a typo in --db would
leave an empty one behind): they exit 3 naming the missing store, and no file appears."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests._cli import run_cli

#: Every command that must find an existing store, as (arguments before --db). "SPEC" is
#: replaced by a valid rollout spec file.
NEEDS_A_STORE = [
    ("discover",),
    ("discover", "--candidate"),
    ("models",),
    ("quarantine",),
    ("cohorts",),
    ("features",),
    ("rollout", "init"),
    ("rollout", "status"),
    ("rollout", "status", "cohort-model"),
    ("rollout", "history", "cohort-model"),
    ("rollout", "run", "SPEC", "--once"),
    ("rollout", "promote", "cohort-model"),
    ("rollout", "promote", "cohort-model", "--full"),
    ("rollout", "abort", "cohort-model"),
    ("rollout", "pause", "cohort-model"),
    ("rollout", "resume", "cohort-model"),
    ("rollout", "retry", "cohort-model"),
    ("experiment", "analyze", "store:onboarding", "--metric", "completed:binary"),
]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=120)


@pytest.mark.parametrize("command", NEEDS_A_STORE, ids=" ".join)
def test_a_missing_store_exits_3_and_is_not_created(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    spec = tmp_path / "rollout.yaml"
    r = cli("rollout", "init", "--candidate", "2", "--out", str(spec))
    assert r.returncode == 0, r.stderr
    typo = tmp_path / "typo.duckdb"
    args = [str(spec) if a == "SPEC" else a for a in command]
    r = cli(*args, "--db", str(typo))
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert f"no store at {typo}" in r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rollout.yaml"]


def test_the_default_store_is_not_created_either(tmp_path: Path) -> None:
    """Without --db (no $COHORTLENS_DB) the default ./cohortlens.duckdb is not created."""
    r = subprocess.run(
        [sys.executable, "-m", "cohortlens", "discover"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "COHORTLENS_DB"},
    )
    assert r.returncode == 3
    assert "no store at cohortlens.duckdb" in r.stderr
    assert list(tmp_path.iterdir()) == []
