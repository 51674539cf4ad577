"""EdNet KT1 adapter: every answered question of every learner file as one event.

The directory holds ``KT1/<learner>.csv`` (one file per learner: ``timestamp``, ``question_id``,
``user_answer``, ``elapsed_time``; ``_line`` is the line in that file, header = 1) and
``contents/questions.csv`` (``question_id``, ``correct_answer``, ``part``):

* ``learner_id`` = the file name without ``.csv`` (``u10342``);
* ``ts`` = ``timestamp`` (epoch milliseconds, UTC);
* ``domain`` = ``"part<N>"`` from ``questions.part`` (TOEIC parts 1-7) via ``question_id``;
* ``item_id`` = ``question_id``;
* ``outcome`` = 1.0 if ``user_answer`` equals ``questions.correct_answer`` else 0.0; an empty
  answer (about 100 rows) counts as wrong (0.0): the learner was shown the question and did not
  answer it;
* ``duration_s`` = ``elapsed_time`` / 1000.

Rows whose ``question_id`` is not in ``questions.csv`` are quarantined (no domain, no grading).
Exact duplicate rows (52 here, 36 of them in ``u10342``) are *not* removed: their canonical
fields are identical, so the derived ``event_id`` collides and ingestion counts them as
duplicates. EdNet has no learner outcomes (``Source.outcomes`` is ``None``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from cohortlens.errors import UnreadableSourceError
from cohortlens.events.readers import _dataset_io as ds
from cohortlens.events.source import RawBatch, ReadOptions, Source, display_name

_KT1 = "KT1"
_QUESTIONS = "contents/questions.csv"
_ANSWER_COLUMNS = ("timestamp", "question_id", "user_answer", "elapsed_time")
_QUESTION_COLUMNS = ("question_id", "correct_answer", "part")
_US_PER_MS = 1000


def open_source(path: Path, options: ReadOptions) -> Source:
    """Open an EdNet directory (``KT1/`` + ``contents/questions.csv``); check every header."""
    ds.reject_mapping(options.mapping, "EdNet")
    ds.require_files(path, (_QUESTIONS,), "EdNet KT1")
    learner_files = sorted((path / _KT1).glob("*.csv")) if (path / _KT1).is_dir() else []
    if not learner_files:
        raise UnreadableSourceError(str(path), f"no learner files {_KT1}/<learner>.csv")
    headers = {f: ds.require_columns(f, _ANSWER_COLUMNS) for f in learner_files}
    questions = ds.read_side_table(path / _QUESTIONS, _QUESTION_COLUMNS)
    catalogue = pa.table(
        {
            "question_id": questions["question_id"].combine_chunks(),
            "correct_answer": questions["correct_answer"].combine_chunks(),
            "domain": pc.binary_join_element_wise(
                pa.scalar("part"), questions["part"].combine_chunks(), ""
            ),
        }
    )

    def batches() -> Iterator[RawBatch]:
        for learner_file, header in headers.items():
            source = str(learner_file)
            for block in ds.stream_csv(learner_file, header):
                table, rejects = _events(source, learner_file.stem, block, catalogue)
                yield from ds.emit(source, table, rejects, options.batch_rows)

    return Source(name=display_name(path), columns=ds.EVENT_COLUMNS, batches=batches)


def _events(
    source: str, learner: str, block: ds.TextBlock, catalogue: pa.Table
) -> tuple[pa.Table, pa.Table]:
    """Canonical events of one block of a learner file, and the block's quarantine rows."""
    text = block.table
    n = text.num_rows
    question = text["question_id"].combine_chunks()
    stamp = text["timestamp"].combine_chunks()
    elapsed = text["elapsed_time"].combine_chunks()
    ms, bad_ms = ds.parse_number(stamp, pa.int64())
    elapsed_ms, bad_elapsed = ds.parse_number(elapsed, pa.float64())
    row = ds.lookup(question, catalogue["question_id"])
    unknown = pc.and_(pc.is_valid(question), pc.is_null(row)).to_numpy(zero_copy_only=False)
    keep, rejects = ds.split_malformed(
        source,
        block,
        [
            ds.Problem(bad_ms, "timestamp", stamp, "is not an integer (epoch ms)"),
            ds.Problem(bad_elapsed, "elapsed_time", elapsed, "is not a number (ms)"),
            ds.Problem(unknown, "question_id", question, f"is not in {_QUESTIONS}"),
        ],
    )
    answer = pc.fill_null(text["user_answer"].combine_chunks(), "")
    correct = pc.equal(answer, catalogue["correct_answer"].take(row))
    events = ds.event_table(
        {
            "learner_id": pa.repeat(pa.scalar(learner), n),
            "ts": ds.as_timestamp(pc.multiply(ms, pa.scalar(_US_PER_MS, pa.int64()))),
            "domain": catalogue["domain"].take(row),
            "item_id": question,
            "outcome": pc.cast(correct, pa.float64()),
            "duration_s": pc.divide(elapsed_ms, 1000.0),
        },
        block.lines,
        block.raw(),
    )
    return events.filter(pa.array(keep)), rejects
