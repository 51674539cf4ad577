"""Open University Learning Analytics Dataset (OULAD) adapter: graded submissions as events.

One event per row of ``studentAssessment.csv`` (the main file; ``_line`` is its line, header = 1),
joined to ``assessments.csv`` on ``id_assessment``:

* ``learner_id`` = ``id_student`` (default), or one id per registration
  ``"<id_student>:<code_module>:<code_presentation>"`` (``learner_unit="registration"``, or
  ``--map learner_id=registration``) when repeat registrations must stay apart;
* ``ts`` = presentation start + ``date_submitted`` days at 00:00 UTC, the start being
  ``YYYY-02-01`` for ``YYYYB`` and ``YYYY-10-01`` for ``YYYYJ`` (exact dates were never
  published: day resolution, approximate). Banked results (``is_banked`` = 1) keep the
  carried-over date the file gives (usually just before the start);
* ``domain`` = ``code_module``; ``item_id`` = ``id_assessment``;
* ``outcome`` = ``score / 100``. An empty score (134 rows) is passed through as null, so the
  submission is kept as an *ungraded* event rather than dropped or imputed;
* ``duration_s`` = null (not recorded).

Outcomes come from ``studentInfo.csv``: ``completed`` = ``final_result`` in (Pass, Distinction),
``churned`` = Withdrawn, ``as_of`` = presentation start +
``module_presentation_length`` days (``courses.csv``). Per student, the registrations of the
latest presentation (by start date) decide: completed if any of them completed, churned if all
of them were withdrawn, ``as_of`` the latest end among them. OULAD has no revenue: the table
has no ``revenue`` column, so ingesting it keeps a revenue stored from elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from cohortlens.errors import InputError
from cohortlens.events.readers import _dataset_io as ds
from cohortlens.events.schema import outcome_schema
from cohortlens.events.source import RawBatch, ReadOptions, Source, display_name

LearnerUnit = Literal["student", "registration"]

_SUBMISSIONS = "studentAssessment.csv"
_ASSESSMENTS = "assessments.csv"
_STUDENTS = "studentInfo.csv"
_COURSES = "courses.csv"
_SUBMISSION_COLUMNS = ("id_assessment", "id_student", "date_submitted", "score")
_ASSESSMENT_COLUMNS = ("id_assessment", "code_module", "code_presentation")
_STUDENT_COLUMNS = ("code_module", "code_presentation", "id_student", "final_result")
_COURSE_COLUMNS = ("code_module", "code_presentation", "module_presentation_length")
_COMPLETED = ("Pass", "Distinction")
_NOT_COMPLETED = ("Fail", "Withdrawn")
_CHURNED = "Withdrawn"
#: ``--map learner_id=<value>`` spellings of the learner unit.
_UNIT_BY_MAPPING: dict[str, LearnerUnit] = {"id_student": "student", "registration": "registration"}


@dataclass(frozen=True)
class OuladParams:
    """OULAD-specific choices.

    Attributes:
        learner_unit: ``student`` (one learner per ``id_student``) or ``registration`` (one
            per module-presentation registration, so repeat attempts stay apart).
    """

    learner_unit: LearnerUnit = "student"


def open_source(path: Path, options: ReadOptions, params: OuladParams | None = None) -> Source:
    """Open an OULAD directory; check its files and columns before returning."""
    params = params or _params_from_mapping(options)
    ds.require_files(path, (_SUBMISSIONS, _ASSESSMENTS, _STUDENTS, _COURSES), "OULAD")
    main = path / _SUBMISSIONS
    header = ds.require_columns(main, _SUBMISSION_COLUMNS)
    ds.require_columns(path / _STUDENTS, _STUDENT_COLUMNS)
    ds.require_columns(path / _COURSES, _COURSE_COLUMNS)
    assessments = _assessment_starts(path / _ASSESSMENTS)

    def batches() -> Iterator[RawBatch]:
        for block in ds.stream_csv(main, header):
            table, rejects = _events(str(main), block, assessments, params.learner_unit)
            yield from ds.emit(str(main), table, rejects, options.batch_rows)

    return Source(
        name=display_name(path),
        columns=ds.EVENT_COLUMNS,
        batches=batches,
        outcomes=lambda: _outcomes(path, params.learner_unit),
    )


def _params_from_mapping(options: ReadOptions) -> OuladParams:
    """``--map learner_id=registration`` selects per-registration learners; nothing else maps."""
    mapping = dict(options.mapping)
    unit = mapping.pop("learner_id", "id_student")
    if mapping or unit not in _UNIT_BY_MAPPING:
        raise InputError(
            "the OULAD layout has fixed columns; the only --map accepted is "
            "learner_id=id_student or learner_id=registration"
        )
    return OuladParams(learner_unit=_UNIT_BY_MAPPING[unit])


def _presentation_start_us(code: pa.Array) -> pa.Array:
    """Approximate start (int64 µs, 00:00 UTC) of ``YYYYB``/``YYYYJ``; null for other codes."""
    year = pc.utf8_slice_codeunits(code, 0, 4)
    month_day = pc.case_when(
        pc.make_struct(pc.ends_with(code, "B"), pc.ends_with(code, "J")),
        pa.scalar("-02-01"),
        pa.scalar("-10-01"),
    )
    well_formed = pc.fill_null(pc.match_substring_regex(code, r"^\d{4}[BJ]$"), False)
    text = pc.if_else(well_formed, pc.binary_join_element_wise(year, month_day, ""), None)
    start, _ = ds.parse_date_us(text)
    return start


def _assessment_starts(path: Path) -> pa.Table:
    """``assessments.csv`` with each assessment's presentation start (``start_us``)."""
    table = ds.read_side_table(path, _ASSESSMENT_COLUMNS)
    return pa.table(
        {
            "id_assessment": table["id_assessment"].combine_chunks(),
            "code_module": table["code_module"].combine_chunks(),
            "code_presentation": table["code_presentation"].combine_chunks(),
            "start_us": _presentation_start_us(table["code_presentation"].combine_chunks()),
        }
    )


