"""ingest(): the store's fused validation path against validate_batch, and the quarantine."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohortlens.events.ingest import ingest
from cohortlens.events.readers import open_source
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
