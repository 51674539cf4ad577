"""Tests of the xAPI 1.0.3 statements reader (fixtures in tests/data/xapi)."""

from __future__ import annotations

import gzip
import json
import math
import re
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cohortlens.errors import InputError, UnreadableSourceError
from cohortlens.events import validate
from cohortlens.events.readers import open_source as open_any
from cohortlens.events.readers.xapi import (
    DAYS_PER_MONTH,
    DAYS_PER_YEAR,
    open_source,
    parse_domain_path,
    parse_durations,
)
from cohortlens.events.schema import CANONICAL_COLUMNS, DEFAULT_DOMAIN, QUARANTINE_SCHEMA
from cohortlens.events.source import RawBatch, ReadOptions

DATA = Path(__file__).resolve().parents[1] / "data" / "xapi"
ANSWERED = "http://adlnet.gov/expapi/verbs/answered"
VOIDED = "http://adlnet.gov/expapi/verbs/voided"
DAY_S = 86_400.0

# event_id -> (learner_id, ts, domain, item_id, outcome, duration_s), default domain path.
EXPECTED: dict[str, tuple[Any, ...]] = {
    "6690e6c9-3ef0-4ed3-8b37-7f3964730bee": (
        "mbox:mailto:Ann.Lee@example.org", "2024-03-01T10:00:00Z",
        "http://example.com/course/algebra", "http://example.com/algebra/q1", 0.85, 5405.5,
    ),
    "00000000-0000-4000-8000-000000000002": (
        "sha1:ebd31e95054c018b10727ccffd2ef2ec3a016ee9", "2024-03-01T11:00:00.250Z",
        None, "http://example.com/algebra/q2", 0.7, DAY_S + 2 * 3600,
    ),
    "00000000-0000-4000-8000-000000000003": (
        "openid:http://openid.example.org/12345", "2024-03-02T08:30:00Z",
        "http://example.com/course/geometry", "http://example.com/geometry/q1", 1.0, 0.0,
    ),
    "00000000-0000-4000-8000-000000000004": (
        "account:http://lms.example.com|learner-42", "2024-03-02T10:30:00+02:00",
        None, "http://example.com/geometry/q2", 0.0, 7 * DAY_S,
    ),
    "00000000-0000-4000-8000-000000000005": (
        "mbox:mailto:team@example.org", "2024-03-03T00:00:00Z",
        None, "http://example.com/video/1", None, None,
    ),
    "00000000-0000-4000-8000-000000000006": (
        None, "2024-03-03T01:00:00Z", None, None, -0.5, None,
    ),
    "00000000-0000-4000-8000-000000000007": (
        "mbox:mailto:carl@example.org", None, None, "00000000-0000-4000-8000-000000000002",
        None, None,
    ),
    "00000000-0000-4000-8000-000000000016": (
        "mbox:mailto:x@example.org", "2024-03-07T00:00:00",
        "http://example.com/course/algebra", "http://example.com/algebra/q4", 0.75, DAY_S / 2,
    ),
}  # fmt: skip
#: Physical line of each accepted statement in statements.jsonl.
JSONL_LINES = [1, 2, 4, 5, 6, 7, 8, 17]
#: (line, reason, detail) of the reader's rejects in statements.jsonl.
JSONL_REJECTS = [
    (9, "malformed_record", "voided by statement 00000000-0000-4000-8000-000000000009"),
    (10, "malformed_record", "voiding statement"),
    (11, "malformed_json", "Expecting value at column 52"),
    (12, "malformed_record", "statement is a JSON string, not an object"),
    (13, "malformed_record", "statement lacks verb"),
    (14, "malformed_record", "actor has 2 inverse functional identifiers (mbox, openid); "
     "xAPI allows exactly one"),
    (15, "bad_duration", 'result.duration "PT1.5H30M" is not an ISO 8601 duration '
     "(PnYnMnDTnHnMnS or PnW, fraction on the last part)"),
    (16, "bad_outcome", "result.score raw 5 cannot be normalised: max 5 must exceed min 5"),
]  # fmt: skip
#: statements.json is statements.jsonl without its blank line 3 and malformed line 11.
ARRAY_LINES = [1, 2, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17]
ARRAY_INDEX = {line: k for k, line in enumerate(ARRAY_LINES, start=1)}


def _read(path: Path, options: ReadOptions | None = None) -> tuple[pa.Table, pa.Table, list[int]]:
    """All batches of a file: (table, rejects, rows read per batch)."""
    batches = list(open_source(path, options or ReadOptions()).batches())
    assert all(b.rejects.schema == QUARANTINE_SCHEMA for b in batches)
    if not batches:
        return pa.table({"_line": pa.array([], pa.int64())}), QUARANTINE_SCHEMA.empty_table(), []
    table = pa.concat_tables([b.table for b in batches])
    rejects = pa.concat_tables([b.rejects for b in batches])
    return table, rejects, [b.n_rows for b in batches]


def _rows(table: pa.Table) -> dict[str, tuple[Any, ...]]:
    cols = ["learner_id", "ts", "domain", "item_id", "outcome", "duration_s"]
    return {r["event_id"]: tuple(r[c] for c in cols) for r in table.to_pylist()}


def _statement(**fields: Any) -> dict[str, Any]:
    """A minimal valid statement, updated with ``fields``."""
    stmt: dict[str, Any] = {
        "id": "00000000-0000-4000-8000-00000000abcd",
        "actor": {"mbox": "mailto:s@example.org"},
        "verb": {"id": ANSWERED},
        "object": {"id": "http://example.com/q"},
        "timestamp": "2024-05-01T00:00:00Z",
    }
    stmt.update(fields)
    return stmt


