"""Reader options: encodings (BOMs, transcoding, decode errors), delimiters, the record limit."""

from __future__ import annotations

import codecs
import gzip
import io
import itertools
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import REPO

from cohortlens.errors import InputError, MissingColumnsError, UnreadableSourceError
from cohortlens.events.readers import open_source
from cohortlens.events.readers._text import (
    Utf8Checked,
    check_encoding,
    choose,
    likely_encoding,
    utf8_pieces,
)
from cohortlens.events.readers.csv import RecordTooLongError
from cohortlens.events.source import ReadOptions

DATA = REPO / "tests" / "data"
EVENTS = "learner_id,ts,item_id,domain\nL1,2024-01-01T10:00:00Z,i1,dé\nL2,2024-01-02,i2,d\n"


def rows(path: Path, fmt: str | None = None, **options: object) -> list[dict[str, object]]:
    source = open_source(path, fmt, ReadOptions(**options))  # type: ignore[arg-type]
    out: list[dict[str, object]] = []
    for batch in source.batches():
        assert batch.rejects.num_rows == 0, batch.rejects.to_pylist()
        out += batch.table.drop_columns(
            [c for c in batch.table.column_names if c.startswith("_")]
        ).to_pylist()
    return out


EXPECTED = [
    {"learner_id": "L1", "ts": "2024-01-01T10:00:00Z", "domain": "dé", "item_id": "i1"},
    {"learner_id": "L2", "ts": "2024-01-02", "domain": "d", "item_id": "i2"},
]

# -- the text layer -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "head", "expected"),
    [
        (None, b"abcd", ("utf-8", 0)),
        (None, codecs.BOM_UTF8 + b"a", ("utf-8", 3)),
        (None, b"\xff\xfea\x00", ("utf-16-le", 2)),
        (None, b"\xfe\xff\x00a", ("utf-16-be", 2)),
        (None, b"\xff\xfe\x00\x00", ("utf-32-le", 4)),
        ("utf-16", b"\xfe\xff\x00a", ("utf-16-be", 2)),
        ("utf-16", b"a\x00b\x00", ("utf-16-le", 0)),
        ("utf-16-le", b"\xff\xfea\x00", ("utf-16-le", 2)),
        ("cp1252", codecs.BOM_UTF8 + b"a", ("cp1252", 0)),
        ("utf-8", codecs.BOM_UTF8 + b"a", ("utf-8", 3)),
    ],
)
def test_choose_reads_the_bom_unless_told_otherwise(
    option: str | None, head: bytes, expected: tuple[str, int]
) -> None:
    assert choose(option, head) == expected


def test_check_encoding_names_and_refusals() -> None:
    assert check_encoding(None) is None
    assert check_encoding("UTF8") == "utf-8"
    assert check_encoding("utf-8-sig") == "utf-8"
    assert check_encoding("Windows-1252") == "cp1252"
    with pytest.raises(InputError, match="unknown encoding"):
        check_encoding("klingon")
    with pytest.raises(InputError, match="not a text encoding"):
        check_encoding("base64")


def test_likely_encoding() -> None:
    assert likely_encoding("learner_id,ts".encode("utf-16-le")) == "utf-16-le"
    assert likely_encoding("learner_id,ts".encode("utf-16-be")) == "utf-16-be"
    assert likely_encoding("café".encode("cp1252")) == "cp1252"
    assert likely_encoding(b"\x81\x8d") == "latin-1"  # bytes cp1252 leaves undefined


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300)


@settings(deadline=None, max_examples=150)
@given(
    text=TEXT,
    encoding=st.sampled_from(["utf-16-le", "utf-16-be", "utf-16", "utf-32", "cp1252"]),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
)
def test_transcoding_gives_utf8_whatever_the_piece_boundaries(
    text: str, encoding: str, cuts: list[int]
) -> None:
    if encoding == "cp1252":
        text = text.encode("cp1252", "ignore").decode("cp1252")
    data = text.encode(encoding)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    option = encoding if encoding != "utf-32" else None  # a BOM must find it alone
    assert b"".join(utf8_pieces(pieces, option, "x")) == text.encode("utf-8")


