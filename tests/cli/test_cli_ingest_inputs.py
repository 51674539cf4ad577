"""``cohortlens ingest`` on awkward inputs: exit codes, messages, and the store left unchanged.

Encodings, timestamp patterns, delimiters, the reject-rate gate, long fields and outcomes
files, each through a real process.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import duckdb
import pytest
from tests._cli import run_cli

EVENTS = (
    "learner_id,ts,item_id,domain\nL1,2024-01-01T10:00:00Z,i1,d\nL2,2024-01-02T10:00:00Z,i2,d\n"
)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("ingest", *args)


def snapshot(db: Path) -> dict[str, Any]:
    """Everything an ingest writes, to compare before and after a failing one."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {
            t: con.sql(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
            for t in ("events", "quarantine", "outcomes", "ingest_log")
        }
    finally:
        con.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A store holding two events and one learner's full outcomes."""
    (tmp_path / "seed.csv").write_text(EVENTS)
    (tmp_path / "seed_outcomes.csv").write_text(
        "learner_id,completed,churned,revenue,as_of\nL1,true,false,10.5,2024-02-01T00:00:00Z\n"
    )
    path = tmp_path / "s.duckdb"
    r = cli(
        str(tmp_path / "seed.csv"),
        "--outcomes",
        str(tmp_path / "seed_outcomes.csv"),
        "--db",
        str(path),
    )
    assert r.returncode == 0, r.stderr
    return path


