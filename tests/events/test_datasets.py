"""Adapters for the public datasets (OULAD, EdNet KT1, KDD Cup 2015 daily counts).

Slices in tests/data/<dataset> give hand-checked values and are compared with independent pandas
implementations of the documented mappings; full-dataset counts (README figures of
../shared/data) run only where that folder exists.
"""

from __future__ import annotations

import gzip
import math
import re
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cohortlens.errors import InputError, MissingColumnsError, UnreadableSourceError
from cohortlens.events.readers import _dataset_io, detect_format, ednet, kddcup2015, oulad
from cohortlens.events.readers import open_source as open_any
from cohortlens.events.schema import EVENT_SCHEMA, QUARANTINE_SCHEMA, outcome_schema
from cohortlens.events.source import ReadOptions, Source

DATA = Path(__file__).resolve().parents[1] / "data"
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
OULAD = DATA / "oulad"
EDNET = DATA / "ednet"
KDD = DATA / "kddcup2015"
CANONICAL = ["learner_id", "ts", "domain", "item_id", "outcome", "duration_s"]
UTC_MIDNIGHT = datetime(1970, 1, 1, tzinfo=UTC)


def _read(source: Source) -> tuple[pa.Table, pa.Table]:
    """All events (canonical + ``_line``/``_raw``) and all reader rejects of a source."""
    events, rejects = [], []
    for batch in source.batches():
        events.append(batch.table)
        rejects.append(batch.rejects)
    return pa.concat_tables(events), pa.concat_tables(rejects)


def _by_line(table: pa.Table, line: int) -> list[dict[str, object]]:
    return table.filter(pc.equal(table["_line"], line)).to_pylist()


