"""No input bytes may crash a reader: random, truncated and mutated files end in rows or an
InputError (exit 2), never another exception (exit 1), and never a traceback on stderr.

Every reader is fed through ``open_source``, all its batches and validation, as ``ingest``
does; the dataset adapters get one of their files damaged; outcomes files go through
``read_outcomes``. Unraisable exceptions (a traceback pyarrow prints when a callback fails)
and exceptions in reader threads are errors here too.
"""

from __future__ import annotations

import gzip
import io
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import REPO

from cohortlens.errors import CohortlensError
from cohortlens.events.outcomes import read_outcomes
from cohortlens.events.readers import open_source
from cohortlens.events.source import ReadOptions
from cohortlens.events.validate import validate_batch

pytestmark = [
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning"),
]

DATA = REPO / "tests" / "data"
CSV = (
    b"learner_id,ts,item_id,domain,outcome,duration_s\n"
    b'L1,2024-01-01T10:00:00Z,i1,d,0.5,3\nL2,1704103200,"i,2",d,,\n'
    b'L3,2024-01-02,i3,"multi\nline",1,\n'
)
JSONL = (
    b'{"learner_id":"L1","ts":"2024-01-01T10:00:00Z","item_id":"i1","outcome":0.5}\n'
    b'{"learner_id":2,"ts":1704103200,"item_id":"i2","domain":"d"}\n'
)
XAPI = (
    b'[{"id":"3d5a1c8e-0000-4000-8000-000000000001","actor":{"mbox":"mailto:a@b.c"},'
    b'"verb":{"id":"http://adlnet.gov/expapi/verbs/answered"},"object":{"id":"http://x/q1"},'
    b'"result":{"score":{"scaled":0.5},"duration":"PT30S"},"timestamp":"2024-01-01T00:00:00Z"}]'
)
OUTCOMES = b"learner_id,completed,churned,revenue,as_of\na,true,0,1.5,2024-01-01\nb,,yes,,\n"


def _parquet() -> bytes:
    sink = io.BytesIO()
    pq.write_table(
        pa.table({"learner_id": ["a", "b"], "ts": ["2024-01-01", "x"], "item_id": ["i", "j"]}),
        sink,
    )
    return sink.getvalue()


SEEDS: dict[str, bytes] = {
    "csv": CSV,
    "tsv": CSV.replace(b",", b"\t"),
    "csv.gz": gzip.compress(CSV),
    "jsonl": JSONL,
    "jsonl.gz": gzip.compress(JSONL),
    "json": XAPI,
    "parquet": _parquet(),
}
ENCODINGS = st.sampled_from([None, None, "utf-8", "utf-16", "utf-16-le", "cp1252", "latin-1"])
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def damaged(draw: st.DrawFn, seed: bytes) -> bytes:
    """Random bytes, a truncation of ``seed``, or ``seed`` with a few bytes changed."""
    kind = draw(st.sampled_from(["random", "truncated", "mutated", "gzip-truncated"]))
    if kind == "random":
        return draw(st.binary(max_size=800))
    if kind == "truncated":
        return seed[: draw(st.integers(0, len(seed)))]
    if kind == "gzip-truncated":
        packed = gzip.compress(seed)
        return packed[: draw(st.integers(0, len(packed)))]
    data = bytearray(seed)
    special = st.sampled_from([0, 0x0A, 0x0D, 0x22, 0x2C, 0x7B, 0x7D, 0xE9, 0xFF, 0xFE, 0xEF])
    for _ in range(draw(st.integers(1, 12))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.one_of(special, st.integers(0, 255)))
    return bytes(data)


def drain(path: Path, fmt: str | None, options: ReadOptions) -> None:
    """Read ``path`` as ingest would; a cohortlens error is a fine answer, nothing else is."""
    try:
        source = open_source(path, fmt, options)
        for batch in source.batches():
            assert batch.n_rows == batch.table.num_rows + batch.rejects.num_rows
            validate_batch(batch, ts_unit=options.ts_unit)
        if source.outcomes is not None:
            source.outcomes()
    except CohortlensError:
        pass