@settings(deadline=None, max_examples=100)
@given(
    before=st.text(st.characters(codec="cp1252"), max_size=50),
    cuts=st.lists(st.integers(0, 200), max_size=4),
    encoding=st.sampled_from(["utf-16-le", "cp1252", "utf-8"]),
)
def test_a_decode_error_names_its_offset_in_the_file(
    before: str, cuts: list[int], encoding: str
) -> None:
    prefix = before.encode("utf-16-le" if encoding == "utf-16-le" else "cp1252")
    bad = {"utf-16-le": b"\x00\xdc", "cp1252": b"\x81", "utf-8": b"\xff"}[encoding]
    if encoding == "utf-8":
        prefix = before.encode("utf-8")
    data = prefix + bad + b"tail"
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]

    def read() -> bytes:
        if encoding == "utf-8":  # checked, not transcoded
            return Utf8Checked(io.BytesIO(data), "x", decompressed=False).read()
        return b"".join(utf8_pieces(pieces, encoding, "x"))

    with pytest.raises(UnreadableSourceError, match=rf"at byte offset {len(prefix)} "):
        read()


# -- encodings through the readers -----------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_csv_with_a_bom_is_read_in_its_encoding(tmp_path: Path, encoding: str, suffix: str) -> None:
    data = EVENTS.encode(encoding)
    if encoding == "utf-16-be":
        data = codecs.BOM_UTF16_BE + data
    path = tmp_path / f"e{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    assert rows(path) == EXPECTED