def _records(df: pd.DataFrame) -> list[dict[str, object]]:
    """Rows of a pandas frame as dicts, NaN (pandas' missing float) as None."""
    return [
        {str(k): None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
        for r in df.to_dict("records")
    ]


def _shared(name: str) -> Path:
    path = (SHARED / name).resolve()
    if not path.is_dir():
        pytest.skip(f"{path} is absent (the shared datasets are not on this machine)")
    return path


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


# ---------------------------------------------------------------------------------- OULAD


def test_oulad_hand_checked_events() -> None:
    events, rejects = _read(oulad.open_source(OULAD, ReadOptions()))
    assert rejects.num_rows == 0
    assert events.num_rows == 69  # 70 lines, header included
    assert events.schema.names[:6] == CANONICAL
    assert events.select(CANONICAL).schema == pa.schema(
        [EVENT_SCHEMA.field(c).with_nullable(True) for c in CANONICAL]
    )
    # 1752 is AAA 2013J (start 2013-10-01): submitted on day 18, score 78.
    assert _by_line(events, 2) == [
        {
            "learner_id": "11391",
            "ts": datetime(2013, 10, 19, tzinfo=UTC),
            "domain": "AAA",
            "item_id": "1752",
            "outcome": 0.78,
            "duration_s": None,
            "_line": 2,
            "_raw": "1752,11391,18,0,78",
        }
    ]
    # An empty score stays an (ungraded) event with a null outcome.
    row = _by_line(events, 6)[0]
    assert (row["learner_id"], row["ts"], row["outcome"]) == (
        "721259",
        datetime(2013, 10, 23, tzinfo=UTC),
        None,
    )
    # A banked result of 1758 (AAA 2014J, start 2014-10-01) dated the day before the start.
    row = _by_line(events, 20)[0]
    assert (row["ts"], row["item_id"], row["outcome"]) == (
        datetime(2014, 9, 30, tzinfo=UTC),
        "1758",
        0.61,
    )
    # A B presentation: 14984 is BBB 2013B (start 2013-02-01), day 18.
    row = _by_line(events, 28)[0]
    assert (row["learner_id"], row["ts"], row["domain"], row["outcome"]) == (
        "29144",
        datetime(2013, 2, 19, tzinfo=UTC),
        "BBB",
        0.6,
    )


def _oulad_reference(root: Path, per_registration: bool) -> pd.DataFrame:
    """The documented OULAD mapping, written independently with pandas."""
    sub = pd.read_csv(root / "studentAssessment.csv", dtype=str, keep_default_na=False)
    sub["_line"] = np.arange(2, len(sub) + 2)
    ass = pd.read_csv(root / "assessments.csv", dtype=str, keep_default_na=False)
    df = sub.merge(ass, on="id_assessment", how="left")
    start = [
        datetime(int(p[:4]), 2 if p[4] == "B" else 10, 1, tzinfo=UTC)
        for p in df["code_presentation"]
    ]
    df["ts"] = [
        s + timedelta(days=int(d)) for s, d in zip(start, df["date_submitted"], strict=True)
    ]
    df["learner_id"] = (
        df["id_student"] + ":" + df["code_module"] + ":" + df["code_presentation"]
        if per_registration
        else df["id_student"]
    )
    df["domain"] = df["code_module"]
    df["item_id"] = df["id_assessment"]
    df["outcome"] = [float(s) / 100 if s else None for s in df["score"]]
    df["duration_s"] = None
    return df.sort_values("_line")[[*CANONICAL, "_line"]].reset_index(drop=True)


@pytest.mark.parametrize("per_registration", [False, True])
def test_oulad_matches_pandas_reference(per_registration: bool) -> None:
    options = ReadOptions(mapping={"learner_id": "registration"} if per_registration else {})
    events, _ = _read(oulad.open_source(OULAD, options))
    expected = _oulad_reference(OULAD, per_registration)
    assert events.select([*CANONICAL, "_line"]).to_pylist() == _records(expected)


def test_oulad_registration_ids_by_param_and_by_map() -> None:
    by_param, _ = _read(
        oulad.open_source(OULAD, ReadOptions(), oulad.OuladParams(learner_unit="registration"))
    )
    by_map, _ = _read(oulad.open_source(OULAD, ReadOptions(mapping={"learner_id": "registration"})))
    assert by_param.equals(by_map)
    assert _by_line(by_map, 5)[0]["learner_id"] == "603861:AAA:2013J"
    assert _by_line(by_map, 20)[0]["learner_id"] == "603861:AAA:2014J"


def test_oulad_outcomes_latest_presentation_decides() -> None:
    out = oulad.open_source(OULAD, ReadOptions()).outcomes
    assert out is not None
    table = out()
    # OULAD has no revenue: the column is left out, so a stored revenue is kept.
    assert table.schema == outcome_schema(["completed", "churned", "as_of"])
    assert "revenue" not in table.column_names
    got = {r["learner_id"]: (r["completed"], r["churned"], r["as_of"]) for r in table.to_pylist()}
    assert len(got) == 12
    d = lambda y, m, day: datetime(y, m, day, tzinfo=UTC)  # noqa: E731
    # AAA 2013J: 2013-10-01 + 268 days.
    assert got["11391"] == (True, False, d(2014, 6, 26))
    # Withdrawn in AAA 2013J, then Fail in AAA 2014J (2014-10-01 + 269 days): the latest wins.
    assert got["65002"] == (False, False, d(2015, 6, 27))
    # Pass in FFF and Withdrawn in CCC, both 2014J: completed (any), not churned (not all).
    assert got["119310"] == (True, False, d(2015, 6, 27))
    # Withdrawn from both of its 2014J modules: churned.
    assert got["124711"] == (False, True, d(2015, 6, 27))
    # CCC 2014J (269 days) and DDD 2014J (262): the later end.
    assert got["1078701"] == (True, False, d(2015, 6, 27))
    # BBB 2013B: 2013-02-01 + 240 days.
    assert got["29144"] == (False, False, d(2013, 9, 29))
    # Outcomes also cover a withdrawn student with no submission.
    assert got["305539"] == (False, True, d(2014, 6, 26))


def test_oulad_outcomes_per_registration() -> None:
    out = oulad.open_source(OULAD, ReadOptions(mapping={"learner_id": "registration"})).outcomes
    assert out is not None
    got = {r["learner_id"]: (r["completed"], r["churned"]) for r in out().to_pylist()}
    assert len(got) == 18  # one per row of studentInfo.csv
    assert got["65002:AAA:2013J"] == (False, True)
    assert got["65002:AAA:2014J"] == (False, False)
    assert got["119310:FFF:2014J"] == (True, False)
    assert got["119310:CCC:2014J"] == (False, True)


def test_oulad_rejects_other_mappings() -> None:
    with pytest.raises(InputError, match="learner_id=registration"):
        oulad.open_source(OULAD, ReadOptions(mapping={"learner_id": "code_module"}))
    with pytest.raises(InputError):
        oulad.open_source(OULAD, ReadOptions(mapping={"item_id": "id_site"}))


@pytest.mark.parametrize(
    "missing", ["studentAssessment.csv", "assessments.csv", "studentInfo.csv", "courses.csv"]
)
def test_oulad_missing_file(tmp_path: Path, missing: str) -> None:
    root = _copy(OULAD, tmp_path / "oulad")
    (root / missing).unlink()
    with pytest.raises(UnreadableSourceError, match=re.escape(missing)):
        oulad.open_source(root, ReadOptions())


def test_oulad_missing_column(tmp_path: Path) -> None:
    root = _copy(OULAD, tmp_path / "oulad")
    path = root / "studentAssessment.csv"
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace("date_submitted", "date")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MissingColumnsError) as err:
        oulad.open_source(root, ReadOptions())
    assert err.value.missing == ["date_submitted"]


