"""``read_quarantine`` on DuckDB and PostgreSQL alike: newest first, filters, the total."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from cohortlens.store import DuckDBStore, open_store
from cohortlens.store.base import quarantine_total


@pytest.fixture(params=["duckdb", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "duckdb":
        s: Any = DuckDBStore(tmp_path / "s.duckdb")
    else:
        s = open_store(request.getfixturevalue("pg_url"))
    try:
        yield s
    finally:
        s.close()


def _rows(source: str, lines: list[int], reasons: list[str]) -> pa.Table:
    return pa.table(
        {
            "source": [source] * len(lines),
            "line": lines,
            "reason": reasons,
            "detail": [f"detail {n}" for n in lines],
            "raw": [f"raw,{source},{n}" for n in lines],
        }
    )


def _ingest_rejects(store: Any, *tables: pa.Table) -> None:
    with store.ingest_session() as session:
        for t in tables:
            session.quarantine(t)
        session.resolve()
        session.commit({"totals": {}})


@pytest.fixture
def filled(store: Any) -> Any:
    """Two ingests: the first of data/a.csv, the second of data/b.csv and other/a.csv."""
    _ingest_rejects(store, _rows("data/a.csv", [3, 2], ["bad_timestamp", "missing_item_id"]))
    _ingest_rejects(
        store,
        _rows("data/b.csv", [5, 4], ["bad_timestamp", "bad_timestamp"]),
        _rows("other/a.csv", [7], ["bad_outcome"]),
    )
    return store


def _keys(table: pa.Table) -> list[tuple[str, int]]:
    return [(r["source"], r["line"]) for r in table.to_pylist()]


def test_newest_ingest_first_then_source_and_line(filled: Any) -> None:
    got = filled.read_quarantine()
    assert _keys(got) == [
        ("data/b.csv", 4),
        ("data/b.csv", 5),
        ("other/a.csv", 7),
        ("data/a.csv", 2),
        ("data/a.csv", 3),
    ]
    assert got.to_pylist()[0]["raw"] == "raw,data/b.csv,4"
    assert quarantine_total(got) == 5


def test_limit_keeps_the_total_of_every_matching_row(filled: Any) -> None:
    got = filled.read_quarantine(limit=2)
    assert _keys(got) == [("data/b.csv", 4), ("data/b.csv", 5)]
    assert quarantine_total(got) == 5
    none = filled.read_quarantine(limit=0)
    assert none.num_rows == 0
    assert quarantine_total(none) == 5


def test_reason_filter(filled: Any) -> None:
    got = filled.read_quarantine(limit=2, reason="bad_timestamp")
    assert _keys(got) == [("data/b.csv", 4), ("data/b.csv", 5)]
    assert quarantine_total(got) == 3
    assert {r["reason"] for r in filled.read_quarantine(reason="bad_timestamp").to_pylist()} == {
        "bad_timestamp"
    }


def test_source_filter_by_path_or_file_name(filled: Any) -> None:
    assert _keys(filled.read_quarantine(source="data/a.csv")) == [
        ("data/a.csv", 2),
        ("data/a.csv", 3),
    ]
    by_name = filled.read_quarantine(source="a.csv")
    assert _keys(by_name) == [("other/a.csv", 7), ("data/a.csv", 2), ("data/a.csv", 3)]
    assert quarantine_total(by_name) == 3
    # A name is matched after a "/" only: "a.csv" is not a suffix match of "data/ba.csv".
    assert quarantine_total(filled.read_quarantine(source="/a.csv")) == 0
    assert quarantine_total(filled.read_quarantine(source="ta/a.csv")) == 0


def test_both_filters_and_no_match(filled: Any) -> None:
    got = filled.read_quarantine(reason="bad_timestamp", source="a.csv")
    assert _keys(got) == [("data/a.csv", 3)]
    assert quarantine_total(got) == 1
    empty = filled.read_quarantine(reason="no_such_reason")
    assert empty.num_rows == 0
    assert quarantine_total(empty) == 0
    assert empty.schema.names == ["source", "line", "reason", "detail", "raw"]
