"""Progress: exact totals from the library (:mod:`cohortlens.progress`), bars with percent,
rate and ETA on a terminal, and nothing extra with ``--json`` or without a terminal."""

from __future__ import annotations

import gzip
import importlib
import json
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from cohortlens.cohorts import CohortModel
from cohortlens.events.ingest import COMMIT_STEP, ingest
from cohortlens.features import build_features
from cohortlens.simulate import SimulationParams, simulate, write_simulation
from cohortlens.store import DuckDBStore

Call = tuple[str, int, int | None, str]


class Recorder:
    """An ``on_progress`` callback that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def __call__(self, step: str, done: int, total: int | None, unit: str) -> None:
        self.calls.append((step, done, total, unit))

    def steps(self) -> list[str]:
        return list(dict.fromkeys(c[0] for c in self.calls))

    def of(self, step: str) -> list[Call]:
        return [c for c in self.calls if c[0] == step]


def check_step(calls: list[Call], total: int | None, unit: str) -> None:
    """One step: a constant total and unit, ``done`` never decreasing, never past the total,
    starting at 0 and ending at the total."""
    assert calls, "the step was never reported"
    assert {c[2] for c in calls} == {total}
    assert {c[3] for c in calls} == {unit}
    done = [c[1] for c in calls]
    assert done == sorted(done)
    assert done[0] == 0
    if total is not None:
        assert done[-1] == total
        assert max(done) <= total


# ---------------------------------------------------------------------------- library


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("progress")
    write_simulation(simulate(SimulationParams(n_learners=800, n_weeks=10, seed=4)), d / "sim")
    return d / "sim"


def test_simulate_reports_weeks_then_rows_written(tmp_path: Path) -> None:
    rec = Recorder()
    sim = simulate(SimulationParams(n_learners=300, n_weeks=7, seed=1), on_progress=rec)
    check_step(rec.of("simulating"), 7, "weeks")
    assert [c[1] for c in rec.of("simulating")] == list(range(8))
    rec = Recorder()
    paths = write_simulation(sim, tmp_path, on_progress=rec)
    rows = sum(getattr(sim, n).num_rows for n in ("events", "outcomes", "truth", "items"))
    check_step(rec.of("writing Parquet"), rows, "rows")
    # Written one row group at a time: the same file as a plain pq.write_table (with
    # dictionary pages only for the repeating strings).
    plain = tmp_path / "plain.parquet"
    repeating = ["learner_id", "domain", "item_id"]
    pq.write_table(sim.events, plain, compression="zstd", use_dictionary=repeating)
    assert paths["events"].read_bytes() == plain.read_bytes()


def test_ingest_parquet_reports_rows_from_the_footer(sim_dir: Path, tmp_path: Path) -> None:
    events = sim_dir / "events.parquet"
    rows = pq.ParquetFile(events).metadata.num_rows
    rec, legacy = Recorder(), []
    with DuckDBStore(tmp_path / "s.duckdb") as store:
        report = ingest(
            store,
            [events],
            on_progress=rec,
            progress=lambda source, n: legacy.append((source, n)),
        )
    assert report.rows_read == rows
    assert rec.steps() == [str(events), COMMIT_STEP]
    check_step(rec.of(str(events)), rows, "rows")
    check_step(rec.of(COMMIT_STEP), 1, "steps")
    assert legacy[-1] == (str(events), rows)  # the old (source, rows) callback still works


def test_ingest_text_reports_physical_lines(tmp_path: Path) -> None:
    csv = tmp_path / "e.csv"
    # A quoted field spanning two lines: 4 physical lines after the header, 3 records.
    csv.write_text(
        "learner_id,ts,item_id,domain\n"
        "a,2024-03-01T10:00:00Z,i1,math\n"
        'b,2024-03-01T11:00:00Z,"i\n2",math\n'
        "c,not-a-time,i3,math"  # no newline at the end: still a line
    )
    rec = Recorder()
    with DuckDBStore(tmp_path / "s.duckdb") as store:
        report = ingest(store, [csv], on_progress=rec)
    assert report.rows_read == 3
    check_step(rec.of(str(csv)), 5, "lines")
    zipped = tmp_path / "e.csv.gz"
    zipped.write_bytes(gzip.compress(csv.read_bytes()))
    rec = Recorder()
    with DuckDBStore(tmp_path / "z.duckdb") as store:
        ingest(store, [zipped], on_progress=rec)
    check_step(rec.of(str(zipped)), None, "rows")  # unknown before reading: no total
    assert rec.of(str(zipped))[-1][1] == 3


def test_ingest_counts_nothing_without_a_callback(tmp_path: Path, monkeypatch: Any) -> None:
    """Line counting is done only for a progress callback (the CLI's, on a terminal)."""
    module = importlib.import_module("cohortlens.events.ingest")  # the package shadows it

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("counted lines without a progress callback")

    monkeypatch.setattr(module, "_count_lines", refuse)
    csv = tmp_path / "e.csv"
    csv.write_text("learner_id,ts,item_id\na,2024-03-01T10:00:00Z,i1\n")
    with DuckDBStore(tmp_path / "s.duckdb") as store:
        assert ingest(store, [csv]).accepted == 1


def test_duckdb_progress_tracking_is_on_only_while_asked(tmp_path: Path) -> None:
    """DuckDB tracks (never prints) its progress while an ingest asks for it."""
    with DuckDBStore(tmp_path / "s.duckdb") as store, store.ingest_session() as session:
        con = store.connection

        def settings() -> tuple[Any, ...]:
            return tuple(
                con.execute(f"SELECT current_setting('{name}')").fetchall()[0][0]
                for name in ("enable_progress_bar", "enable_progress_bar_print")
            )

        before = settings()
        with session.progress_tracked() as share:
            assert settings() == (True, False)
            assert share() is None  # nothing running
        assert settings() == before
        session.resolve()
        session.commit({"totals": {}})


def test_features_report_events_then_stages_or_partitions(sim_dir: Path) -> None:
    events = sim_dir / "events.parquet"
    rows = pq.ParquetFile(events).metadata.num_rows
    rec = Recorder()
    in_memory = build_features(events, on_progress=rec)
    check_step(rec.of("reading events"), rows, "events")
    check_step(rec.of("computing features"), 4, "stages")
    rec = Recorder()
    reader = pq.ParquetFile(events)
    spilled = build_features(
        pa.RecordBatchReader.from_batches(reader.schema_arrow, reader.iter_batches()),
        n_workers=1,
        n_partitions=6,
        on_progress=rec,
        total_events=rows,
        in_memory_max_events=0,  # a reader of known size that fits would run in memory
    )
    check_step(rec.of("reading events"), rows, "events")
    check_step(rec.of("learner partitions"), 12, "partitions")
    assert spilled.equals(in_memory)


def test_fit_reports_the_k_sweep_then_its_stages(sim_dir: Path) -> None:
    features = build_features(sim_dir / "events.parquet")
    rec = Recorder()
    model = CohortModel(random_state=0).fit(features, on_progress=rec)
    assert model.selection_ is not None
    swept = len(model.selection_.candidates)
    check_step(rec.of("choosing k"), swept, "k values")
    check_step(rec.of("fitting cohorts"), 4, "stages")
    assert rec.steps() == ["choosing k", "fitting cohorts"]
    rec = Recorder()
    CohortModel(3, random_state=0).fit(features, on_progress=rec)
    assert rec.steps() == ["fitting cohorts"]  # a fixed k sweeps nothing


# ---------------------------------------------------------------------------- terminal


def run_cli(args: list[str], cwd: Path, *, tty: bool, timeout: float = 300) -> tuple[int, str, str]:
    """Run ``cohortlens ARGS``: stdout to a pipe, stderr to a pseudo-terminal when ``tty``.

    Returns the exit code, stdout and what the terminal (or the stderr pipe) received.
    """
    env = os.environ | {"TERM": "xterm-256color", "COLUMNS": "120"}
    for var in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "cohortlens", *args]
    if not tty:
        r = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=timeout
        )
        return r.returncode, r.stdout, r.stderr
    master, slave = pty.openpty()
    received: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                return
            if not chunk:
                return
            received.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    try:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL
        )
        os.close(slave)
        slave = -1
        reader.start()
        stdout, _ = proc.communicate(timeout=timeout)
        reader.join(timeout=30)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    return proc.returncode, stdout.decode(), b"".join(received).decode(errors="replace")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """simulate output, an export.csv and a store with events, features and one model."""
    d = tmp_path_factory.mktemp("bars")
    sim = simulate(SimulationParams(n_learners=1500, n_weeks=10, seed=2))
    write_simulation(sim, d / "sim")
    pacsv.write_csv(sim.events.slice(0, 50_000), d / "export.csv")
    for args in (
        ["ingest", "sim/events.parquet", "--outcomes", "sim/outcomes.parquet"],
        ["features"],
    ):
        code, _, err = run_cli(args, d, tty=False)
        assert code == 0, err
    return d