def test_oulad_quarantines_malformed_rows_and_keeps_line_numbers(tmp_path: Path) -> None:
    root = _copy(OULAD, tmp_path / "oulad")
    path = root / "studentAssessment.csv"
    lines = path.read_text().splitlines()
    lines[2] = "1752,28400,soon,0,70"  # line 3: bad day
    lines[3] = "1752,65002,17,0"  # line 4: a field short
    lines[4] = "999999,603861,19,0,61"  # line 5: unknown assessment
    lines[6] = "1753,11391,53,0,eighty"  # line 7: bad score
    path.write_text("\n".join(lines) + "\n")
    events, rejects = _read(oulad.open_source(root, ReadOptions(batch_rows=7)))
    assert rejects.schema == QUARANTINE_SCHEMA
    assert rejects.select(["line", "reason", "detail", "raw"]).to_pylist() == [
        {
            "line": 3,
            "reason": "malformed_record",
            "detail": "date_submitted soon is not a whole number of days",
            "raw": "1752,28400,soon,0,70",
        },
        {
            "line": 4,
            "reason": "wrong_field_count",
            "detail": "expected 5 fields, found 4",
            "raw": "1752,65002,17,0",
        },
        {
            "line": 5,
            "reason": "malformed_record",
            "detail": "id_assessment 999999 is not in assessments.csv",
            "raw": "999999,603861,19,0,61",
        },
        {
            "line": 7,
            "reason": "malformed_record",
            "detail": "score eighty is not a number",
            "raw": "1753,11391,53,0,eighty",
        },
    ]
    assert events.num_rows + rejects.num_rows == 69
    assert 4 not in events["_line"].to_pylist()
    assert _by_line(events, 6)[0]["learner_id"] == "721259"
    assert _by_line(events, 8)[0]["_raw"] == "1753,28400,52,0,68"


# ---------------------------------------------------------------------------------- EdNet


def test_ednet_hand_checked_events() -> None:
    source = ednet.open_source(EDNET, ReadOptions())
    assert source.outcomes is None
    batches = list(source.batches())
    assert [Path(b.source).name for b in batches] == [
        "u1.csv",
        "u10342.csv",
        "u10366.csv",
        "u1802.csv",
        "u256948.csv",
        "u412749.csv",
    ]
    events = pa.concat_tables([b.table for b in batches])
    assert sum(b.rejects.num_rows for b in batches) == 0
    assert events.num_rows == 199 + 1439 + 122 + 499 + 8 + 5
    u1 = events.filter(pc.equal(events["learner_id"], "u1"))
    # q5012: part 5, correct answer c; the learner answered b in 38 s.
    assert _by_line(u1, 2) == [
        {
            "learner_id": "u1",
            "ts": datetime(2019, 8, 6, 12, 56, 30, 868000, tzinfo=UTC),
            "domain": "part5",
            "item_id": "q5012",
            "outcome": 0.0,
            "duration_s": 38.0,
            "_line": 2,
            "_raw": "1565096190868,1,q5012,b,38000",
        }
    ]
    # q4706: part 5, correct answer c, answered c.
    row = _by_line(u1, 3)[0]
    assert (row["ts"], row["outcome"], row["duration_s"]) == (
        datetime(2019, 8, 6, 12, 57, 1, 62000, tzinfo=UTC),
        1.0,
        24.0,
    )
    # An empty answer (q295, part 2) counts as wrong.
    u1802 = events.filter(pc.equal(events["learner_id"], "u1802"))
    row = _by_line(u1802, 144)[0]
    assert (row["ts"], row["domain"], row["item_id"], row["outcome"], row["duration_s"]) == (
        datetime(2019, 11, 6, 8, 25, 41, 832000, tzinfo=UTC),
        "part2",
        "q295",
        0.0,
        2.0,
    )
    assert u1802.filter(pc.equal(u1802["_raw"], "1573028741832,8678,q295,,2000")).num_rows == 1


