"""ingest(): the store's fused validation path against validate_batch, and the quarantine."""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohortlens.events.ingest import ingest, ingest_sources
from cohortlens.events.readers import open_source
from cohortlens.events.source import RawBatch, Source
from cohortlens.events.validate import validate_batch
from cohortlens.store import DuckDBStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)
HEADER = "learner_id,ts,domain,item_id,outcome,duration_s\n"

_row = st.tuples(
    st.sampled_from(["a", "b", "", "c"]),
    st.sampled_from(["2024-01-01T00:00:00Z", "1709287200", "x", "", "1990-01-01", "2024-05-05"]),
    st.sampled_from(["math", ""]),
    st.sampled_from(["i1", "i2", ""]),
    st.sampled_from(["", "0.5", "1", "2", "nan", "q"]),
    st.sampled_from(["", "3", "-1"]),
).map(",".join)
_line = st.one_of(_row, _row, _row, st.just("only,three,fields"), st.just(""))


def _reference(path: Path) -> tuple[int, Counter[str], int]:
    """Rows read, rejects per reason, and distinct accepted event ids via validate_batch."""
    rows, reasons, ids = 0, Counter[str](), set()
    for batch in open_source(path).batches():
        v = validate_batch(batch, now=NOW)
        rows += batch.n_rows
        reasons.update(v.rejected["reason"].to_pylist())
        ids.update(v.accepted["event_id"].to_pylist())
    return rows, reasons, len(ids)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(_line, min_size=1, max_size=60))
def test_fused_ingest_matches_validate_batch(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "in.csv"
    path.write_text(HEADER + "\n".join(lines) + "\n")
    rows, reasons, distinct = _reference(path)
    with DuckDBStore(":memory:") as store:
        report = ingest(store, [path], now=NOW)
        assert report.rows_read == rows
        assert report.rejected_by_reason == dict(sorted(reasons.items()))
        assert report.accepted == distinct == store.count_events()
        assert report.rows_read == report.accepted + report.rejected + report.duplicates
        assert store.read_quarantine().num_rows == report.rejected


def test_quarantine_names_source_line_reason_and_raw(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(HEADER + "u1,2024-01-01,math,i1,0.5,\nu2,yesterday,math,i1,,\nu3,2024-01-01\n")
    with DuckDBStore(":memory:") as store:
        report = ingest(store, [path], now=NOW)
        rows = store.read_quarantine().to_pylist()
    assert (report.accepted, report.rejected) == (1, 2)
    by_line = {r["line"]: r for r in rows}
    assert by_line[3]["reason"] == "bad_timestamp"
    assert by_line[3]["source"] == str(path)
    assert "yesterday" in by_line[3]["raw"]
    assert by_line[4]["reason"] == "wrong_field_count"
    assert by_line[4]["raw"] == "u3,2024-01-01"


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(_row.map(lambda r: r.split(",")), min_size=1, max_size=50))
def test_native_parquet_scan_matches_the_batch_path(tmp_path: Path, rows: list[list[str]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cohortlens.events.source import ReadOptions

    names = ["learner_id", "ts", "domain", "item_id", "outcome", "duration_s"]
    path = tmp_path / "in.parquet"
    pq.write_table(
        pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)}), path, row_group_size=7
    )
    assert open_source(path).native is not None
    rows_read, reasons, distinct = _reference(path)
    with DuckDBStore(":memory:") as store:
        report = ingest(store, [path], now=NOW, options=ReadOptions(batch_rows=5))
        quarantined = sorted((r["line"], r["reason"]) for r in store.read_quarantine().to_pylist())
        stored = store.count_events()
    reference_lines = sorted(
        (line, reason)
        for b in open_source(path).batches()
        for line, reason in zip(
            validate_batch(b, now=NOW).rejected["line"].to_pylist(),
            validate_batch(b, now=NOW).rejected["reason"].to_pylist(),
            strict=True,
        )
    )
    assert report.rows_read == rows_read == len(rows)
    assert report.rejected_by_reason == dict(sorted(reasons.items()))
    assert quarantined == reference_lines
    assert report.accepted == distinct == stored