def _read_one(tmp_path: Path, stmt: Any, options: ReadOptions | None = None) -> RawBatch:
    """Read a one-statement JSON Lines file."""
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(stmt) + "\n", encoding="utf-8")
    (batch,) = open_source(path, options or ReadOptions()).batches()
    assert batch.n_rows == 1
    return batch


_One = Callable[[Any], RawBatch]


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> _One:
    """Read every single-statement case of this module in one file, then look each one up.

    One read instead of one per case keeps the module fast (each batch is one DuckDB query);
    the statements are independent rows, so reading them together changes nothing.
    """
    statements = (
        [_statement(actor=actor) for actor, _ in ACTOR_CASES + BAD_ACTOR_CASES]
        + [_statement(result=result) for result, *_ in SCORE_CASES + BAD_RESULT_CASES]
        + [_statement(**fields) for fields, *_ in WRONG_FIELD_CASES]
    )
    texts = [json.dumps(stmt) for stmt in statements]
    path = tmp_path_factory.mktemp("singles") / "singles.jsonl"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    (batch,) = open_source(path, ReadOptions()).batches()
    assert batch.n_rows == len(texts)
    line_of = {text: k for k, text in enumerate(texts, start=1)}

    def lookup(stmt: Any) -> RawBatch:
        k = line_of[json.dumps(stmt)]
        table = batch.table.filter(pc.equal(batch.table["_line"], k))
        rejects = batch.rejects.filter(pc.equal(batch.rejects["line"], k))
        assert table.num_rows + rejects.num_rows == 1
        return RawBatch(batch.source, table, rejects)

    return lookup


# ---------------------------------------------------------------------------- fixture files


def test_jsonl_fixture_exact_rows_and_rejects() -> None:
    table, rejects, _ = _read(DATA / "statements.jsonl")
    assert table.column_names == [
        "learner_id", "ts", "domain", "item_id", "outcome", "duration_s", "event_id",
        "_line", "_raw",
    ]  # fmt: skip
    assert set(CANONICAL_COLUMNS) <= set(table.column_names)
    assert _rows(table) == EXPECTED
    assert table["_line"].to_pylist() == JSONL_LINES
    got = [(r["line"], r["reason"], r["detail"]) for r in rejects.to_pylist()]
    assert got == JSONL_REJECTS
    assert set(rejects["source"].to_pylist()) == {str(DATA / "statements.jsonl")}


def test_jsonl_raw_is_the_original_line() -> None:
    lines = (DATA / "statements.jsonl").read_text(encoding="utf-8").splitlines()
    table, rejects, _ = _read(DATA / "statements.jsonl")
    for line, raw in zip(table["_line"].to_pylist(), table["_raw"].to_pylist(), strict=True):
        assert raw == lines[line - 1]
    for r in rejects.to_pylist():
        assert r["raw"] == lines[r["line"] - 1]


def test_array_fixture_matches_jsonl() -> None:
    table, rejects, _ = _read(DATA / "statements.json")
    assert _rows(table) == EXPECTED
    assert table["_line"].to_pylist() == [ARRAY_INDEX[n] for n in JSONL_LINES]
    expected_rejects = [(ARRAY_INDEX[n], r, d) for n, r, d in JSONL_REJECTS if n != 11]
    assert [(r["line"], r["reason"], r["detail"]) for r in rejects.to_pylist()] == expected_rejects
    statements = json.loads((DATA / "statements.json").read_text(encoding="utf-8"))
    for line, raw in zip(table["_line"].to_pylist(), table["_raw"].to_pylist(), strict=True):
        assert raw.startswith("{")
        assert json.loads(raw) == statements[line - 1]


@pytest.mark.parametrize("name", ["statements.jsonl.gz", "statements.json.gz", "no_suffix.dat"])
def test_gzip_is_detected_by_magic(tmp_path: Path, name: str) -> None:
    source = DATA / ("statements.json" if ".json." in name else "statements.jsonl")
    path = tmp_path / name
    path.write_bytes(gzip.compress(source.read_bytes()))
    table, rejects, _ = _read(path)
    plain_table, plain_rejects, _ = _read(source)
    assert table.equals(plain_table)
    assert rejects.drop_columns(["source"]).equals(plain_rejects.drop_columns(["source"]))


def test_batches_are_bounded() -> None:
    _, _, sizes = _read(DATA / "statements.jsonl", ReadOptions(batch_rows=3))
    assert sizes == [3, 3, 3, 3, 3, 1]  # 16 non-blank lines
    _, _, sizes = _read(DATA / "statements.json", ReadOptions(batch_rows=4))
    assert sizes == [4, 4, 4, 3]


def test_voiding_statement_later_in_file_voids_earlier_one_across_batches() -> None:
    table, rejects, sizes = _read(DATA / "statements.jsonl", ReadOptions(batch_rows=2))
    assert sizes == [2] * 8  # lines 9 and 10 fall in different batches
    assert "00000000-0000-4000-8000-000000000008" not in table["event_id"].to_pylist()
    assert (9, "voided by statement 00000000-0000-4000-8000-000000000009") in [
        (r["line"], r["detail"]) for r in rejects.to_pylist()
    ]


def test_statement_result_document() -> None:
    table, rejects, _ = _read(DATA / "statement_result.json")
    assert rejects.num_rows == 0
    ids = ["6690e6c9-3ef0-4ed3-8b37-7f3964730bee", "00000000-0000-4000-8000-000000000003"]
    assert _rows(table) == {k: EXPECTED[k] for k in ids}
    assert table["_line"].to_pylist() == [1, 2]