def test_ednet_keeps_exact_duplicates_for_ingestion_to_count() -> None:
    events, _ = _read(ednet.open_source(EDNET, ReadOptions()))
    u10342 = events.filter(pc.equal(events["learner_id"], "u10342"))
    copies = [_by_line(u10342, line)[0] for line in (1417, 1418, 1419)]
    canonical = [{k: r[k] for k in CANONICAL} for r in copies]
    assert (
        canonical[0]
        == canonical[1]
        == canonical[2]
        == {
            "learner_id": "u10342",
            "ts": datetime(2019, 11, 20, 22, 23, 44, tzinfo=UTC),
            "domain": "part6",
            "item_id": "q11767",
            "outcome": 1.0,
            "duration_s": 32.0,
        }
    )
    distinct = u10342.select(CANONICAL).group_by(CANONICAL).aggregate([]).num_rows
    assert u10342.num_rows - distinct == 7


def _ednet_reference(root: Path) -> pd.DataFrame:
    """The documented EdNet KT1 mapping, written independently with pandas."""
    questions = pd.read_csv(root / "contents" / "questions.csv", dtype=str, keep_default_na=False)
    frames = []
    for path in sorted((root / "KT1").glob("*.csv")):
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        df["_line"] = np.arange(2, len(df) + 2)
        df["learner_id"] = path.stem
        frames.append(df)
    df = pd.concat(frames, ignore_index=True).merge(questions, on="question_id", how="left")
    df["ts"] = [UTC_MIDNIGHT + timedelta(milliseconds=int(ms)) for ms in df["timestamp"]]
    df["domain"] = "part" + df["part"]
    df["item_id"] = df["question_id"]
    df["outcome"] = (df["user_answer"] == df["correct_answer"]).astype(float)
    df["duration_s"] = df["elapsed_time"].astype(float) / 1000
    return df[[*CANONICAL, "_line"]]


def test_ednet_matches_pandas_reference() -> None:
    events, _ = _read(ednet.open_source(EDNET, ReadOptions()))
    expected = _ednet_reference(EDNET)
    assert events.select([*CANONICAL, "_line"]).to_pylist() == _records(expected)


def test_ednet_missing_parts(tmp_path: Path) -> None:
    root = _copy(EDNET, tmp_path / "ednet")
    (root / "contents" / "questions.csv").unlink()
    with pytest.raises(UnreadableSourceError, match=r"questions\.csv"):
        ednet.open_source(root, ReadOptions())
    root = _copy(EDNET, tmp_path / "ednet2")
    shutil.rmtree(root / "KT1")
    with pytest.raises(UnreadableSourceError, match="KT1"):
        ednet.open_source(root, ReadOptions())
    root = _copy(EDNET, tmp_path / "ednet3")
    (root / "KT1" / "u9.csv").write_text("timestamp,solving_id,question_id,elapsed_time\n")
    with pytest.raises(MissingColumnsError) as err:
        ednet.open_source(root, ReadOptions())
    assert err.value.missing == ["user_answer"]
    with pytest.raises(InputError, match="--map"):
        ednet.open_source(EDNET, ReadOptions(mapping={"learner_id": "user"}))


