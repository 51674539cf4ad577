"""Ingest under a memory budget: DuckDB's own limits, and the same store whatever the budget."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from tests._cli import run_cli

from cohortlens.budget import MemoryBudget
from cohortlens.errors import StoreError
from cohortlens.events.ingest import ingest
from cohortlens.simulate import SimulationParams, simulate
from cohortlens.store import DuckDBStore
from cohortlens.store.duckdb import apply_budget

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Simulated events with a repeated id and two bad rows (quarantine, duplicates)."""
    events = simulate(SimulationParams(n_learners=300, n_weeks=8, seed=6)).events
    head = events.slice(0, 3).to_pylist()
    head[1]["learner_id"] = "  "  # rejected: empty learner
    head[2]["outcome"] = 7.0  # rejected: outcome out of range
    bad = pa.Table.from_pylist(head, schema=events.schema)
    table = pa.concat_tables([events, bad, events.slice(10, 5)])
    path = tmp_path_factory.mktemp("budget") / "events.parquet"
    pq.write_table(table, path, row_group_size=10_000)
    return path


def _contents(store: DuckDBStore) -> tuple[pa.Table, pa.Table]:
    con = store.connection
    events = con.sql(
        "SELECT * EXCLUDE (ingest_id, source) FROM events ORDER BY event_id"
    ).to_arrow_table()
    quarantine = con.sql("SELECT line, reason, raw FROM quarantine ORDER BY line").to_arrow_table()
    return events, quarantine


def test_small_budget_gives_the_same_store(events_file: Path, tmp_path: Path) -> None:
    results = []
    for name, budget in (("small", MemoryBudget(64 << 20, tmp_path / "spill")), ("default", None)):
        with DuckDBStore(tmp_path / f"{name}.duckdb") as store:
            if budget is not None:
                apply_budget(store.connection, budget)
                limit = store.connection.execute(
                    "SELECT current_setting('memory_limit')"
                ).fetchone()
                assert limit is not None
                assert limit[0].replace(" ", "") in ("64.0MiB", "64MiB", "67.1MB")
            report = ingest(store, [events_file], now=NOW)
            results.append((report.to_dict(), _contents(store)))
    (small_report, small), (default_report, default) = results
    assert small_report["rejected"] == 2
    assert small_report["duplicates"] == 6  # head[0] and the five repeated rows
    assert small_report["rows_read"] == pq.ParquetFile(events_file).metadata.num_rows
    for key in ("rows_read", "accepted", "rejected", "duplicates", "rejected_by_reason"):
        assert small_report[key] == default_report[key], key
    assert small[0].equals(default[0])
    assert small[1].equals(default[1])
    assert small[0].num_rows == small_report["accepted"]
    assert pc.count_distinct(small[0].column("event_id")).as_py() == small[0].num_rows


def test_budget_sets_the_temp_directory(tmp_path: Path) -> None:
    with DuckDBStore(":memory:") as store:
        apply_budget(store.connection, MemoryBudget(1 << 30, tmp_path / "spill"))
        row = store.connection.execute("SELECT current_setting('temp_directory')").fetchone()
        assert row is not None
        assert row[0] == str(tmp_path / "spill")


@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "expected a positive number of bytes"), ("3 parsecs", "expected a positive")],
)
def test_cli_ingest_rejects_a_bad_memory_limit(
    events_file: Path, tmp_path: Path, value: str, message: str
) -> None:
    db = tmp_path / "s.duckdb"
    res = run_cli("ingest", str(events_file), "--db", str(db), "--memory-limit", value)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert "--memory-limit" in res.stderr
    assert "Traceback" not in res.stderr
    assert not db.exists()


def test_cli_ingest_with_a_budget(events_file: Path, tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    res = run_cli("ingest", str(events_file), "--db", str(db), "--memory-limit", "256MiB", "--json")
    assert res.returncode == 0, res.stderr
    assert '"duplicates": 6' in res.stdout


def test_out_of_temporary_disk_is_a_store_error_and_writes_nothing(
    events_file: Path, tmp_path: Path
) -> None:
    with DuckDBStore(tmp_path / "s.duckdb") as store:
        first = ingest(store, [events_file], now=NOW)
    with DuckDBStore(tmp_path / "s.duckdb") as store:
        con = store.connection
        # A budget DuckDB cannot keep the ingest in, and no room at all to spill.
        con.execute("SET memory_limit = '4MiB'")
        con.execute("SET max_temp_directory_size = '0KiB'")
        with pytest.raises(StoreError, match="ran out of memory or of temporary disk") as err:
            ingest(store, [events_file], now=NOW)
        assert "temp_directory" in str(err.value)
        assert "nothing was written" in str(err.value)
        con.execute("RESET memory_limit")
        assert store.count_events() == first.accepted
        assert store.ingest_log().num_rows == 1