def test_pretty_printed_single_statement() -> None:
    table, rejects, sizes = _read(DATA / "single_statement.json")
    assert sizes == [1]
    assert rejects.num_rows == 0
    key = "00000000-0000-4000-8000-000000000004"
    assert _rows(table) == {key: EXPECTED[key]}


def test_registry_detects_json_as_xapi() -> None:
    batches = list(open_any(DATA / "statements.json").batches())
    assert sum(b.table.num_rows for b in batches) == len(EXPECTED)


# ---------------------------------------------------------------------------- unreadable files


def test_not_json_is_unreadable() -> None:
    with pytest.raises(UnreadableSourceError, match="first non-blank character is 'l'"):
        open_source(DATA / "not_json.json", ReadOptions())


def test_broken_array_fails_at_open() -> None:
    with pytest.raises(UnreadableSourceError, match="Expecting ',' delimiter at line 3 column 3"):
        open_source(DATA / "broken_array.json", ReadOptions())


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[{"a": 1}] {"b": 2}', "invalid JSON array: Extra data at column 12"),
        ('[{"a": 1},', "invalid JSON array: Expecting value at column 11"),
        ("[1, 2", "invalid JSON array: Expecting ',' delimiter at column 6"),
        ("[\n1,\n2\n]\n]", "Extra data at line 5 column 1"),
        ('[{"a": "\\x"}]', "Invalid \\\\escape"),
    ],
)
def test_bad_arrays_are_unreadable(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UnreadableSourceError, match=match):
        open_source(path, ReadOptions())


def test_truncated_gzip_fails_at_open(tmp_path: Path) -> None:
    data = gzip.compress((DATA / "statements.jsonl").read_bytes())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableSourceError):
        open_source(path, ReadOptions())


def test_non_utf8_array_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes('[{"actor": "é"}]'.encode("latin-1"))
    with pytest.raises(UnreadableSourceError, match="not UTF-8"):
        open_source(path, ReadOptions())


@pytest.mark.parametrize("content", [b"", b"  \n\n", b"[]", b" [ \n ] \n", b"\xef\xbb\xbf[]"])
def test_empty_sources_have_no_rows(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.json"
    path.write_bytes(content)
    assert list(open_source(path, ReadOptions()).batches()) == []


# ---------------------------------------------------------------------------- JSON Lines details


def test_jsonl_bom_crlf_and_bad_lines(tmp_path: Path) -> None:
    good = json.dumps(_statement())
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf" + good.encode() + b"\r\n"
        + b"[1, 2]\r\n"
        + b'{"bad": "\xff"}\n'
        + b'{"score": NaN}\n'
        + b"\n"
        + b"null\n"
    )  # fmt: skip
    table, rejects, sizes = _read(path)
    assert sizes == [5]
    assert table["_line"].to_pylist() == [1]
    assert table["_raw"].to_pylist() == [good]
    got = [(r["line"], r["reason"], r["detail"]) for r in rejects.to_pylist()]
    assert got == [
        (2, "malformed_record", "statement is a JSON array, not an object"),
        (3, "malformed_json", "not UTF-8 text"),
        (4, "malformed_record", "statement lacks actor, verb, object"),  # NaN is tolerated
        (6, "malformed_record", "statement is a JSON null, not an object"),
    ]
    assert rejects["raw"].to_pylist()[1] == '{"bad": "\ufffd"}'


def test_jsonl_with_broken_first_line_stays_line_oriented(tmp_path: Path) -> None:
    path = tmp_path / "first_bad.jsonl"
    path.write_text('{"actor": \n' + json.dumps(_statement()) + "\n", encoding="utf-8")
    table, rejects, _ = _read(path)
    assert table["_line"].to_pylist() == [2]
    assert rejects.to_pylist()[0]["line"] == 1
    assert rejects.to_pylist()[0]["reason"] == "malformed_json"


def test_json_dialect_escapes_duplicates_and_trailing_commas(tmp_path: Path) -> None:
    head = '"verb": {"id": "http://adlnet.gov/expapi/verbs/answered"}, "timestamp": "2024-05-01T00:00:00Z"'
    lines = [
        # escapes in values are decoded
        '{"actor": {"mbox": "mailto:\\u0041nn@b.org"}, "object": {"id": "q\\"1\\\\"}, '
        + head
        + "}",
        # a repeated key: the first occurrence counts
        '{"actor": {"mbox": "mailto:first@b.org"}, "actor": {"mbox": "mailto:second@b.org"}, '
        '"object": {"id": "q2"}, ' + head + "}",
        # trailing commas are tolerated (DuckDB's JSON dialect)
        '{"actor": {"mbox": "mailto:c@b.org",}, "object": {"id": "q3"}, ' + head + ",}",
        # non-ASCII text survives unchanged
        '{"actor": {"account": {"homePage": "http://é.org", "name": "名前"}}, '
        '"object": {"id": "q4"}, ' + head + "}",
    ]
    path = tmp_path / "dialect.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    table, rejects, _ = _read(path)
    assert rejects.num_rows == 0
    assert table["learner_id"].to_pylist() == [
        "mbox:mailto:Ann@b.org",
        "mbox:mailto:first@b.org",
        "mbox:mailto:c@b.org",
        "account:http://é.org|名前",
    ]
    assert table["item_id"].to_pylist() == ['q"1\\', "q2", "q3", "q4"]