def test_grouped_batches_keep_every_row_line_and_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches joined for the SQL store (here 4+ rows, across a JSON type change) lose nothing."""
    from cohortlens.events.source import ReadOptions

    # ``cohortlens.events.ingest`` the attribute is the function; the module is in sys.modules.
    monkeypatch.setattr(sys.modules["cohortlens.events.ingest"], "SQL_GROUP_ROWS", 4)
    csv_path = tmp_path / "in.csv"
    csv_path.write_text(
        HEADER
        + "".join(
            f"u{i % 3},2024-01-{1 + i % 28:02d},math,i{i},{'x' if i % 5 == 0 else '0.5'},3\n"
            if i % 7
            else "u,short\n"
            for i in range(30)
        )
    )
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps(
                {
                    "learner_id": i if i < 6 else f"L{i}",  # int, then text: the type changes
                    "ts": "2024-02-01",
                    "item_id": "q",
                    "duration_s": -1 if i % 4 == 0 else 2,
                }
            )
            for i in range(12)
        )
        + "\n{broken\n"
    )
    options = ReadOptions(batch_rows=3)
    expected = {}
    for path in (csv_path, jsonl):
        rejected: list[tuple[int, str]] = []
        ids = set()
        for batch in open_source(path, options=options).batches():
            v = validate_batch(batch, now=NOW)
            lines, reasons = v.rejected["line"].to_pylist(), v.rejected["reason"].to_pylist()
            rejected += zip(lines, reasons, strict=True)
            ids.update(v.accepted["event_id"].to_pylist())
        expected[str(path)] = (sorted(rejected), ids)
    with DuckDBStore(":memory:") as store:
        report = ingest(store, [csv_path, jsonl], now=NOW, options=options)
        quarantine = store.read_quarantine().to_pylist()
        stored = store.connection.execute("SELECT source, event_id FROM events").fetchall()
    for s in report.sources:
        lines, ids = expected[s.source]
        got = sorted((q["line"], q["reason"]) for q in quarantine if q["source"] == s.source)
        assert got == lines
        assert {e for src, e in stored if src == s.source} == ids
        assert s.rows_read == s.accepted + s.rejected + s.duplicates
        assert s.rejected == len(lines) > 0
    assert report.rows_read == 30 + 13


def test_the_store_connection_keeps_its_optimizer_settings() -> None:
    """The validation statements switch filter pushdown off only while they run."""
    with DuckDBStore(":memory:") as store:
        con = store.connection
        con.execute("SET disabled_optimizers = 'join_order'")
        path_rows = [("a", "2024-01-01", "i"), ("", "2024-01-01", "i")]
        table = pa.table(
            {k: [r[i] for r in path_rows] for i, k in enumerate(["learner_id", "ts", "item_id"])}
        )
        source = Source(
            "mem",
            ("learner_id", "ts", "item_id"),
            lambda: iter(
                [RawBatch("mem", table.append_column("_line", pa.array([2, 3], pa.int64())))]
            ),
        )
        report = ingest_sources(store, [source], now=NOW)
        assert (report.accepted, report.rejected) == (1, 1)
        setting = con.execute("SELECT current_setting('disabled_optimizers')").fetchone()
        assert setting == ("join_order",)


def test_a_failing_store_stops_the_read_ahead_and_rolls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from cohortlens.events.source import ReadOptions
    from cohortlens.store.duckdb import _DuckDBIngest

    monkeypatch.setattr(sys.modules["cohortlens.events.ingest"], "SQL_GROUP_ROWS", 2)
    path = tmp_path / "in.csv"
    path.write_text(HEADER + "".join(f"u{i},2024-01-01,math,i{i},1,3\n" for i in range(40)))
    calls = []
    real = _DuckDBIngest.stage_raw

    def failing(self: _DuckDBIngest, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_DuckDBIngest, "stage_raw", failing)
    before = threading.active_count()
    with DuckDBStore(":memory:") as store:
        with pytest.raises(RuntimeError, match="disk full"):
            ingest(store, [path], now=NOW, options=ReadOptions(batch_rows=2))
        assert threading.active_count() == before
        assert store.count_events() == 0
        assert store.read_quarantine().num_rows == 0
