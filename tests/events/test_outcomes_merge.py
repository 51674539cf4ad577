"""Outcomes files and dataset outcomes merge column by column through ``ingest``."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.conftest import REPO

from cohortlens.errors import InputError, MissingColumnsError, UnreadableSourceError
from cohortlens.events import ingest
from cohortlens.events.outcomes import read_outcomes
from cohortlens.events.schema import outcome_schema
from cohortlens.store import DuckDBStore

DATA = REPO / "tests" / "data"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
FULL = "learner_id,completed,churned,revenue,as_of\na,true,false,10.5,2024-02-01T00:00:00Z\n"


def _stored(store: DuckDBStore) -> dict[str, dict[str, Any]]:
    return {r.pop("learner_id"): r for r in store.read_outcomes().to_pylist()}


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_a_file_returns_only_the_outcome_columns_it_has(tmp_path: Path) -> None:
    path = _write(tmp_path / "o.csv", "learner_id,revenue,note\na,1.5,x\nb,,y\n")
    table = read_outcomes(path)
    assert table.schema == outcome_schema(["revenue"])
    assert table.to_pylist() == [
        {"learner_id": "a", "revenue": 1.5},
        {"learner_id": "b", "revenue": None},  # an empty value is an explicit null
    ]


def test_ids_stay_text_and_other_delimiters_and_encodings_are_read(tmp_path: Path) -> None:
    text = "learner_id;completed;as_of\n007;yes;2024-03-01\n"
    for name, encoding in (("semi.csv", "utf-8"), ("u16.csv", "utf-16")):
        table = read_outcomes(_write(tmp_path / name, text, encoding))
        assert table.to_pylist() == [
            {"learner_id": "007", "completed": True, "as_of": datetime(2024, 3, 1, tzinfo=UTC)}
        ]
    cp = _write(tmp_path / "cp.csv", "learner_id,churned\ncafé,0\n", "cp1252")
    assert read_outcomes(cp, "cp1252")["learner_id"].to_pylist() == ["café"]
    offset = len(b"learner_id,churned\ncaf")
    with pytest.raises(UnreadableSourceError, match=rf"0xE9 at byte offset {offset} .*cp1252"):
        read_outcomes(cp)


def test_a_file_without_outcome_columns_names_what_it_found_and_expected(tmp_path: Path) -> None:
    path = _write(tmp_path / "o.csv", "learner_id,foo\na,1\n")
    with pytest.raises(InputError) as info:
        read_outcomes(path)
    message = str(info.value)
    assert str(path) in message
    assert "found learner_id, foo" in message
    assert "completed, churned, revenue, as_of" in message
    with pytest.raises(MissingColumnsError, match="learner_id"):
        read_outcomes(_write(tmp_path / "p.csv", "user,completed\na,1\n"))
    with pytest.raises(InputError, match="completed appear more than once"):
        read_outcomes(_write(tmp_path / "q.csv", "learner_id,completed,completed\na,1,0\n"))


def test_parquet_outcomes_keep_their_types_and_only_their_columns(tmp_path: Path) -> None:
    path = tmp_path / "o.parquet"
    pq.write_table(pa.table({"learner_id": [1, 2], "churned": [True, None]}), path)
    assert read_outcomes(path).to_pylist() == [
        {"learner_id": "1", "churned": True},
        {"learner_id": "2", "churned": None},
    ]


def test_ingesting_a_partial_file_keeps_the_other_columns(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "s.duckdb")
    full = _write(tmp_path / "full.csv", FULL + "b,false,true,,\n")
    first = ingest(store, [], outcomes=[full], now=NOW)
    assert (first.outcomes_inserted, first.outcomes_updated, first.outcomes_unchanged) == (2, 0, 0)
    part = _write(tmp_path / "part.csv", "learner_id,completed\na,false\nb,false\nc,true\n")
    report = ingest(store, [], outcomes=[part], now=NOW)
    (src,) = report.to_dict()["sources"]  # type: ignore[misc]
    assert (src["kind"], src["outcomes"]) == ("outcomes", 3)
    assert (src["outcomes_inserted"], src["outcomes_updated"], src["outcomes_unchanged"]) == (
        1,
        1,
        1,
    )
    got = _stored(store)
    assert got["a"] == {
        "completed": False,
        "churned": False,
        "revenue": 10.5,
        "as_of": datetime(2024, 2, 1, tzinfo=UTC),
    }
    assert got["b"]["churned"] is True
    assert got["c"] == {"completed": True, "churned": None, "revenue": None, "as_of": None}
    assert store.count_events() == 0


def test_a_bad_outcomes_file_writes_nothing_even_beside_good_events(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "s.duckdb")
    events = _write(tmp_path / "e.csv", "learner_id,ts,item_id\nL1,2024-01-01T10:00:00Z,i\n")
    bad = _write(tmp_path / "o.csv", "learner_id,score\na,1\n")
    with pytest.raises(InputError, match="no outcome column"):
        ingest(store, [events], outcomes=[bad], now=NOW)
    assert store.count_events() == 0
    assert store.ingest_log().num_rows == 0


def test_nothing_to_ingest_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothing to ingest"):
        ingest(DuckDBStore(tmp_path / "s.duckdb"), [], now=NOW)


def test_dataset_outcomes_go_through_the_same_merge(tmp_path: Path) -> None:
    """Re-ingesting OULAD (no revenue) keeps a revenue stored from a file."""
    store = DuckDBStore(tmp_path / "s.duckdb")
    oulad = tmp_path / "oulad"
    shutil.copytree(DATA / "oulad", oulad)
    first = ingest(store, [oulad], now=NOW)
    (src,) = first.sources
    assert (src.kind, src.outcomes, src.outcomes_inserted) == ("events", 12, 12)
    before = _stored(store)["11391"]
    assert before["completed"] is True
    assert before["revenue"] is None
    revenue = _write(tmp_path / "rev.csv", "learner_id,revenue\n11391,99.5\n")
    ingest(store, [], outcomes=[revenue], now=NOW)
    again = ingest(store, [oulad], now=NOW)
    (src,) = again.sources
    assert (src.outcomes_inserted, src.outcomes_updated, src.outcomes_unchanged) == (0, 0, 12)
    assert _stored(store)["11391"] == before | {"revenue": 99.5}