def test_statement_result_on_one_line_and_empty(tmp_path: Path) -> None:
    stmt = json.dumps(_statement())
    one_line = tmp_path / "result.json"
    one_line.write_text('{"statements": [' + stmt + ", " + stmt + '], "more": ""}\n')
    table, rejects, _ = _read(one_line)
    assert (table.num_rows, rejects.num_rows, table["_line"].to_pylist()) == (2, 0, [1, 2])
    empty = tmp_path / "empty_result.json"
    empty.write_text('{\n  "statements": [],\n  "more": ""\n}\n')
    assert list(open_source(empty, ReadOptions()).batches()) == []


def test_gzipped_pretty_statement(tmp_path: Path) -> None:
    path = tmp_path / "one.json.gz"
    path.write_bytes(gzip.compress((DATA / "single_statement.json").read_bytes()))
    table, _, _ = _read(path)
    assert table["event_id"].to_pylist() == ["00000000-0000-4000-8000-000000000004"]


# ---------------------------------------------------------------------------- actor forms


ACTOR_CASES: list[tuple[Any, str | None]] = [
    ({"mbox": "mailto:a@b.org"}, "mbox:mailto:a@b.org"),
    ({"mbox": "MailTo:Jo.Smith@B.Org"}, "mbox:mailto:Jo.Smith@b.org"),
    ({"mbox": "mailto:we@ird@Host.ORG"}, "mbox:mailto:we@ird@host.org"),
    ({"mbox_sha1sum": "A" * 40}, "sha1:" + "a" * 40),
    ({"openid": "http://openid.example.org/u1"}, "openid:http://openid.example.org/u1"),
    ({"account": {"homePage": "http://x.org", "name": "Bob"}}, "account:http://x.org|Bob"),
    ({"objectType": "Group", "account": {"homePage": "h", "name": "g"}}, "account:h|g"),
    ({"objectType": "Agent", "name": "only a name"}, None),
    ({"objectType": "Group", "member": [{"mbox": "mailto:a@b.org"}]}, None),
    ({"mbox": None, "openid": "http://o/1"}, "openid:http://o/1"),
]


@pytest.mark.parametrize(("actor", "expected"), ACTOR_CASES)
def test_actor_forms(one: _One, actor: dict[str, Any], expected: str | None) -> None:
    batch = one(_statement(actor=actor))
    assert batch.table["learner_id"].to_pylist() == [expected]


BAD_ACTOR_CASES: list[tuple[Any, str]] = [
    ({"mbox": "a@b.org"}, 'actor mbox "a@b.org" is not a mailto IRI'),
    ({"mbox": "mailto:nobody"}, 'actor mbox "mailto:nobody" is not a mailto IRI'),
    ({"mbox": "mailto:@host"}, 'actor mbox "mailto:@host" is not a mailto IRI'),
    ({"mbox": "mailto:a@"}, 'actor mbox "mailto:a@" is not a mailto IRI'),
    ({"mbox": 7}, "actor mbox 7 is not a mailto IRI"),
    ({"mbox_sha1sum": "abc"}, 'actor mbox_sha1sum "abc" is not 40 hex digits'),
    ({"mbox_sha1sum": "g" * 40}, f'actor mbox_sha1sum "{"g" * 40}" is not 40 hex digits'),
    ({"openid": ""}, 'actor openid "" is not a URI'),
    ({"openid": ["u"]}, 'actor openid ["u"] is not a URI'),
    (
        {"account": {"homePage": "http://x.org"}},
        'actor account needs a non-empty "homePage" and "name"',
    ),
    ({"account": "bob"}, 'actor account needs a non-empty "homePage" and "name"'),
    (
        {"mbox": "mailto:a@b.org", "mbox_sha1sum": "a" * 40},
        "actor has 2 inverse functional identifiers (mbox, mbox_sha1sum); xAPI allows exactly one",
    ),
    (
        {"objectType": "Activity", "id": "x"},
        'actor objectType "Activity" is neither "Agent" nor "Group"',
    ),
    ("mailto:a@b.org", "actor is a JSON string, not an object"),
]


@pytest.mark.parametrize(("actor", "detail"), BAD_ACTOR_CASES)
def test_bad_actors_are_malformed_records(one: _One, actor: Any, detail: str) -> None:
    batch = one(_statement(actor=actor))
    (reject,) = batch.rejects.to_pylist()
    assert (reject["reason"], reject["detail"]) == ("malformed_record", detail)


# ---------------------------------------------------------------------------- score forms


SCORE_CASES: list[tuple[dict[str, Any], float | None]] = [
    ({"score": {"scaled": 0.42}}, 0.42),
    ({"score": {"scaled": 0}}, 0.0),
    ({"score": {"scaled": -1}}, -1.0),
    ({"score": {"scaled": 0.3, "raw": 9, "min": 0, "max": 10}, "success": True}, 0.3),
    ({"score": {"raw": 7, "min": 0, "max": 10}}, 0.7),
    ({"score": {"raw": 15, "min": 10, "max": 30}, "success": False}, 0.25),
    ({"score": {"raw": -2, "min": -4, "max": 4}}, 0.25),
    ({"score": {"raw": 12, "min": 0, "max": 10}}, 1.2),
    ({"score": {"raw": 7}}, None),
    ({"score": {"raw": 7, "max": 10}}, None),
    ({"score": {"raw": 7, "min": 0}, "success": True}, 1.0),
    ({"success": True}, 1.0),
    ({"success": False}, 0.0),
    ({"score": {}, "completion": True}, None),
    ({}, None),
]