def fails_with(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    assert "internal error" not in r.stderr
    for needle in needles:
        assert needle in r.stderr, (needle, r.stderr)


# -- outcomes -------------------------------------------------------------------------------


def test_an_outcomes_file_with_one_column_updates_only_that_column(
    tmp_path: Path, db: Path
) -> None:
    part = tmp_path / "part.csv"
    part.write_text("learner_id,completed\nL1,false\nL9,true\n")
    r = cli("--outcomes", str(part), "--db", str(db), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert (report["outcomes_inserted"], report["outcomes_updated"]) == (1, 1)
    assert report["outcomes_unchanged"] == 0
    (src,) = report["sources"]
    assert (src["source"], src["kind"], src["outcomes"]) == (str(part), "outcomes", 2)
    rows = {r[0]: r[1:5] for r in snapshot(db)["outcomes"]}
    assert rows["L1"][0] is False
    assert rows["L1"][1:3] == (False, 10.5)  # churned and revenue kept
    assert rows["L1"][3] is not None  # as_of kept
    assert rows["L9"] == (True, None, None, None)
    table = cli("--outcomes", str(part), "--db", str(db))
    assert table.returncode == 0, table.stderr
    assert "outcomes" in table.stdout
    assert "unchanged" in table.stdout
    assert table.stdout.rstrip().splitlines()[-2].split("│")[2:6] == [
        "    2 ",
        "        0 ",
        "       0 ",
        "         2 ",
    ]


def test_an_outcomes_file_without_outcome_columns_exits_2_and_writes_nothing(
    tmp_path: Path, db: Path
) -> None:
    before = snapshot(db)
    bad = tmp_path / "bad.csv"
    bad.write_text("learner_id,score\nL1,3\n")
    r = cli(str(tmp_path / "seed.csv"), "--outcomes", str(bad), "--db", str(db))
    fails_with(r, str(bad), "found learner_id, score", "completed, churned, revenue, as_of")
    assert snapshot(db) == before


def test_no_events_and_no_outcomes_is_exit_2(db: Path) -> None:
    fails_with(cli("--db", str(db)), "nothing to ingest")


# -- encodings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "offset", "hint"),
    [
        pytest.param(
            b"learner_id,ts,item_id,caf\xe9\nL1,2024-01-01T10:00:00Z,i1,x\n",
            25,
            "--encoding cp1252",
            id="cp1252-header",
        ),
        pytest.param(
            "learner_id,ts,item_id\nL1,2024-01-01T10:00:00Z,i1\n".encode("utf-16-le"),
            1,
            "--encoding utf-16-le",
            id="utf16-without-bom",
        ),
        pytest.param(
            bytes(range(128, 256)) * 8 + b"\n" + bytes(range(1, 128)), 0, "--encoding", id="high"
        ),
        *(
            pytest.param(random.Random(seed).randbytes(4096), None, "encoding", id=f"random{seed}")
            for seed in range(3)
        ),
    ],
)
def test_undecodable_input_exits_2_with_the_offset_and_a_hint(
    tmp_path: Path, db: Path, data: bytes, offset: int | None, hint: str
) -> None:
    before = snapshot(db)
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    at = "byte offset " if offset is None else f"byte offset {offset} "
    fails_with(cli(str(path), "--db", str(db)), str(path), at, hint)
    assert snapshot(db) == before


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "utf-32"])
def test_a_byte_order_mark_selects_the_encoding(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(EVENTS.replace(",d\n", ",dé\n").encode(encoding))
    r = cli(str(path), "--db", str(tmp_path / "s.duckdb"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["accepted"] == 2
    rows = snapshot(tmp_path / "s.duckdb")["events"]
    assert {row[3] for row in rows} == {"dé"}


def test_encoding_option_reads_cp1252(tmp_path: Path) -> None:
    path = tmp_path / "cp.csv"
    path.write_bytes(EVENTS.replace(",d\n", ",café\n").encode("cp1252"))
    db = tmp_path / "s.duckdb"
    r = cli(str(path), "--encoding", "cp1252", "--db", str(db), "--json")
    assert r.returncode == 0, r.stderr
    assert {row[3] for row in snapshot(db)["events"]} == {"café"}
    fails_with(cli(str(path), "--encoding", "klingon", "--db", str(db)), "unknown encoding")


def test_a_data_row_that_is_not_utf8_is_quarantined_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_bytes(EVENTS.encode() + b"L3,2024-01-03T10:00:00Z,i3,caf\xe9\n")
    db = tmp_path / "s.duckdb"
    r = cli(str(path), "--db", str(db), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rejected_by_reason"] == {"malformed_record": 1}
    ((_, _, line, reason, detail, _),) = snapshot(db)["quarantine"]
    assert (line, reason) == (4, "malformed_record")
    assert "0xE9" in detail
    assert "--encoding cp1252" in detail


# -- timestamps and the reject-rate gate ----------------------------------------------------


def _day_first(path: Path, day: int = 3, rows: int = 1000) -> Path:
    lines = [f"L{i},{day:02d}/01/2024 10:00,i{i}" for i in range(rows)]
    path.write_text("learner_id,ts,item_id\n" + "\n".join(lines) + "\n")
    return path


def test_a_file_rejected_whole_exits_2_with_examples_and_the_ts_format_fix(
    tmp_path: Path, db: Path
) -> None:
    before = snapshot(db)
    path = _day_first(tmp_path / "dm.csv")
    r = cli(str(path), "--db", str(db))
    fails_with(
        r,
        "1,000 of 1,000 rows rejected",
        "--max-reject-rate 0.5",
        "bad_timestamp: 1,000 rows",
        "e.g. line 2:",
        "03/01/2024 10:00",
        "--ts-format '%d/%m/%Y %H:%M' (day first)",
        "--ts-format '%m/%d/%Y %H:%M' (month first)",
    )
    assert snapshot(db) == before


def test_an_unambiguous_pattern_is_suggested_alone(tmp_path: Path, db: Path) -> None:
    r = cli(str(_day_first(tmp_path / "dm.csv", day=13)), "--db", str(db))
    fails_with(r, "likely fix: --ts-format '%d/%m/%Y %H:%M'\n")
    assert "month first" not in r.stderr


def test_ts_format_reads_the_pattern(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    path = _day_first(tmp_path / "dm.csv")
    r = cli(str(path), "--ts-format", "%d/%m/%Y %H:%M", "--db", str(db), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["accepted"] == 1000
    stamps = {str(row[2]) for row in snapshot(db)["events"]}
    assert len(stamps) == 1
    assert stamps.pop().startswith("2024-01-03 10:00:00")
    fails_with(cli(str(path), "--ts-format", "%Q", "--db", str(db)), "--ts-format '%Q'")


def test_past_the_rate_one_bad_source_fails_the_whole_request(tmp_path: Path, db: Path) -> None:
    before = snapshot(db)
    good = tmp_path / "good.csv"
    good.write_text(EVENTS.replace("L1", "L7").replace("L2", "L8"))
    half = tmp_path / "half.csv"  # 2 of 3 rows bad: above 0.5, below 0.7
    half.write_text("learner_id,ts,item_id\nL1,2024-01-01T00:00:00Z,i\nL2,yesterday,i\nL3,,i\n")
    fails_with(cli(str(good), str(half), "--db", str(db)), "2 of 3 rows rejected", "half.csv")
    assert snapshot(db) == before
    r = cli(str(good), str(half), "--max-reject-rate", "0.7", "--db", str(db), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rejected"] == 2
    fails_with(cli(str(good), "--max-reject-rate", "1.5", "--db", str(db)), "1.5")


# -- delimiters and long fields -------------------------------------------------------------


def test_a_semicolon_file_is_detected_and_an_explicit_wrong_delimiter_is_named(
    tmp_path: Path, db: Path
) -> None:
    path = tmp_path / "semi.csv"
    path.write_text(EVENTS.replace(",", ";").replace("L1", "L5").replace("L2", "L6"))
    before = snapshot(db)
    r = cli(str(path), "--delimiter", ",", "--db", str(db))
    fails_with(r, "--delimiter ';'")
    assert "--map" not in r.stderr
    assert snapshot(db) == before
    r = cli(str(path), "--db", str(db), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["accepted"] == 2


def test_a_long_field_is_read_and_the_limit_names_its_line(tmp_path: Path, db: Path) -> None:
    path = tmp_path / "long.csv"
    field = "x" * (3 << 20)
    path.write_text(
        "learner_id,ts,item_id,domain\n"
        "L3,2024-01-01T10:00:00Z,i1,d\n"
        f"L4,2024-01-01T10:00:00Z,i1,{field}\n"
        "L5,2024-01-01T10:00:00Z,i1,d\n"
    )
    before = snapshot(db)
    r = cli(str(path), "--max-field-bytes", "1MiB", "--db", str(db))
    fails_with(r, "line 3", "--max-field-bytes")
    assert "straddl" not in r.stderr
    assert snapshot(db) == before
    fails_with(cli(str(path), "--max-field-bytes", "lots", "--db", str(db)), "--max-field-bytes")
    r = cli(str(path), "--db", str(db), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["accepted"] == 3