def test_csv_in_a_named_encoding(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_bytes(EVENTS.encode("cp1252"))
    assert rows(path, encoding="cp1252") == EXPECTED
    path.write_bytes(EVENTS.encode("utf-16-le"))
    assert rows(path, encoding="utf-16-le") == EXPECTED


def test_csv_header_that_is_not_utf8_fails_with_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_bytes(codecs.BOM_UTF8 + "learner_id,ts,item_id,é\n".encode("cp1252"))
    with pytest.raises(UnreadableSourceError, match=r"0xE9 at byte offset 25 in the file"):
        open_source(path)
    path.write_bytes("learner_id,ts,item_id\n".encode("utf-16-le"))
    with pytest.raises(UnreadableSourceError, match=r"NUL byte at byte offset 1 .*utf-16-le"):
        open_source(path)


def test_a_file_that_is_not_in_the_named_encoding_fails_with_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    body = ("learner_id,ts,item_id\n" + "L1,2024-01-01,i\n" * 5000).encode("utf-16-le")
    path.write_bytes(body + b"\x00\xdc" + "L2,2024-01-01,i\n".encode("utf-16-le"))
    with pytest.raises(UnreadableSourceError, match=rf"at byte offset {len(body)} "):
        list(open_source(path, None, ReadOptions(encoding="utf-16-le")).batches())


def test_jsonl_and_xapi_read_a_utf16_bom_and_name_bad_bytes(tmp_path: Path) -> None:
    line = {"learner_id": "L1", "ts": "2024-01-01T10:00:00Z", "item_id": "é"}
    path = tmp_path / "e.jsonl"
    path.write_bytes((json.dumps(line, ensure_ascii=False) + "\n").encode("utf-16"))
    assert rows(path)[0]["item_id"] == "é"
    path.write_bytes(b'{"learner_id":"L1","ts":"2024-01-01","item_id":"caf\xe9"}\n')
    with pytest.raises(UnreadableSourceError, match=r"0xE9 at byte offset 51 .*cp1252"):
        open_source(path)
    statement = {
        "actor": {"mbox": "mailto:a@b.c"},
        "verb": {"id": "http://x/v"},
        "object": {"id": "http://x/é"},
        "timestamp": "2024-01-01T00:00:00Z",
    }
    doc = tmp_path / "s.json"
    doc.write_bytes(json.dumps([statement], ensure_ascii=False).encode("utf-16"))
    assert rows(doc)[0]["item_id"] == "http://x/é"
    doc.write_bytes(json.dumps([statement], ensure_ascii=False).encode("cp1252"))
    assert rows(doc, encoding="cp1252")[0]["item_id"] == "http://x/é"
    with pytest.raises(UnreadableSourceError, match=r"0xE9 at byte offset \d+ .*cp1252"):
        open_source(doc)


# -- delimiters -------------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_a_header_split_by_another_delimiter_is_detected(tmp_path: Path, delimiter: str) -> None:
    path = tmp_path / "e.csv"
    path.write_text(EVENTS.replace(",", delimiter))
    assert rows(path) == EXPECTED


def test_a_tsv_named_file_holding_commas_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "e.tsv"
    path.write_text(EVENTS)
    assert rows(path) == EXPECTED


def test_an_explicit_delimiter_is_kept_and_the_error_names_the_right_one(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text(EVENTS.replace(",", ";"))
    with pytest.raises(MissingColumnsError) as info:
        open_source(path, None, ReadOptions(delimiter=","))
    assert "pass --delimiter ';'" in str(info.value)
    assert "--map" not in str(info.value)
    path.write_text(EVENTS.replace(",", "\t"))
    with pytest.raises(MissingColumnsError, match=r"pass --delimiter '\\t'"):
        open_source(path, None, ReadOptions(delimiter="|"))


def test_foreign_names_still_get_the_map_hint(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("user,ts,item_id\nu,2024-01-01,i\n")
    with pytest.raises(MissingColumnsError, match="--map CANONICAL=SOURCE"):
        open_source(path)


# -- the record limit ---------------------------------------------------------------------------


def _long(path: Path, field_bytes: int) -> Path:
    path.write_text(
        "learner_id,ts,item_id,domain\nL1,2024-01-01,i,d\nL2,2024-01-01,i,d\n"
        f"L3,2024-01-01,i,{'x' * field_bytes}\nL4,2024-01-01,i,d\n"
    )
    return path


@pytest.mark.parametrize("batch_rows", [1, 1 << 18])
def test_a_record_over_the_limit_names_its_line(tmp_path: Path, batch_rows: int) -> None:
    path = _long(tmp_path / "e.csv", 5000)
    options = ReadOptions(max_field_bytes=4096, batch_rows=batch_rows)
    with pytest.raises(RecordTooLongError, match=r"starting at line 4 .*--max-field-bytes 4096"):
        list(open_source(path, None, options).batches())
    assert len(rows(path, max_field_bytes=6000, batch_rows=batch_rows)) == 4


def test_records_longer_than_arrows_block_are_read(tmp_path: Path) -> None:
    """A 3 MiB field used to fail with pyarrow's 'straddling object' error."""
    got = rows(_long(tmp_path / "e.csv", 3 << 20))
    assert [len(str(r["domain"])) for r in got] == [1, 1, 3 << 20, 1]


def test_a_long_json_line_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    short = '{"learner_id":"a","ts":"2024-01-01","item_id":"i"}\n'
    path.write_text(short * 3 + '{"learner_id":"' + "x" * 300_000 + '"}\n' + short)
    with pytest.raises(RecordTooLongError, match=r"line 4 .*--max-field-bytes 100000"):
        list(open_source(path, None, ReadOptions(max_field_bytes=100_000, batch_rows=2)).batches())


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_dataset_file_that_is_not_utf8_fails_with_its_offset(tmp_path: Path) -> None:
    """pyarrow decodes a malformed row for its handler: invalid UTF-8 there printed a traceback."""
    root = tmp_path / "oulad"
    shutil.copytree(DATA / "oulad", root)
    main = root / "studentAssessment.csv"
    text = main.read_bytes()
    main.write_bytes(text + b"1752,11391,18,0,caf\xe9,extra\n")
    offset = len(text + b"1752,11391,18,0,caf")
    with pytest.raises(UnreadableSourceError, match=rf"0xE9 at byte offset {offset} .*UTF-8 as"):
        list(open_source(root, "oulad").batches())