@pytest.mark.parametrize(("result", "outcome"), SCORE_CASES)
def test_score_forms(one: _One, result: dict[str, Any], outcome: float | None) -> None:
    batch = one(_statement(result=result))
    assert batch.rejects.num_rows == 0
    got = batch.table["outcome"][0].as_py()
    if outcome is None:
        assert got is None
    else:
        assert got == pytest.approx(outcome, rel=1e-15)


BAD_RESULT_CASES: list[tuple[dict[str, Any], str, str]] = [
    (
        {"score": {"scaled": "0.5"}},
        "bad_outcome",
        'result.score.scaled "0.5" is not a finite number',
    ),
    (
        {"score": {"raw": True, "min": 0, "max": 1}},
        "bad_outcome",
        "result.score.raw true is not a finite number",
    ),
    (
        {"score": {"raw": 1, "min": 2, "max": 1}},
        "bad_outcome",
        "result.score raw 1 cannot be normalised: max 1 must exceed min 2",
    ),
    (
        {"score": {"raw": 1.5, "min": 0, "max": 0}},
        "bad_outcome",
        "result.score raw 1.5 cannot be normalised: max 0 must exceed min 0",
    ),
    ({"score": [0.5]}, "bad_outcome", "result.score [0.5] is not an object"),
    ({"success": "yes"}, "bad_outcome", 'result.success "yes" is not a boolean'),
    ({"success": 1}, "bad_outcome", "result.success 1 is not a boolean"),
    ({"duration": 30}, "bad_duration", "result.duration 30 is not a string"),
    (
        {"duration": "30s"},
        "bad_duration",
        'result.duration "30s" is not an ISO 8601 '
        "duration (PnYnMnDTnHnMnS or PnW, fraction on the last part)",
    ),
]


@pytest.mark.parametrize(("result", "reason", "detail"), BAD_RESULT_CASES)
def test_bad_results_are_rejected(
    one: _One, result: dict[str, Any], reason: str, detail: str
) -> None:
    batch = one(_statement(result=result))
    assert batch.table.num_rows == 0
    (reject,) = batch.rejects.to_pylist()
    assert (reject["reason"], reject["detail"]) == (reason, detail)


def test_huge_raw_score_is_bad_outcome(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    stmt = json.dumps(_statement(result={"score": {"raw": 1, "min": 0, "max": 2}}))
    path.write_text(stmt.replace('"raw": 1', '"raw": 1e400') + "\n", encoding="utf-8")
    (batch,) = open_source(path, ReadOptions()).batches()
    assert batch.rejects["reason"].to_pylist() == ["bad_outcome"]


# ---------------------------------------------------------------------------- other fields


def test_missing_optional_parts(tmp_path: Path) -> None:
    stmt = _statement()
    del stmt["timestamp"], stmt["id"]
    batch = _read_one(tmp_path, stmt)
    row = batch.table.to_pylist()[0]
    assert row == {
        "learner_id": "mbox:mailto:s@example.org", "ts": None, "domain": None,
        "item_id": "http://example.com/q", "outcome": None, "duration_s": None,
        "event_id": None, "_line": 1, "_raw": json.dumps(stmt),
    }  # fmt: skip


def test_stored_is_the_fallback_timestamp(tmp_path: Path) -> None:
    stmt = _statement(stored="2024-06-01T00:00:00Z")
    del stmt["timestamp"]
    assert _read_one(tmp_path, stmt).table["ts"].to_pylist() == ["2024-06-01T00:00:00Z"]


WRONG_FIELD_CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"timestamp": 1700000000}, "bad_timestamp", "timestamp 1700000000 is not a string"),
    ({"id": 12}, "malformed_record", "id 12 is not a string"),
    ({"object": {"id": 5}}, "malformed_record", "object id 5 is not a string"),
    ({"object": "http://x"}, "malformed_record", "object is a JSON string, not an object"),
    ({"verb": "answered"}, "malformed_record", "verb is a JSON string, not an object"),
    ({"result": [1]}, "malformed_record", "result is a JSON array, not an object"),
    ({"actor": None, "object": None}, "malformed_record", "statement lacks actor, object"),
]


@pytest.mark.parametrize(("fields", "reason", "detail"), WRONG_FIELD_CASES)
def test_wrong_field_types(one: _One, fields: dict[str, Any], reason: str, detail: str) -> None:
    (reject,) = one(_statement(**fields)).rejects.to_pylist()
    assert (reject["reason"], reject["detail"]) == (reason, detail)


def test_agent_object_has_no_item_id(tmp_path: Path) -> None:
    stmt = _statement(object={"objectType": "Agent", "mbox": "mailto:t@example.org"})
    batch = _read_one(tmp_path, stmt)
    assert batch.table["item_id"].to_pylist() == [None]


# ---------------------------------------------------------------------------- domain path


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("context.contextActivities.grouping[0].id",
         ("context", "contextActivities", "grouping", 0, "id")),
        ('object.definition.extensions."http://example.com/domain"',
         ("object", "definition", "extensions", "http://example.com/domain")),
        ('a."x.\\"y\\".\\\\z"[2][-1].b', ("a", 'x."y".\\z', 2, -1, "b")),
        ('"only"', ("only",)),
    ],
)  # fmt: skip
def test_parse_domain_path(path: str, steps: tuple[Any, ...]) -> None:
    assert parse_domain_path(path) == steps


