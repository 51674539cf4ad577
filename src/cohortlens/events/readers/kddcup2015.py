"""KDD Cup 2015 (XuetangX) daily-count adapter: one event per active (enrollment, day, type).

The directory holds ``daily_activity.csv.gz`` (or ``.csv``; the main file: ``enrollment_id``,
``date`` and one ``event_<type>`` click count per type; ``_line`` is its line, header = 1) and
``enrollments.csv`` (``enrollment_id``, ``course_id``, ``window_end``, ``dropout``). Each cell
with a count above 0 becomes one event (a day-row gives 0 to 7 events, all with its line):

* ``learner_id`` = ``enrollment_id`` (the dataset's unit; usernames are known for 20 % only);
* ``ts`` = ``date`` at 00:00 UTC (day resolution; the days are probably Beijing calendar days);
* ``domain`` = ``course_id`` (from ``enrollments.csv``);
* ``item_id`` = ``"<course_id>:<type>"`` (e.g. ``...:video``): the derivative has no module ids;
* ``outcome`` = null (ungraded: no correctness) and ``duration_s`` = null;
* the click count itself is not kept (one event per active day-type cell, whatever the count):
  the canonical schema has no count column, so click intensity within a day is lost.

Rows with an ``enrollment_id`` missing from ``enrollments.csv``, a bad date, or a count that is
not a non-negative integer are quarantined. Outcomes (one per enrollment): ``churned`` =
``dropout == 1`` and ``as_of`` = ``window_end`` + 10 days (the last day of the look-ahead that
decides dropout); ``completed`` and ``revenue`` are not observed, so the table has no such
columns and ingesting it keeps values stored from elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cohortlens.errors import UnreadableSourceError
from cohortlens.events.readers import _dataset_io as ds
from cohortlens.events.schema import outcome_schema
from cohortlens.events.source import RawBatch, ReadOptions, Source, display_name

_DAILY_NAMES = ("daily_activity.csv.gz", "daily_activity.csv")
_ENROLLMENTS = "enrollments.csv"
_DAILY_COLUMNS = ("enrollment_id", "date")
_ENROLLMENT_COLUMNS = ("enrollment_id", "course_id", "window_end", "dropout")
_EVENT_PREFIX = "event_"
_DECISION_DAYS = 10


def open_source(path: Path, options: ReadOptions) -> Source:
    """Open a KDD Cup 2015 daily directory; check its files and columns before returning."""
    ds.reject_mapping(options.mapping, "KDD Cup 2015")
    ds.require_files(path, (_ENROLLMENTS,), "KDD Cup 2015 daily")
    main = next((path / n for n in _DAILY_NAMES if (path / n).is_file()), None)
    if main is None:
        raise UnreadableSourceError(str(path), f"missing file {' or '.join(_DAILY_NAMES)}")
    header = ds.require_columns(main, _DAILY_COLUMNS)
    types = [c for c in header if c.startswith(_EVENT_PREFIX) and len(c) > len(_EVENT_PREFIX)]
    if not types:
        raise UnreadableSourceError(str(main), f"no click-count columns {_EVENT_PREFIX}<type>")
    enrollments = ds.read_side_table(path / _ENROLLMENTS, _ENROLLMENT_COLUMNS)

    def batches() -> Iterator[RawBatch]:
        for block in ds.stream_csv(main, header):
            table, rejects = _events(str(main), block, types, enrollments)
            yield from ds.emit(str(main), table, rejects, options.batch_rows)

    return Source(
        name=display_name(path),
        columns=ds.EVENT_COLUMNS,
        batches=batches,
        outcomes=lambda: _outcomes(enrollments),
    )


def _events(
    source: str, block: ds.TextBlock, types: list[str], enrollments: pa.Table
) -> tuple[pa.Table, pa.Table]:
    """Unpivot one block of day-rows into events (one per positive cell) and quarantine rows."""
    text = block.table
    enrollment = text["enrollment_id"].combine_chunks()
    day_text = text["date"].combine_chunks()
    day_us, bad_day = ds.parse_date_us(day_text)
    row = ds.lookup(enrollment, enrollments["enrollment_id"].combine_chunks())
    unknown = pc.and_(pc.is_valid(enrollment), pc.is_null(row)).to_numpy(zero_copy_only=False)
    problems = [
        ds.Problem(unknown, "enrollment_id", enrollment, f"is not in {_ENROLLMENTS}"),
        ds.Problem(bad_day, "date", day_text, "is not a YYYY-MM-DD date"),
    ]
    counts = np.zeros((text.num_rows, len(types)), dtype=np.int64)
    for j, name in enumerate(types):  # one pass per event type (7), vectorized over rows
        cells = text[name].combine_chunks()
        values, bad = ds.parse_number(cells, pa.int64())
        counts[:, j] = pc.fill_null(values, 0).to_numpy(zero_copy_only=False)
        negative = counts[:, j] < 0
        problems.append(ds.Problem(bad | negative, name, cells, "is not a click count"))
    keep, rejects = ds.split_malformed(source, block, problems)
    rows, cols = np.nonzero((counts > 0) & keep[:, None])
    take = pa.array(rows, pa.int64())
    course = enrollments["course_id"].combine_chunks().take(row).take(take)
    kind = pa.array([t[len(_EVENT_PREFIX) :] for t in types], pa.string()).take(
        pa.array(cols, pa.int64())
    )
    events = ds.event_table(
        {
            "learner_id": enrollment.take(take),
            "ts": ds.as_timestamp(day_us.take(take)),
            "domain": course,
            "item_id": pc.binary_join_element_wise(course, kind, ":"),
            "outcome": ds.null_floats(rows.size),
            "duration_s": ds.null_floats(rows.size),
        },
        block.lines[rows],
        block.raw(rows),
    )
    return events, rejects


def _outcomes(enrollments: pa.Table) -> pa.Table:
    """Outcomes (churned and as_of only), one row per enrollment (see the module docstring)."""
    dropout = enrollments["dropout"].combine_chunks()
    window_end, _ = ds.parse_date_us(enrollments["window_end"].combine_chunks())
    as_of = pc.add(window_end, ds.days_to_us(pa.scalar(_DECISION_DAYS, pa.int64())))
    known = pc.is_in(dropout, pa.array(["0", "1"]))
    out = pa.table(
        {
            "learner_id": enrollments["enrollment_id"].combine_chunks(),
            "churned": pc.if_else(known, pc.equal(dropout, "1"), None),
            "as_of": ds.as_timestamp(as_of),
        },
        schema=outcome_schema(["churned", "as_of"]),
    )
    return out.filter(pc.is_valid(out["learner_id"]))