def test_ednet_quarantines_unknown_questions_and_bad_numbers(tmp_path: Path) -> None:
    root = _copy(EDNET, tmp_path / "ednet")
    path = root / "KT1" / "u412749.csv"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace(lines[1].split(",")[2], "q999999")
    lines[2] = "1547100000000.5" + lines[2][13:]
    lines[3] = lines[3].rsplit(",", 1)[0] + ",-"
    path.write_text("\n".join(lines) + "\n")
    events, rejects = _read(ednet.open_source(root, ReadOptions()))
    got = rejects.select(["source", "line", "detail"]).to_pylist()
    assert [(Path(str(r["source"])).name, r["line"]) for r in got] == [
        ("u412749.csv", 2),
        ("u412749.csv", 3),
        ("u412749.csv", 4),
    ]
    assert got[0]["detail"] == "question_id q999999 is not in contents/questions.csv"
    assert str(got[1]["detail"]).startswith("timestamp 1547100000000.5")
    assert got[2]["detail"] == "elapsed_time - is not a number (ms)"
    u = events.filter(pc.equal(events["learner_id"], "u412749"))
    assert u["_line"].to_pylist() == [5, 6]


# -------------------------------------------------------------------------- KDD Cup 2015

COURSE_1185 = "TAYxxh39I2LZnftBpL0LfF2NxzrCKpkx"


def test_kdd_hand_checked_events() -> None:
    events, rejects = _read(kddcup2015.open_source(KDD, ReadOptions()))
    assert rejects.num_rows == 0
    # Line 7: enrollment 28 (course 1185) on 2014-06-16: access 5, navigate 2, page_close 2,
    # video 2, the other types 0 -> four events, whatever the counts.
    assert _by_line(events, 7) == [
        {
            "learner_id": "28",
            "ts": datetime(2014, 6, 16, tzinfo=UTC),
            "domain": COURSE_1185,
            "item_id": f"{COURSE_1185}:{kind}",
            "outcome": None,
            "duration_s": None,
            "_line": 7,
            "_raw": "28,2014-06-16,5,0,2,2,0,2,0",
        }
        for kind in ("access", "navigate", "page_close", "video")
    ]
    assert _by_line(events, 2) == []  # a day without clicks gives no event
    assert pc.count_distinct(events["learner_id"]).as_py() == 34


def _kdd_reference(root: Path) -> pd.DataFrame:
    """One event per positive (enrollment, day, type) cell, written independently with pandas."""
    daily = pd.read_csv(root / "daily_activity.csv.gz", dtype={"enrollment_id": str})
    daily["_line"] = np.arange(2, len(daily) + 2)
    enr = pd.read_csv(root / "enrollments.csv", dtype=str)
    kinds = [c for c in daily.columns if c.startswith("event_")]
    long = daily.melt(["enrollment_id", "date", "_line"], kinds, "kind", "clicks")
    long = long[long["clicks"] > 0].merge(enr, on="enrollment_id")
    long["order"] = long["kind"].map({k: i for i, k in enumerate(kinds)})
    long = long.sort_values(["_line", "order"])
    long["learner_id"] = long["enrollment_id"]
    long["ts"] = [datetime.fromisoformat(d).replace(tzinfo=UTC) for d in long["date"]]
    long["domain"] = long["course_id"]
    long["item_id"] = long["course_id"] + ":" + long["kind"].str.removeprefix("event_")
    long["outcome"] = None
    long["duration_s"] = None
    return long[[*CANONICAL, "_line"]]


def test_kdd_matches_pandas_reference() -> None:
    events, _ = _read(kddcup2015.open_source(KDD, ReadOptions(batch_rows=50)))
    expected = _kdd_reference(KDD)
    assert events.select([*CANONICAL, "_line"]).to_pylist() == _records(expected)