@pytest.mark.parametrize(
    ("path", "where"),
    [
        ("", "a key is expected at character 1"),
        ("a.", "a key is expected at character 3"),
        ("a..b", "a key is expected at character 3"),
        ("[0].id", "a key is expected at character 1"),
        ("a[x]", "'[' must hold an integer"),
        ("a[0", "'[' must hold an integer"),
        ('a."b', "unterminated quoted key at character 3"),
        ('a."b"c', "'.' or '[' is expected at character 6"),
        ('a"b', "'.' or '[' is expected at character 2"),
        ('a.""', "a quoted key cannot be empty at character 3"),
    ],
)
def test_bad_domain_paths_fail_at_open(path: str, where: str) -> None:
    with pytest.raises(InputError, match=re.escape(where)):
        parse_domain_path(path)
    with pytest.raises(InputError, match=re.escape(where)):
        open_source(DATA / "statements.jsonl", ReadOptions(xapi_domain_path=path))


_EXTENSIONS = {
    "n": 3, "f": 0.5, "b": True, "o": {"k": 1}, "l": ["x", "y"], "s": "t", "nul": None,
    "a.b": "dotted", 'q"k': "quoted", "0": "zero-key", "back\\slash": "bs", "": "empty-key",
}  # fmt: skip


@pytest.mark.parametrize(
    ("path", "domain"),
    [
        ("n", "3"), ("f", "0.5"), ("b", "true"), ("o", None), ("l", None), ("s", "t"),
        ("nul", None), ("l[-1]", "y"), ("l[0]", "x"), ("l[2]", None), ("l[-3]", None),
        ("s[0]", None), ("o[0].k", "1"), ("o[-1].k", "1"), ("o[1].k", None),
        ("missing.deeper", None), ("l.key", None), ('l."0"', None), ('"a.b"', "dotted"),
        ('"q\\"k"', "quoted"), ('"0"', "zero-key"), ('"back\\\\slash"', "bs"),
        ("a.b", None),
    ],
)  # fmt: skip
def test_domain_path_values(tmp_path: Path, path: str, domain: str | None) -> None:
    stmt = _statement(context={"extensions": _EXTENSIONS})
    opts = ReadOptions(xapi_domain_path="context.extensions." + path)
    assert _read_one(tmp_path, stmt, opts).table["domain"].to_pylist() == [domain]


def test_domain_from_object_extension() -> None:
    opts = ReadOptions(
        xapi_domain_path='object.definition.extensions."http://example.com/xapi/domain"'
    )
    table, _, _ = _read(DATA / "statements.jsonl", opts)
    domains = dict(zip(table["event_id"].to_pylist(), table["domain"].to_pylist(), strict=True))
    assert domains["00000000-0000-4000-8000-000000000002"] == "algebra.linear"
    assert sum(d is not None for d in domains.values()) == 1


def test_domain_last_grouping() -> None:
    opts = ReadOptions(xapi_domain_path="context.contextActivities.grouping[-1].id")
    table, _, _ = _read(DATA / "statements.jsonl", opts)
    domains = dict(zip(table["event_id"].to_pylist(), table["domain"].to_pylist(), strict=True))
    assert domains["6690e6c9-3ef0-4ed3-8b37-7f3964730bee"] == "http://example.com/course/other"
    assert domains["00000000-0000-4000-8000-000000000003"] == "http://example.com/course/geometry"


# ---------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT1H30M5.5S", 5405.5),
        ("P1DT2H", 93_600.0),
        ("PT0S", 0.0),
        ("P0D", 0.0),
        ("P1W", 604_800.0),
        ("P2.5W", 1_512_000.0),
        ("PT0.01S", 0.01),
        ("PT1,5S", 1.5),
        ("PT36H", 129_600.0),
        ("PT90M", 5_400.0),
        ("P0.5D", 43_200.0),
        ("PT1M0.25S", 60.25),
        ("P1Y", 365.25 * DAY_S),
        ("P1M", 30.4375 * DAY_S),
        ("P1Y2M3DT4H5M6S", (365.25 + 2 * 30.4375 + 3) * DAY_S + 4 * 3600 + 5 * 60 + 6),
        ("P1Y6.5M", (365.25 + 6.5 * 30.4375) * DAY_S),
        ("PT0.000001S", 1e-6),
    ],
)
def test_duration_values(text: str, seconds: float) -> None:
    values, invalid = parse_durations(pa.array([text]))
    assert not invalid[0]
    assert values[0] == pytest.approx(seconds, rel=1e-15, abs=1e-12)


@pytest.mark.parametrize(
    "text",
    ["", "P", "PT", "P1DT", "1H", "T1H", "PT1H30", "P1H", "PT1D", "PT1Y", "P1W2D", "P1WT1H",
     "P1.5DT2H", "PT1.5H30M", "P1.5Y2M", "-PT1S", "PT-1S", "pt1s", "P1d", " PT1S", "PT1S ",
     "PT.5S", "PT1.S", "P1M1Y", "PT1S1M", "PT1H1H", "P1,5.5D", "PT1H T1M", "P1E3D", "PT1e3S",
     "P" + "9" * 400 + "Y", "PT½S", "PT١S"],
)  # fmt: skip
def test_invalid_durations(text: str) -> None:
    values, invalid = parse_durations(pa.array([text]))
    assert invalid[0]
    assert math.isnan(values[0])


def test_null_duration_is_not_invalid() -> None:
    values, invalid = parse_durations(pa.array([None, "PT2S", None], pa.string()))
    assert invalid.tolist() == [False, False, False]
    assert math.isnan(values[0])
    assert values[1] == 2.0


