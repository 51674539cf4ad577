"""Ingest SQL that DuckDB and PostgreSQL both accept: the outcomes merge, reject examples.

Statements use ``?`` placeholders (the PostgreSQL store turns them into ``%s``).
"""

from __future__ import annotations

from collections.abc import Sequence

from cohortlens.errors import InputError
from cohortlens.events.schema import OUTCOME_SCHEMA

#: Columns an outcomes table may carry besides ``learner_id``.
OUTCOME_COLUMNS: tuple[str, ...] = tuple(n for n in OUTCOME_SCHEMA.names if n != "learner_id")


def outcome_columns(names: Sequence[str]) -> list[str]:
    """The outcome columns of a table with column ``names`` (checked: see put_outcomes)."""
    unknown = sorted(set(names) - {"learner_id", *OUTCOME_COLUMNS})
    carried = [c for c in OUTCOME_COLUMNS if c in names]
    if "learner_id" not in names or unknown or not carried:
        raise InputError(
            f"an outcomes table needs learner_id and at least one of "
            f"{', '.join(OUTCOME_COLUMNS)}, and nothing else; got {', '.join(names)}"
        )
    return carried


def merge_outcomes_sql(columns: Sequence[str], staged: str) -> tuple[str, str]:
    """(count, upsert) statements merging the outcome ``columns`` of table ``staged``.

    ``staged`` holds ``learner_id``, the ``columns`` and ``seq`` (the row order): the last row
    of a learner wins. The count statement returns one row (inserted, updated, unchanged); run
    it before the upsert. The upsert writes only ``columns`` (and the ingest id, the one ``?``)
    of learners that are new or whose values differ, so the other columns keep their stored
    values and unchanged learners keep the ingest that last changed them.
    """
    cols = ", ".join(columns)
    incoming = (
        f"(SELECT DISTINCT ON (learner_id) learner_id, {cols} FROM {staged} "
        "ORDER BY learner_id, seq DESC) i LEFT JOIN outcomes o ON o.learner_id = i.learner_id"
    )
    changed = "(" + " OR ".join(f"i.{c} IS DISTINCT FROM o.{c}" for c in columns) + ")"
    count = (
        "SELECT count(*) FILTER (WHERE o.learner_id IS NULL), "
        f"count(*) FILTER (WHERE o.learner_id IS NOT NULL AND {changed}), "
        f"count(*) FILTER (WHERE o.learner_id IS NOT NULL AND NOT {changed}) FROM {incoming}"
    )
    updates = ", ".join(f"{c} = excluded.{c}" for c in (*columns, "ingest_id"))
    upsert = (
        f"INSERT INTO outcomes (learner_id, {cols}, ingest_id) "
        f"SELECT i.learner_id, {', '.join(f'i.{c}' for c in columns)}, ? FROM {incoming} "
        f"WHERE o.learner_id IS NULL OR {changed} "
        f"ON CONFLICT (learner_id) DO UPDATE SET {updates}"
    )
    return count, upsert


#: Rejected rows of one source of one ingest, the first ``?`` per reason by line (params:
#: ingest id, source, rows per reason).
REJECT_EXAMPLES_SQL = (
    "SELECT reason, line, detail, raw FROM (SELECT reason, line, detail, raw, row_number() "
    "OVER (PARTITION BY reason ORDER BY line NULLS LAST) AS k FROM quarantine "
    "WHERE ingest_id = ? AND source = ?) q WHERE k <= ? ORDER BY reason, k"
)
