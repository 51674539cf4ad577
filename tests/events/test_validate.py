"""validate_batch: exact canonical values, reject reasons, and the no-row-lost property."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cohortlens.events.schema import EVENT_SCHEMA, QUARANTINE_SCHEMA
from cohortlens.events.source import RawBatch, rejects_table
from cohortlens.events.validate import validate_batch

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _batch(rows: list[dict[str, object]], **types: pa.DataType) -> RawBatch:
    cols = {k: [r.get(k) for r in rows] for k in rows[0]}
    arrays = {k: pa.array(v, types.get(k, pa.string())) for k, v in cols.items()}
    arrays["_line"] = pa.array(range(2, 2 + len(rows)), pa.int64())
    return RawBatch("in.csv", pa.table(arrays))


def test_accepts_and_normalises_a_valid_row() -> None:
    row = {
        "learner_id": " u1 ",
        "ts": "2024-03-01T12:00:00+02:00",
        "domain": "math",
        "item_id": "q7",
        "outcome": "0.25",
        "duration_s": "30.5",
    }
    v = validate_batch(_batch([row]), now=NOW)
    assert v.rejected.num_rows == 0
    assert v.accepted.schema == EVENT_SCHEMA
    got = v.accepted.to_pylist()[0]
    assert got["learner_id"] == "u1"
    assert got["ts"] == datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    assert (got["domain"], got["item_id"], got["outcome"], got["duration_s"]) == (
        "math",
        "q7",
        0.25,
        30.5,
    )
    # The derived id is the MD5 of the canonical values joined by U+001F (docs/DATA.md).
    micros = int(datetime(2024, 3, 1, 10, tzinfo=UTC).timestamp() * 1_000_000)
    canon = "\x1f".join(["u1", str(micros), "math", "q7", str(250_000_000), str(30_500_000)])
    assert got["event_id"] == hashlib.md5(canon.encode()).hexdigest()


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2024-03-01T10:00:00Z", datetime(2024, 3, 1, 10, tzinfo=UTC)),
        ("2024-03-01 10:00:00", datetime(2024, 3, 1, 10, tzinfo=UTC)),  # naive = UTC
        ("2024-03-01T15:30:00+05:30", datetime(2024, 3, 1, 10, tzinfo=UTC)),
        ("2024-03-01", datetime(2024, 3, 1, tzinfo=UTC)),
        ("1709287200", datetime(2024, 3, 1, 10, tzinfo=UTC)),  # epoch seconds
        ("1709287200000", datetime(2024, 3, 1, 10, tzinfo=UTC)),  # epoch milliseconds
        ("1709287200.5", datetime(2024, 3, 1, 10, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_timestamp_forms(ts: str, expected: datetime) -> None:
    v = validate_batch(_batch([{"learner_id": "a", "ts": ts, "item_id": "i"}]), now=NOW)
    assert v.accepted["ts"].to_pylist() == [expected]


def test_numeric_epoch_columns_and_declared_units() -> None:
    b = _batch([{"learner_id": "a", "ts": 1709287200000, "item_id": "i"}], ts=pa.int64())
    assert validate_batch(b, now=NOW).accepted["ts"][0].as_py() == datetime(
        2024, 3, 1, 10, tzinfo=UTC
    )
    # Declared seconds: the same number is now far in the future and rejected.
    v = validate_batch(b, now=NOW, ts_unit="s")
    assert v.rejected["reason"].to_pylist() == ["timestamp_in_future"]
    # Beyond the representable range it is unparseable rather than an overflow.
    huge = _batch([{"learner_id": "a", "ts": "1e300", "item_id": "i"}])
    assert validate_batch(huge, now=NOW).rejected["reason"].to_pylist() == ["bad_timestamp"]


@pytest.mark.parametrize(
    ("row", "reason", "detail"),
    [
        (
            {"learner_id": "", "ts": "2024-01-01", "item_id": "i"},
            "missing_learner_id",
            "learner_id is empty",
        ),
        (
            {"learner_id": "a", "ts": "2024-01-01", "item_id": " "},
            "missing_item_id",
            "item_id is empty",
        ),
        ({"learner_id": "a", "ts": "", "item_id": "i"}, "missing_timestamp", "ts is empty"),
        (
            {"learner_id": "a", "ts": "yesterday", "item_id": "i"},
            "bad_timestamp",
            "ts=yesterday is not",
        ),
        (
            {"learner_id": "a", "ts": "1999-12-31T23:59:59Z", "item_id": "i"},
            "timestamp_before_2000",
            "before 2000",
        ),
        (
            {"learner_id": "a", "ts": "2026-01-02T00:00:01Z", "item_id": "i"},
            "timestamp_in_future",
            "more than 1 day",
        ),
        (
            {"learner_id": "a", "ts": "2024-01-01", "item_id": "i", "outcome": "NaN"},
            "bad_outcome",
            "outcome=NaN",
        ),
        (
            {"learner_id": "a", "ts": "2024-01-01", "item_id": "i", "outcome": "good"},
            "bad_outcome",
            "outcome=good",
        ),
        (
            {"learner_id": "a", "ts": "2024-01-01", "item_id": "i", "outcome": "1.01"},
            "outcome_out_of_range",
            "outside [0, 1]",
        ),
        (
            {"learner_id": "a", "ts": "2024-01-01", "item_id": "i", "outcome": "-0.5"},
            "outcome_out_of_range",
            "outcome=-0.5",
        ),
        (
            {"learner_id": "a", "ts": "2024-01-01", "item_id": "i", "duration_s": "-3"},
            "bad_duration",
            "duration_s=-3",
        ),
        (
            {"learner_id": "a", "ts": "2024-01-01", "item_id": "i", "duration_s": "inf"},
            "bad_duration",
            "duration_s=inf",
        ),
        (
            {"learner_id": "a", "ts": "2024-01-01", "item_id": "i", "duration_s": "1e9"},
            "bad_duration",
            "in [0, 604800]",
        ),
    ],
)
def test_reject_reasons(row: dict[str, object], reason: str, detail: str) -> None:
    full = {
        "learner_id": None,
        "ts": None,
        "item_id": None,
        "outcome": None,
        "duration_s": None,
    } | row
    v = validate_batch(_batch([full]), now=NOW)
    assert v.accepted.num_rows == 0
    got = v.rejected.to_pylist()[0]
    assert got["reason"] == reason
    assert detail in got["detail"]
    assert got["line"] == 2
    assert got["source"] == "in.csv"
    assert got["raw"] is not None
    assert '"learner_id"' in got["raw"]


def test_day_of_tolerance_in_the_future_is_accepted() -> None:
    v = validate_batch(
        _batch([{"learner_id": "a", "ts": "2026-01-01T23:00:00Z", "item_id": "i"}]), now=NOW
    )
    assert v.accepted.num_rows == 1


def test_blank_outcome_is_ungraded_and_domain_defaults() -> None:
    v = validate_batch(
        _batch(
            [{"learner_id": "a", "ts": "2024-01-01", "item_id": "i", "outcome": "", "domain": ""}]
        ),
        now=NOW,
    )
    got = v.accepted.to_pylist()[0]
    assert got["outcome"] is None
    assert got["domain"] == "unknown"


def test_given_event_id_is_kept_and_reader_rejects_pass_through() -> None:
    b = _batch([{"learner_id": "a", "ts": "2024-01-01", "item_id": "i", "event_id": "E-1"}])
    extra = rejects_table("in.csv", [9], ["wrong_field_count"], ["expected 3 fields, got 1"], ["x"])
    v = validate_batch(RawBatch(b.source, b.table, extra), now=NOW)
    assert v.accepted["event_id"].to_pylist() == ["E-1"]
    assert v.rejected.schema == QUARANTINE_SCHEMA
    assert v.rejected.to_pylist() == [
        {
            "source": "in.csv",
            "line": 9,
            "reason": "wrong_field_count",
            "detail": "expected 3 fields, got 1",
            "raw": "x",
        }
    ]


_values = {
    "learner_id": st.sampled_from(["a", "b", "", " ", None, "ü-7"]),
    "ts": st.sampled_from(
        [
            "2024-01-01T00:00:00Z",
            "1709287200",
            "1709287200000",
            "nope",
            "",
            None,
            "1990-01-01",
            "2100-01-01",
            "2024-02-30",
        ]
    ),
    "item_id": st.sampled_from(["i1", "i2", "", None]),
    "outcome": st.one_of(
        st.none(),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.sampled_from(["", "x", "0", "1"]),
    ),
    "duration_s": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True).map(repr)),
}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.fixed_dictionaries(_values), min_size=1, max_size=40))
def test_every_row_is_accepted_or_rejected_exactly_once(rows: list[dict[str, object]]) -> None:
    v = validate_batch(_batch(rows), now=NOW)
    assert v.accepted.num_rows + v.rejected.num_rows == len(rows)
    assert sorted(v.rejected["line"].to_pylist()) == sorted(set(v.rejected["line"].to_pylist()))
    for r in v.accepted.to_pylist():
        assert r["learner_id"]
        assert r["item_id"]
        assert r["outcome"] is None or 0.0 <= r["outcome"] <= 1.0
        assert r["duration_s"] is None or (math.isfinite(r["duration_s"]) and r["duration_s"] >= 0)
        assert datetime(2000, 1, 1, tzinfo=UTC) <= r["ts"]


_PADDED = st.sampled_from(["", " ", "  "])


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.fixed_dictionaries(_values), min_size=1, max_size=30),
    st.lists(st.tuples(_PADDED, _PADDED), min_size=5, max_size=5),
)
def test_spaces_around_values_change_nothing_but_the_raw_text(
    rows: list[dict[str, object]], pads: list[tuple[str, str]]
) -> None:
    """Text is trimmed before use: numbers and timestamps parse, and ids store, alike padded."""
    padded = [
        {
            c: v if v is None else f"{pads[i][0]}{v}{pads[i][1]}"
            for i, (c, v) in enumerate(row.items())
        }
        for row in rows
    ]
    plain, spaced = (validate_batch(_batch(r), now=NOW) for r in (rows, padded))
    assert spaced.accepted.equals(plain.accepted)
    keep = ["line", "reason", "detail"]
    assert spaced.rejected.select(keep).equals(plain.rejected.select(keep))
