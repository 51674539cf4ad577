"""Property: an Arrow table survives COPY into PostgreSQL and back (the CSV text forms agree)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.store.conftest import PG_URL, with_schema

from cohortlens.store import open_store
from cohortlens.store._pgcopy import copy_in, copy_out, copy_out_table

SCHEMA = pa.schema(
    [
        ("s", pa.string()),
        ("f", pa.float64()),
        ("t", pa.timestamp("us", tz="UTC")),
        ("b", pa.bool_()),
        ("i", pa.int32()),
        ("l", pa.int64()),
    ]
)

texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
floats = st.floats(allow_nan=True, allow_infinity=True)
times = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
rows = st.lists(
    st.tuples(
        st.none() | texts,
        st.none() | floats,
        st.none() | times,
        st.none() | st.booleans(),
        st.none() | st.integers(-(2**31), 2**31 - 1),
        st.none() | st.integers(-(2**63), 2**63 - 1),
    ),
    max_size=25,
)


@pytest.fixture(scope="module")
def conn(pg_prefix: str) -> Iterator[Any]:
    store = open_store(with_schema(PG_URL, f"{pg_prefix}_copy"))
    c = store._conn
    c.execute(
        "CREATE TABLE rt (k BIGINT GENERATED ALWAYS AS IDENTITY, s TEXT, f DOUBLE PRECISION, "
        "t TIMESTAMPTZ, b BOOLEAN, i INTEGER, l BIGINT)"
    )
    yield c
    store.close()


def _comparable(values: list[Any]) -> list[Any]:
    return ["NaN" if isinstance(v, float) and math.isnan(v) else v for v in values]


@settings(max_examples=80, deadline=None)
@given(data=rows)
def test_tables_round_trip_through_copy(conn: Any, data: list[tuple[Any, ...]]) -> None:
    columns = list(zip(*data, strict=True)) if data else [[] for _ in SCHEMA]
    table = pa.table(
        [pa.array(list(col), f.type) for col, f in zip(columns, SCHEMA, strict=True)],
        schema=SCHEMA,
    )
    conn.execute("TRUNCATE rt")
    with conn.transaction():
        copy_in(conn, "rt (s, f, t, b, i, l)", table)
    back = copy_out_table(conn, "SELECT s, f, t, b, i, l FROM rt ORDER BY k", (), SCHEMA)
    assert back.schema == SCHEMA
    for name in SCHEMA.names:
        assert _comparable(back[name].to_pylist()) == _comparable(table[name].to_pylist())


def test_streams_are_sliced_to_batch_rows(conn: Any) -> None:
    conn.execute("TRUNCATE rt")
    table = pa.table({"s": [f"v{i}" for i in range(1000)]})
    with conn.transaction():
        copy_in(conn, "rt (s)", table)
    batches = list(
        copy_out(
            conn, "SELECT s FROM rt ORDER BY k", (), pa.schema([("s", pa.string())]), batch_rows=64
        )
    )
    assert [b.num_rows for b in batches][:2] == [64, 64]
    assert max(b.num_rows for b in batches) == 64
    assert pa.Table.from_batches(batches)["s"].to_pylist() == table["s"].to_pylist()