COMMANDS = {
    "simulate": (["simulate", "--learners", "2000", "--weeks", "8", "--out", "sim2"], "weeks"),
    "ingest parquet": (["ingest", "sim/events.parquet", "--db", "other.duckdb"], "rows"),
    "ingest csv": (["ingest", "export.csv", "--db", "csv.duckdb"], "lines"),
    "features": (["features"], "events"),
    "discover": (["discover"], "k values"),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_terminal_gets_bars_with_percent_rate_and_eta(workdir: Path, name: str) -> None:
    args, unit = COMMANDS[name]
    code, stdout, term = run_cli(args, workdir, tty=True)
    assert code == 0, term
    assert "\x1b[" in term  # drawn (and erased) on the terminal
    assert "%" in term
    assert f" {unit}" in term
    assert f"{unit}/s" in term or "ETA" in term  # a rate once two samples exist
    assert "ETA" in term or " in 0:" in term
    assert "\x1b[" not in stdout  # stdout (a pipe) gets the plain report only


@pytest.mark.parametrize("name", list(COMMANDS))
def test_json_on_a_terminal_prints_nothing_extra(workdir: Path, name: str) -> None:
    args, _ = COMMANDS[name]
    args = [a if a != "sim2" else "sim3" for a in args]
    args = [a.replace(".duckdb", "-json.duckdb") for a in args]
    code, stdout, term = run_cli([*args, "--json"], workdir, tty=True)
    assert code == 0, term
    assert term == ""
    json.loads(stdout)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_without_a_terminal_nothing_extra_is_printed(workdir: Path, name: str) -> None:
    args, _ = COMMANDS[name]
    args = [a if a != "sim2" else "sim4" for a in args]
    args = [a.replace(".duckdb", "-pipe.duckdb") for a in args]
    code, stdout, stderr = run_cli(args, workdir, tty=False)
    assert code == 0, stderr
    assert stderr == ""
    assert "\x1b[" not in stdout
