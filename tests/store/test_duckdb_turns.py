"""Processes take turns on one DuckDB file: commands wait (bounded, with a message) for it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests._cli import run_cli

from cohortlens.store import DuckDBStore, StoreBusyError, TurnTakingStore, open_shared
from cohortlens.store.duckdb import connect, lock_wait_s

HOLD = (
    "import sys, time\n"
    "from cohortlens.store.duckdb import connect\n"
    "con = connect(sys.argv[1])\n"
    "print('held', flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
)


#: Holds the file until a line arrives on stdin.
HOLD_UNTIL_TOLD = (
    "import sys\n"
    "from cohortlens.store.duckdb import connect\n"
    "con = connect(sys.argv[1])\n"
    "print('held', flush=True)\n"
    "sys.stdin.readline()\n"
)


def _holder(db: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding ``db`` for ``seconds`` (as a long ingest would)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def _cli(db: Path, *args: str, wait: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--db", str(db), env={"COHORTLENS_LOCK_WAIT_S": wait})


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "turns.duckdb"
    DuckDBStore(path).close()
    return path


def test_a_writer_waits_for_its_turn_then_succeeds(db: Path, tmp_path: Path) -> None:
    """The holder lets go only once the writer has said it waits (no race with start-up)."""
    csv = tmp_path / "e.csv"
    csv.write_text("learner_id,ts,item_id\nL1,2025-01-01T00:00:00Z,q1\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_UNTIL_TOLD, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORTLENS_")}
    env["COHORTLENS_LOCK_WAIT_S"] = "120"
    writer = subprocess.Popen(
        [sys.executable, "-m", "cohortlens", "ingest", str(csv), "--json", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert writer.stderr is not None
    seen = []
    try:
        # bounded: the writer gives up after its 120 s wait, which ends stderr
        for line in writer.stderr:
            seen.append(line)
            if "waiting for" in line:
                break
    finally:
        holder.stdin.write("release\n")
        holder.stdin.close()
        holder.wait(timeout=60)
    stdout, rest = writer.communicate(timeout=300)
    stderr = "".join(seen) + rest
    assert writer.returncode == 0, stderr
    assert f"waiting for {db}: held by process {holder.pid}" in stderr
    assert '"accepted": 1' in stdout


def test_the_wait_is_bounded_and_names_the_holder(db: Path) -> None:
    holder = _holder(db, 60.0)
    try:
        r = _cli(db, "quarantine", wait="0.5")
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert r.returncode == 3
    assert f"held by process {holder.pid}" in r.stderr
    assert "COHORTLENS_LOCK_WAIT_S" in r.stderr
    assert "Traceback" not in r.stderr


def test_lock_wait_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COHORTLENS_LOCK_WAIT_S", raising=False)
    assert lock_wait_s() == 60.0
    assert lock_wait_s(2) == 2.0
    monkeypatch.setenv("COHORTLENS_LOCK_WAIT_S", "7.5")
    assert lock_wait_s() == 7.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("COHORTLENS_LOCK_WAIT_S", bad)
        with pytest.raises(Exception, match="COHORTLENS_LOCK_WAIT_S"):
            lock_wait_s()


def test_a_turn_taking_store_holds_the_file_only_per_unit_of_work(db: Path) -> None:
    shared = open_shared(db, wait_s=5)
    assert isinstance(shared, TurnTakingStore)
    assert shared.routing_revision() == 0
    # Between units of work, another process (here: another connection) may take the file.
    con = connect(str(db), wait_s=0)
    con.close()
    with shared.session() as store:  # inside a session the file is held
        assert store.count_events() == 0
        with pytest.raises(StoreBusyError):
            _in_other_process_open(db)
    assert shared.models() == []


def _in_other_process_open(db: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\nfrom cohortlens.store.duckdb import connect\n"
            "connect(sys.argv[1], wait_s=0.2)\n",
            str(db),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if "StoreBusyError" in r.stderr:
        raise StoreBusyError(r.stderr.strip().splitlines()[-1])
    raise AssertionError(f"the other process opened a held file: {r.stderr}")


def test_a_busy_file_is_refused_after_the_wait(db: Path) -> None:
    holder = _holder(db, 60.0)
    try:
        start = time.monotonic()
        with pytest.raises(StoreBusyError, match="held by process"):
            DuckDBStore(db, wait_s=0.3)
        assert time.monotonic() - start < 60  # bounded (never the holder's whole minute)
    finally:
        holder.kill()
        holder.wait(timeout=60)