def test_kdd_outcomes() -> None:
    out = kddcup2015.open_source(KDD, ReadOptions()).outcomes
    assert out is not None
    table = out()
    # Completion and revenue are not observed: those columns are left out.
    assert table.schema == outcome_schema(["churned", "as_of"])
    assert table.num_rows == 34
    got = {r["learner_id"]: r for r in table.to_pylist()}
    assert got["28"] == {
        "learner_id": "28",
        "churned": True,
        "as_of": datetime(2014, 7, 20, tzinfo=UTC),
    }  # window_end 2014-07-10
    assert (got["51"]["churned"], got["51"]["as_of"]) == (False, datetime(2014, 7, 18, tzinfo=UTC))
    assert sum(table["churned"].to_pylist()) == 4 * 4 + 1  # 4 per course, and enrollment 497


def test_kdd_plain_csv_reads_like_gzip(tmp_path: Path) -> None:
    root = _copy(KDD, tmp_path / "kdd")
    gz = root / "daily_activity.csv.gz"
    (root / "daily_activity.csv").write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    plain, _ = _read(kddcup2015.open_source(root, ReadOptions()))
    compressed, _ = _read(kddcup2015.open_source(KDD, ReadOptions()))
    assert plain.equals(compressed)


def test_kdd_missing_parts(tmp_path: Path) -> None:
    root = _copy(KDD, tmp_path / "kdd")
    (root / "enrollments.csv").unlink()
    with pytest.raises(UnreadableSourceError, match=r"enrollments\.csv"):
        kddcup2015.open_source(root, ReadOptions())
    root = _copy(KDD, tmp_path / "kdd2")
    (root / "daily_activity.csv.gz").unlink()
    with pytest.raises(UnreadableSourceError, match="daily_activity"):
        kddcup2015.open_source(root, ReadOptions())
    (root / "daily_activity.csv").write_text("enrollment_id,date,clicks\n28,2014-06-16,3\n")
    with pytest.raises(UnreadableSourceError, match="event_"):
        kddcup2015.open_source(root, ReadOptions())
    (root / "daily_activity.csv").write_text("enrollment_id,day,event_video\n28,2014-06-16,3\n")
    with pytest.raises(MissingColumnsError):
        kddcup2015.open_source(root, ReadOptions())


def test_kdd_quarantines_bad_rows(tmp_path: Path) -> None:
    root = _copy(KDD, tmp_path / "kdd")
    gz = root / "daily_activity.csv.gz"
    (root / "daily_activity.csv").write_text(
        "enrollment_id,date,event_access,event_video\n"
        "28,2014-06-16,2,1\n"
        "77777,2014-06-16,1,0\n"
        "28,2014-13-40,1,0\n"
        "28,2014-06-17,-1,3\n"
        "\n"
        "28,2014-06-18,0,\n"
        "51,2014-06-19,0,4\n"
    )
    gz.unlink()
    events, rejects = _read(kddcup2015.open_source(root, ReadOptions()))
    assert rejects.select(["line", "detail"]).to_pylist() == [
        {"line": 3, "detail": "enrollment_id 77777 is not in enrollments.csv"},
        {"line": 4, "detail": "date 2014-13-40 is not a YYYY-MM-DD date"},
        {"line": 5, "detail": "event_access -1 is not a click count"},
    ]
    assert [(r["_line"], r["item_id"].split(":")[1]) for r in events.to_pylist()] == [
        (2, "access"),
        (2, "video"),
        (8, "video"),
    ]


# --------------------------------------------------------------- shared plumbing / registry


def test_registry_detects_and_opens_each_layout() -> None:
    for root, fmt in ((OULAD, "oulad"), (EDNET, "ednet"), (KDD, "kddcup2015")):
        assert detect_format(root) == fmt
        assert open_any(root).name == str(root)


@settings(max_examples=25, deadline=None)
@given(
    rows=st.lists(
        st.one_of(
            st.tuples(st.integers(0, 999), st.integers(0, 999)).map(lambda t: f"{t[0]},{t[1]}"),
            st.integers(0, 999).map(str),  # one field short
            st.just("1,2,3"),  # one field too many
            st.just(""),  # empty line
        ),
        max_size=60,
    ),
    block_bytes=st.integers(16, 200),
)
def test_stream_csv_numbers_lines_like_a_naive_enumeration(
    rows: list[str], block_bytes: int
) -> None:
    expected_good = [(i + 2, r) for i, r in enumerate(rows) if r.count(",") == 1 or r == ""]
    expected_bad = [(i + 2, r) for i, r in enumerate(rows) if r.count(",") != 1 and r != ""]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        path.write_text("a,b\n" + "".join(r + "\n" for r in rows))
        blocks = list(_dataset_io.stream_csv(path, ["a", "b"], block_bytes=block_bytes))
    got_good = [
        (int(line), raw)
        for b in blocks
        for line, raw in zip(b.lines, b.raw().to_pylist(), strict=True)
    ]
    got_bad = [(r["line"], r["raw"]) for b in blocks for r in b.rejects.to_pylist()]
    # An empty line is an all-null row: its text is rebuilt as the empty fields, ",".
    assert got_good == [(line, r or ",") for line, r in expected_good]
    assert got_bad == expected_bad