def test_month_and_year_constants() -> None:
    assert DAYS_PER_YEAR == 365.25
    assert DAYS_PER_MONTH == 30.4375


_DATE_UNITS = (("Y", DAYS_PER_YEAR * DAY_S), ("M", DAYS_PER_MONTH * DAY_S), ("D", DAY_S))
_TIME_UNITS = (("H", 3600.0), ("M", 60.0), ("S", 1.0))


@st.composite
def _duration_parts(draw: st.DrawFn) -> tuple[str, float]:
    """An ISO 8601 duration built from random components, with its length in seconds."""
    if draw(st.integers(0, 9)) == 0:
        weeks = draw(st.integers(0, 10**6))
        return f"P{weeks}W", weeks * 7 * DAY_S
    units = [*_DATE_UNITS, *_TIME_UNITS]
    present = draw(st.lists(st.booleans(), min_size=6, max_size=6).filter(any))
    numbers = [draw(st.integers(0, 10**6)) for _ in units]
    fraction = draw(st.none() | st.text("0123456789", min_size=1, max_size=6))
    sep = draw(st.sampled_from(".,"))
    last = max(k for k, p in enumerate(present) if p)
    texts, total = [], 0.0
    for k, ((unit, unit_s), on, n) in enumerate(zip(units, present, numbers, strict=True)):
        if not on:
            texts.append("")
            continue
        value_text = str(n)
        value = float(n)
        if k == last and fraction is not None:
            value_text += sep + fraction
            value += int(fraction) / 10 ** len(fraction)
        texts.append(value_text + unit)
        total += value * unit_s
    date, time = "".join(texts[:3]), "".join(texts[3:])
    return "P" + date + ("T" + time if time else ""), total


@settings(max_examples=150, deadline=None)
@given(st.lists(_duration_parts(), min_size=1, max_size=20))
def test_duration_round_trip(parts: list[tuple[str, float]]) -> None:
    values, invalid = parse_durations(pa.array([p[0] for p in parts]))
    assert not invalid.any()
    for (_, expected), got in zip(parts, values.tolist(), strict=True):
        assert math.isclose(got, expected, rel_tol=1e-12, abs_tol=1e-9)


def _reference_seconds(text: str) -> float | None:
    """A naive character-scanning ISO 8601 duration reader, independent of the regex."""
    if not text.startswith("P"):
        return None
    date, has_t, time = text[1:].partition("T")
    if has_t and not time:
        return None
    tokens: list[tuple[str, float, bool]] = []  # unit key, number, has fraction
    for part, order in ((date, "YMWD"), (time, "HMS")):
        pos, last = 0, -1
        while pos < len(part):
            end = pos
            while end < len(part) and part[end] in "0123456789.,":
                end += 1
            number = part[pos:end].replace(",", ".")
            if end == len(part) or number.count(".") > 1:
                return None
            whole, _, frac = number.partition(".")
            if not whole or (number.endswith(".") or (("." in number) and not frac)):
                return None
            unit = order.find(part[end])
            if unit <= last:
                return None
            last = unit
            tokens.append(
                (order[unit] + ("t" if order == "HMS" else "d"), float(number), bool(frac))
            )
            pos = end + 1
    if not tokens:
        return None
    if any(t[0] == "Wd" for t in tokens) and len(tokens) > 1:
        return None
    if any(t[2] for t in tokens[:-1]):
        return None
    size = {"Yd": DAYS_PER_YEAR * DAY_S, "Md": DAYS_PER_MONTH * DAY_S, "Wd": 7 * DAY_S,
            "Dd": DAY_S, "Ht": 3600.0, "Mt": 60.0, "St": 1.0}  # fmt: skip
    return sum(n * size[u] for u, n, _ in tokens)


_NUMBER = st.sampled_from(["0", "7", "12", "1.5", "0,25", "3.", ".5", "1.2.3", "-1", ""])
_TOKEN = st.one_of(
    st.tuples(_NUMBER, st.sampled_from("YMWDHS")).map("".join),
    st.sampled_from(["T", "P", " ", "x"]),
)
_ORDERED = st.tuples(
    st.lists(st.tuples(_NUMBER, st.sampled_from("YMWD")), max_size=3),
    st.sampled_from(["", "T"]),
    st.lists(st.tuples(_NUMBER, st.sampled_from("HMS")), max_size=3),
).map(
    lambda t: (
        "P"
        + "".join(n + u for n, u in sorted(t[0], key=lambda p: "YMWD".index(p[1])))
        + t[1]
        + "".join(n + u for n, u in sorted(t[2], key=lambda p: "HMS".index(p[1])))
    )
)
#: Mostly near-valid strings: "P" then number-designator tokens, with a "T" now and then.
_FUZZ = st.one_of(
    _ORDERED,
    st.lists(_TOKEN, max_size=6).map(lambda ts: "P" + "".join(ts)),
    st.text("PTYMWDHS0123456789.,- ", max_size=14),
)


@settings(max_examples=250, deadline=None)
@given(st.lists(_FUZZ, max_size=30))
def test_duration_parser_agrees_with_reference(texts: list[str]) -> None:
    values, invalid = parse_durations(pa.array(texts, pa.string()))
    for text, got, bad in zip(texts, values.tolist(), invalid.tolist(), strict=True):
        expected = _reference_seconds(text)
        assert bad == (expected is None), text
        if expected is not None:
            assert math.isclose(got, expected, rel_tol=1e-12, abs_tol=1e-9), text


# ---------------------------------------------------------------------------- counting