def _registration_ids(student: pa.Array, module: pa.Array, presentation: pa.Array) -> pa.Array:
    """``"<id_student>:<code_module>:<code_presentation>"`` (null if any part is null)."""
    out: pa.Array = pc.binary_join_element_wise(student, module, presentation, ":")
    return out


def _events(
    source: str, block: ds.TextBlock, assessments: pa.Table, unit: LearnerUnit
) -> tuple[pa.Table, pa.Table]:
    """Canonical events of one block of submissions, and the block's quarantine rows."""
    text = block.table
    id_assessment = text["id_assessment"].combine_chunks()
    id_student = text["id_student"].combine_chunks()
    days, bad_days = ds.parse_number(text["date_submitted"].combine_chunks(), pa.int64())
    score, bad_score = ds.parse_number(text["score"].combine_chunks(), pa.float64())
    row = ds.lookup(id_assessment, assessments["id_assessment"])
    unknown = pc.and_(pc.is_valid(id_assessment), pc.is_null(row)).to_numpy(zero_copy_only=False)
    keep, rejects = ds.split_malformed(
        source,
        block,
        [
            ds.Problem(
                bad_days,
                "date_submitted",
                text["date_submitted"].combine_chunks(),
                "is not a whole number of days",
            ),
            ds.Problem(bad_score, "score", text["score"].combine_chunks(), "is not a number"),
            ds.Problem(unknown, "id_assessment", id_assessment, f"is not in {_ASSESSMENTS}"),
        ],
    )
    module = assessments["code_module"].take(row)
    start = assessments["start_us"].take(row)
    learner = (
        id_student
        if unit == "student"
        else _registration_ids(id_student, module, assessments["code_presentation"].take(row))
    )
    events = ds.event_table(
        {
            "learner_id": learner,
            "ts": ds.as_timestamp(pc.add(start, ds.days_to_us(days))),
            "domain": module,
            "item_id": id_assessment,
            "outcome": pc.divide(score, 100.0),
            "duration_s": ds.null_floats(text.num_rows),
        },
        block.lines,
        block.raw(),
    )
    return events.filter(pa.array(keep)), rejects


def _registrations(path: Path, unit: LearnerUnit) -> pa.Table:
    """One row per registration: student, learner id, start, end (µs) and result flags."""
    info = ds.read_side_table(path / _STUDENTS, _STUDENT_COLUMNS)
    courses = ds.read_side_table(path / _COURSES, _COURSE_COLUMNS)
    length_days, _ = ds.parse_number(
        courses["module_presentation_length"].combine_chunks(), pa.int64()
    )
    course_key = pc.binary_join_element_wise(
        courses["code_module"].combine_chunks(), courses["code_presentation"].combine_chunks(), ":"
    )
    module = info["code_module"].combine_chunks()
    presentation = info["code_presentation"].combine_chunks()
    student = info["id_student"].combine_chunks()
    result = info["final_result"].combine_chunks()
    start = _presentation_start_us(presentation)
    row = ds.lookup(pc.binary_join_element_wise(module, presentation, ":"), course_key)
    end = pc.add(start, ds.days_to_us(length_days.take(row)))
    known = pc.is_in(result, pa.array(_COMPLETED + _NOT_COMPLETED))
    completed = pc.if_else(known, pc.is_in(result, pa.array(_COMPLETED)), None)
    churned = pc.if_else(known, pc.equal(result, _CHURNED), None)
    learner = student if unit == "student" else _registration_ids(student, module, presentation)
    return pa.table(
        {
            "id_student": student,
            "learner_id": learner,
            "start_us": start,
            "end_us": end,
            "completed": completed,
            "churned": churned,
        }
    )


def _outcomes(path: Path, unit: LearnerUnit) -> pa.Table:
    """Outcomes (no revenue: OULAD has none), one row per learner (see the module docstring)."""
    regs = _registrations(path, unit)
    regs = regs.filter(pc.is_valid(regs["learner_id"]))
    if unit == "student":
        regs = _latest_presentation(regs)
    grouped = regs.group_by("learner_id").aggregate(
        [("completed", "any"), ("churned", "all"), ("end_us", "max")]
    )
    out = pa.table(
        {
            "learner_id": grouped["learner_id"],
            "completed": grouped["completed_any"],
            "churned": grouped["churned_all"],
            "as_of": ds.as_timestamp(grouped["end_us_max"].combine_chunks()),
        },
        schema=outcome_schema(["completed", "churned", "as_of"]),
    )
    return out.sort_by("learner_id")


def _latest_presentation(regs: pa.Table) -> pa.Table:
    """Keep each student's registrations that start on their latest start date."""
    start = pc.fill_null(regs["start_us"], pa.scalar(-(2**62), pa.int64()))
    regs = regs.set_column(regs.schema.get_field_index("start_us"), "start_us", start)
    latest = regs.group_by("learner_id").aggregate([("start_us", "max")])
    regs = regs.join(latest, "learner_id")
    return regs.filter(pc.equal(regs["start_us"], regs["start_us_max"]))