@settings(max_examples=10, deadline=None)
@given(batch_rows=st.integers(1, 400))
def test_batch_size_does_not_change_the_events(batch_rows: int) -> None:
    for module, root in ((oulad, OULAD), (ednet, EDNET), (kddcup2015, KDD)):
        source = module.open_source(root, ReadOptions(batch_rows=batch_rows))
        batches = list(source.batches())
        assert all(b.table.num_rows <= batch_rows for b in batches)
        whole, _ = _read(module.open_source(root, ReadOptions()))
        assert pa.concat_tables([b.table for b in batches]).equals(whole)


# ------------------------------------------------------------------- full shared datasets


@pytest.mark.shared_data
def test_full_oulad_counts() -> None:
    root = _shared("oulad")
    events, rejects = _read(oulad.open_source(root, ReadOptions()))
    assert (events.num_rows, rejects.num_rows) == (138_259, 0)
    assert pc.count_distinct(events["learner_id"]).as_py() == 18_606
    assert events["outcome"].null_count == 134
    outcomes = oulad.open_source(root, ReadOptions()).outcomes
    assert outcomes is not None
    assert outcomes().num_rows == 22_997
    per_reg = oulad.open_source(root, ReadOptions(mapping={"learner_id": "registration"}))
    assert per_reg.outcomes is not None
    regs = per_reg.outcomes()
    # README: Pass 9,853 + Distinction 2,353 registrations completed; Withdrawn 8,175.
    assert regs.num_rows == 26_043
    assert pc.sum(regs["completed"]).as_py() == 9_853 + 2_353
    assert pc.sum(regs["churned"]).as_py() == 8_175


@pytest.mark.shared_data
def test_full_ednet_counts_match_the_readme_table() -> None:
    root = _shared("ednet_sample")
    events, rejects = _read(ednet.open_source(root, ReadOptions()))
    assert (events.num_rows, rejects.num_rows) == (174_398, 0)
    stats = events.group_by("learner_id").aggregate(
        [("outcome", "count"), ("outcome", "mean"), ("item_id", "count_distinct")]
    )
    got = {
        r["learner_id"]: (
            r["outcome_count"],
            r["item_id_count_distinct"],
            round(r["outcome_mean"], 2),
        )
        for r in stats.to_pylist()
    }
    assert got["u10342"] == (22_032, 8_558, 0.81)
    assert got["u1802"] == (14_181, 8_708, 0.64)
    assert got["u412749"] == (5, 5, 0.0)
    assert len(got) == 17
    dup = events.select(CANONICAL).group_by(CANONICAL).aggregate([])
    assert events.num_rows - dup.num_rows == 52
    u10342 = events.filter(pc.equal(events["learner_id"], "u10342")).select(CANONICAL)
    assert u10342.num_rows - u10342.group_by(CANONICAL).aggregate([]).num_rows == 36


@pytest.mark.shared_data
def test_full_kdd_counts() -> None:
    root = _shared("kddcup2015_daily")
    source = kddcup2015.open_source(root, ReadOptions())
    events, rejects = _read(source)
    assert (events.num_rows, rejects.num_rows) == (397_389, 0)
    assert pc.count_distinct(events["learner_id"]).as_py() == 45_812
    assert pc.count_distinct(events["domain"]).as_py() == 31
    assert source.outcomes is not None
    outcomes = source.outcomes()
    assert outcomes.num_rows == 45_812
    assert pc.sum(outcomes["churned"]).as_py() == 38_113