_VALID_STATEMENTS = st.builds(
    lambda actor, result, stmt_id: _statement(id=stmt_id, actor=actor, result=result),
    actor=st.sampled_from([
        {"mbox": "mailto:a@example.org"}, {"mbox_sha1sum": "b" * 40}, {"openid": "http://o/1"},
        {"account": {"homePage": "http://h", "name": "n"}}, {"name": "anonymous"},
    ]),
    result=st.sampled_from([
        {}, {"score": {"scaled": 0.5}}, {"score": {"raw": 1, "min": 0, "max": 4}},
        {"score": {"raw": 1, "min": 4, "max": 0}}, {"success": True}, {"duration": "PT5M"},
        {"duration": "5 minutes"}, {"duration": 5}, {"score": {"scaled": "x"}},
    ]),
    stmt_id=st.uuids().map(str),
)  # fmt: skip
_LINES = st.one_of(
    _VALID_STATEMENTS.map(json.dumps),
    st.sampled_from([
        '{"actor": {"mbox": "mailto:a@b.org"}, "verb"', "[1, 2]", "42", '"text"', "null",
        '{"verb": {"id": "x"}, "object": {"id": "y"}}', "{}", "",
        json.dumps(_statement(verb={"id": VOIDED},
                              object={"objectType": "StatementRef", "id": "nope"})),
    ]),
    st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40),
)  # fmt: skip


@settings(max_examples=30, deadline=None)
@given(st.lists(_LINES, max_size=25), st.sampled_from([7, 1000]))
def test_jsonl_rows_plus_rejects_equal_statements_read(lines: list[str], batch_rows: int) -> None:
    lines = [json.dumps(_statement()), *lines]  # a first statement makes it JSON Lines
    numbered = {k for k, line in enumerate(lines, 1) if line.strip(" ")}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mix.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        table, rejects, sizes = _read(path, ReadOptions(batch_rows=batch_rows))
    seen = table["_line"].to_pylist() + rejects["line"].to_pylist()
    assert sorted(seen) == sorted(numbered)  # every statement once, in table or rejects
    assert sum(sizes) == len(numbered)
    assert all(s <= batch_rows for s in sizes)
    assert table.num_rows + rejects.num_rows == len(numbered)


@settings(max_examples=25, deadline=None)
@given(st.lists(_VALID_STATEMENTS | st.sampled_from([1, "s", None, [], {}]), max_size=30))
def test_array_rows_plus_rejects_equal_statements_read(values: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mix.json"
        path.write_text(json.dumps(values, indent=1), encoding="utf-8")
        table, rejects, sizes = _read(path, ReadOptions(batch_rows=12))
    seen = table["_line"].to_pylist() + rejects["line"].to_pylist()
    assert sorted(seen) == list(range(1, len(values) + 1))
    assert sum(sizes) == len(values)


# ---------------------------------------------------------------------------- validation


def test_through_validation() -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    batches = list(open_source(DATA / "statements.jsonl", ReadOptions()).batches())
    results = [validate.validate_batch(b, now=now) for b in batches]
    accepted = pa.concat_tables([r.accepted for r in results])
    rejected = pa.concat_tables([r.rejected for r in results])
    assert sum(b.n_rows for b in batches) == 16
    assert accepted.num_rows + rejected.num_rows == 16
    reasons = {r["line"]: r["reason"] for r in rejected.to_pylist()}
    assert reasons == {
        **{line: reason for line, reason, _ in JSONL_REJECTS},
        7: "missing_learner_id",  # anonymous agent (its scaled -0.5 is never reached)
        8: "missing_timestamp",  # no timestamp, no stored
    }
    got = {r["event_id"]: r for r in accepted.to_pylist()}

    def at(text: str) -> datetime:
        return datetime.fromisoformat(text).astimezone(UTC)

    expected_ts = {
        "6690e6c9-3ef0-4ed3-8b37-7f3964730bee": at("2024-03-01T10:00:00+00:00"),
        "00000000-0000-4000-8000-000000000002": at("2024-03-01T11:00:00.250+00:00"),
        "00000000-0000-4000-8000-000000000003": at("2024-03-02T08:30:00+00:00"),
        "00000000-0000-4000-8000-000000000004": at("2024-03-02T08:30:00+00:00"),
        "00000000-0000-4000-8000-000000000005": at("2024-03-03T00:00:00+00:00"),
        "00000000-0000-4000-8000-000000000016": at("2024-03-07T00:00:00+00:00"),
    }
    assert set(got) == set(expected_ts)
    for event_id, ts in expected_ts.items():
        row = got[event_id]
        learner, _, domain, item, outcome, duration = EXPECTED[event_id]
        assert row["ts"] == ts
        assert (row["learner_id"], row["item_id"]) == (learner, item)
        assert row["domain"] == (domain if domain is not None else DEFAULT_DOMAIN)
        assert row["outcome"] == outcome
        assert row["duration_s"] == duration


def test_all_rejected_batch_through_validation() -> None:
    """A batch whose every statement the reader rejects still validates (no events)."""
    opts = ReadOptions(batch_rows=5)  # the third batch (lines 12-16) is all reader rejects
    batches = list(open_source(DATA / "statements.jsonl", opts).batches())
    assert [b.table.num_rows for b in batches] == [5, 2, 0, 1]
    now = datetime(2024, 6, 1, tzinfo=UTC)
    results = [validate.validate_batch(b, now=now) for b in batches]
    assert [r.accepted.num_rows for r in results] == [5, 0, 0, 1]
    assert [r.rejected.num_rows for r in results] == [0, 5, 5, 0]
