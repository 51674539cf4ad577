"""``--ts-format`` in validation, and the ``--max-reject-rate`` gate with its likely fixes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from tests._pg import PG_URL, pg_admin, with_schema

from cohortlens.errors import InputError
from cohortlens.events import ingest
from cohortlens.events.diagnose import RejectRateError, guess_ts_formats, likely_fix
from cohortlens.events.ingest import checked_options
from cohortlens.events.session import RejectExample
from cohortlens.events.source import RawBatch, ReadOptions
from cohortlens.events.validate import bad_timestamp_value, check_ts_format, validate_batch
from cohortlens.store import DuckDBStore, open_store

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _batch(*stamps: str) -> RawBatch:
    n = len(stamps)
    return RawBatch(
        "x",
        pa.table(
            {
                "learner_id": ["a"] * n,
                "ts": list(stamps),
                "item_id": ["i"] * n,
                "_line": pa.array(range(2, n + 2), pa.int64()),
            }
        ),
    )


# -- --ts-format ------------------------------------------------------------------------------


def test_ts_format_parses_text_with_the_pattern_alone() -> None:
    checked = validate_batch(
        _batch(
            "03/01/2024 10:00", " 13/01/2024 23:59 ", "2024-01-01T00:00:00Z", "31/02/2024 10:00"
        ),
        ts_format="%d/%m/%Y %H:%M",
        now=NOW,
    )
    assert checked.accepted["ts"].to_pylist() == [
        datetime(2024, 1, 3, 10, 0, tzinfo=UTC),
        datetime(2024, 1, 13, 23, 59, tzinfo=UTC),
    ]
    assert checked.rejected["line"].to_pylist() == [4, 5]
    assert checked.rejected["detail"].to_pylist() == [
        "ts=2024-01-01T00:00:00Z does not match --ts-format '%d/%m/%Y %H:%M'",
        "ts=31/02/2024 10:00 does not match --ts-format '%d/%m/%Y %H:%M'",
    ]


def test_ts_format_reads_offsets_with_percent_z() -> None:
    checked = validate_batch(_batch("2024-03-01 10:00 +0200"), ts_format="%Y-%m-%d %H:%M %z")
    (ts,) = checked.accepted["ts"].to_pylist()
    assert ts == datetime(2024, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))


def test_typed_timestamps_ignore_the_pattern() -> None:
    batch = RawBatch(
        "x",
        pa.table(
            {
                "learner_id": ["a"],
                "ts": pa.array([datetime(2024, 1, 1)], pa.timestamp("us")),
                "item_id": ["i"],
            }
        ),
    )
    checked = validate_batch(batch, ts_format="%d/%m/%Y", now=NOW)
    assert checked.accepted["ts"].to_pylist() == [datetime(2024, 1, 1, tzinfo=UTC)]


def test_bad_patterns_and_conflicting_options_are_input_errors() -> None:
    assert check_ts_format("%d.%m.%Y") == "%d.%m.%Y"
    with pytest.raises(InputError, match="%Q"):
        check_ts_format("%d %Q")
    with pytest.raises(InputError, match="needs % codes"):
        check_ts_format("dd/mm/yyyy")
    with pytest.raises(InputError, match="exclude each other"):
        checked_options(ReadOptions(ts_format="%d/%m/%Y", ts_unit="ms"))


def test_the_value_of_a_bad_timestamp_detail() -> None:
    assert bad_timestamp_value("ts=03/01/2024 is not an ISO 8601 date-time or ...") == "03/01/2024"
    assert bad_timestamp_value("ts=x is not y does not match --ts-format '%d'") == "x is not y"
    assert bad_timestamp_value("learner_id is empty") is None
    assert bad_timestamp_value(None) is None


# -- guessing the pattern ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            ["03/01/2024 10:00", "04/02/2024 11:30"],
            [("%d/%m/%Y %H:%M", "day first"), ("%m/%d/%Y %H:%M", "month first")],
        ),
        (["13/01/2024 10:00", "04/02/2024 11:30"], [("%d/%m/%Y %H:%M", "")]),
        (["01/13/2024 10:00:01"], [("%m/%d/%Y %H:%M:%S", "")]),
        (["1 Mar 2024 10:00:00"], [("%d %b %Y %H:%M:%S", "")]),
        (["2024-03-01 10:00:00 +0200"], [("%Y-%m-%d %H:%M:%S %z", "")]),
        (["31.12.23"], [("%d.%m.%y", "")]),  # not the year 23 under %Y
        (
            ["3/1/2024 9:05 PM"],
            [("%d/%m/%Y %I:%M %p", "day first"), ("%m/%d/%Y %I:%M %p", "month first")],
        ),
        (["13/01/2024 10:00", "garbage"], [("%d/%m/%Y %H:%M", "reads 1 of 2 distinct examples")]),
        (["garbage", "also"], []),
    ],
)
def test_guess_ts_formats(values: list[str], expected: list[tuple[str, str]]) -> None:
    assert guess_ts_formats(values) == expected


def _examples(reason: str, *details: str) -> list[RejectExample]:
    return [RejectExample(reason, i + 2, d, "raw") for i, d in enumerate(details)]


def test_likely_fixes() -> None:
    options = ReadOptions()
    ts = _examples(
        "bad_timestamp", "ts=13/01/2024 10:00 is not an ISO 8601 date-time or an epoch number"
    )
    assert likely_fix("bad_timestamp", ts, options) == "--ts-format '%d/%m/%Y %H:%M'"
    given = ReadOptions(ts_format="%m/%d/%Y %H:%M")
    mismatch = _examples("bad_timestamp", "ts=13/01/2024 10:00 does not match --ts-format '...'")
    assert likely_fix("bad_timestamp", mismatch, given) == (
        "they do not match --ts-format '%m/%d/%Y %H:%M'; --ts-format '%d/%m/%Y %H:%M'"
    )
    numbers = _examples("bad_timestamp", "ts=1e30 is not an ISO 8601 date-time or ...")
    assert "check --ts-unit" in str(likely_fix("bad_timestamp", numbers, options))
    utf8 = _examples("malformed_record", "not valid UTF-8 text: ... (e.g. --encoding cp1252)")
    assert likely_fix("malformed_record", utf8, options) == (
        "the file is not UTF-8: pass its encoding (--encoding cp1252, for example)"
    )
    assert "--map ts=COLUMN" in str(likely_fix("missing_timestamp", [], options))
    assert "--delimiter" in str(likely_fix("wrong_field_count", [], options))
    assert (
        likely_fix("malformed_record", _examples("malformed_record", "voiding statement"), options)
        is None
    )


# -- the gate through ingest -------------------------------------------------------------------


@pytest.fixture(params=["duckdb", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """An empty store of each backend (PostgreSQL: a schema of its own, dropped afterwards)."""
    if request.param == "duckdb":
        with DuckDBStore(tmp_path / "s.duckdb") as duck:
            yield duck
        return
    admin = pg_admin()  # skips the test, saying why, when the server is unreachable
    schema = f"cl_reject_rate_{uuid.uuid4().hex[:10]}"
    pg = open_store(with_schema(PG_URL, schema))
    try:
        yield pg
    finally:
        pg.close()
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


def _csv(path: Path, good: int, bad: int) -> Path:
    lines = [f"{path.stem}{i},2024-01-0{1 + i % 9}T10:00:00Z,i{i}" for i in range(good)]
    lines += [f"B{i},{1 + i % 12:02d}/01/2024 10:{i % 60:02d},i{i}" for i in range(bad)]
    path.write_text("learner_id,ts,item_id\n" + "\n".join(lines) + "\n")
    return path


def test_past_the_rate_nothing_is_written_and_the_error_explains(
    store: Any, tmp_path: Path
) -> None:
    good = _csv(tmp_path / "good.csv", 10, 0)
    ingest(store, [good], now=NOW)
    before = (store.count_events(), store.ingest_log().num_rows, store.read_quarantine().num_rows)
    other = _csv(tmp_path / "other.csv", 5, 0)
    bad = _csv(tmp_path / "bad.csv", 4, 6)
    with pytest.raises(RejectRateError) as info:
        ingest(store, [other, bad], now=NOW, max_reject_rate=0.5)
    err = info.value
    assert (err.source, err.rows_read, err.rejected, err.limit) == (str(bad), 10, 6, 0.5)
    (reason,) = err.reasons
    assert (reason.reason, reason.count) == ("bad_timestamp", 6)
    assert reason.example is not None
    assert reason.example.line == 6
    assert reason.example.raw == '{"learner_id":"B0","ts":"01/01/2024 10:00","item_id":"i0"}'
    assert reason.fix == (
        "--ts-format '%d/%m/%Y %H:%M' (day first) or --ts-format '%m/%d/%Y %H:%M' (month "
        "first): every example fits both, so check which one your source writes"
    )
    assert str(err).startswith(
        f"{bad}: 6 of 10 rows rejected (60.0%), more than --max-reject-rate 0.5 allows"
    )
    after = (store.count_events(), store.ingest_log().num_rows, store.read_quarantine().num_rows)
    assert after == before  # not even other.csv, read before bad.csv
    # At the rate exactly, or with no limit, the rows are quarantined and the rest kept.
    report = ingest(store, [other, bad], now=NOW, max_reject_rate=0.6)
    assert (report.accepted, report.rejected) == (9, 6)


def test_the_limit_must_be_a_fraction(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="expected a fraction"):
        ingest(
            DuckDBStore(tmp_path / "s.duckdb"), [_csv(tmp_path / "g.csv", 1, 0)], max_reject_rate=2
        )