@FUZZ
@given(ext=st.sampled_from(sorted(SEEDS)), data=st.data(), encoding=ENCODINGS)
def test_file_readers_answer_any_bytes_with_rows_or_an_input_error(
    ext: str, data: st.DataObject, encoding: str | None
) -> None:
    content = data.draw(damaged(SEEDS[ext]))
    batch_rows = data.draw(st.sampled_from([1, 2, 1 << 18]))
    options = ReadOptions(batch_rows=batch_rows, encoding=encoding)
    with tempfile.TemporaryDirectory(prefix="fuzz") as tmp:
        path = Path(tmp) / f"input.{ext}"
        path.write_bytes(content)
        drain(path, None, options)
        if ext in ("csv", "jsonl"):  # the same bytes under another reader
            drain(path, "xapi" if ext == "jsonl" else "jsonl", options)


@FUZZ
@given(data=st.data(), max_field_bytes=st.sampled_from([1, 7, 40, 1 << 26]))
def test_the_csv_record_limit_is_an_input_error(data: st.DataObject, max_field_bytes: int) -> None:
    content = data.draw(damaged(CSV))
    with tempfile.TemporaryDirectory(prefix="fuzz") as tmp:
        path = Path(tmp) / "input.csv"
        path.write_bytes(content)
        drain(path, None, ReadOptions(batch_rows=2, max_field_bytes=max_field_bytes))


def _dataset_files(fmt: str) -> list[Path]:
    return sorted(p.relative_to(DATA / fmt) for p in (DATA / fmt).rglob("*.csv*"))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(["oulad", "ednet", "kddcup2015"]), data=st.data())
def test_dataset_adapters_answer_a_damaged_file_with_rows_or_an_input_error(
    fmt: str, data: st.DataObject
) -> None:
    victim = data.draw(st.sampled_from(_dataset_files(fmt)))
    with tempfile.TemporaryDirectory(prefix="fuzz") as tmp:
        root = Path(tmp) / fmt
        shutil.copytree(DATA / fmt, root)
        raw = (root / victim).read_bytes()
        zipped = victim.name.endswith(".gz")
        text = (gzip.decompress(raw) if zipped else raw)[:4000]
        content = data.draw(damaged(text))
        if zipped and data.draw(st.booleans()):
            content = gzip.compress(content)
        (root / victim).write_bytes(content)
        drain(root, fmt, ReadOptions(batch_rows=data.draw(st.sampled_from([16, 1 << 18]))))


@FUZZ
@given(ext=st.sampled_from(["csv", "parquet"]), data=st.data(), encoding=ENCODINGS)
def test_outcome_files_answer_any_bytes_with_a_table_or_an_input_error(
    ext: str, data: st.DataObject, encoding: str | None
) -> None:
    seed = OUTCOMES if ext == "csv" else _outcomes_parquet()
    if ext == "csv" and data.draw(st.booleans()):  # any header: repeated, missing, foreign
        names = st.sampled_from(["learner_id", "completed", "churned", "revenue", "as_of", "x"])
        header = data.draw(st.lists(names, min_size=1, max_size=6))
        values = st.sampled_from(["", "a", "1", "true", "no", "2024-01-01", "1e3", '"q,"'])
        rows = data.draw(st.lists(st.lists(values, min_size=1, max_size=7), max_size=4))
        seed = "\n".join(",".join(r) for r in [header, *rows]).encode()
    content = data.draw(damaged(seed))
    with tempfile.TemporaryDirectory(prefix="fuzz") as tmp:
        path = Path(tmp) / f"outcomes.{ext}"
        path.write_bytes(content)
        try:
            table = read_outcomes(path, encoding)
        except CohortlensError:
            return
        assert table.column_names[0] == "learner_id"
        assert table["learner_id"].null_count == 0


def _outcomes_parquet() -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({"learner_id": ["a"], "completed": [True], "revenue": [1.5]}), sink)
    return sink.getvalue()
