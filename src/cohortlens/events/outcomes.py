"""Read a learner-outcomes table (Parquet or CSV) into ``OUTCOME_SCHEMA``."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from cohortlens.errors import InputError, MissingColumnsError, UnreadableSourceError
from cohortlens.events.schema import OUTCOME_SCHEMA


def read_outcomes(path: Path) -> pa.Table:
    """Load outcomes; ``learner_id`` is required, the other columns are optional.

    Booleans accept true/false/1/0/yes/no; a value that is none of these fails the whole file
    with the offending row number, since outcomes are few and a silent guess would bias results.
    """
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    name = str(path)
    try:
        if name.endswith((".parquet", ".pq")):
            rel = con.read_parquet(name)
        else:
            rel = con.read_csv(name, all_varchar=True)
    except duckdb.Error as exc:
        raise UnreadableSourceError(name, str(exc).splitlines()[0]) from exc
    cols = rel.columns
    if "learner_id" not in cols:
        raise MissingColumnsError(name, ["learner_id"], list(cols))
    con.register("src", rel.to_arrow_table())

    def boolean(c: str) -> str:
        if c not in cols:
            return "CAST(NULL AS BOOLEAN)"
        return f"TRY_CAST(NULLIF(TRIM(CAST({c} AS VARCHAR)), '') AS BOOLEAN)"

    def raw(c: str) -> str:
        return f"NULLIF(TRIM(CAST({c} AS VARCHAR)), '')" if c in cols else "NULL"

    revenue = (
        "TRY_CAST(NULLIF(TRIM(CAST(revenue AS VARCHAR)), '') AS DOUBLE)"
        if "revenue" in cols
        else "CAST(NULL AS DOUBLE)"
    )
    as_of = (
        "TRY_CAST(NULLIF(TRIM(CAST(as_of AS VARCHAR)), '') AS TIMESTAMPTZ)"
        if "as_of" in cols
        else "CAST(NULL AS TIMESTAMPTZ)"
    )
    table = con.sql(
        f"""SELECT row_number() OVER () AS _row,
               NULLIF(TRIM(CAST(learner_id AS VARCHAR)), '') AS learner_id,
               {boolean("completed")} AS completed, {raw("completed")} AS completed_raw,
               {boolean("churned")} AS churned, {raw("churned")} AS churned_raw,
               {revenue} AS revenue, {raw("revenue")} AS revenue_raw,
               {as_of} AS as_of, {raw("as_of")} AS as_of_raw
            FROM src"""
    ).to_arrow_table()
    con.register("t", table)
    bad = con.sql(
        """SELECT _row, CASE
               WHEN learner_id IS NULL THEN 'learner_id is empty'
               WHEN completed IS NULL AND completed_raw IS NOT NULL THEN 'completed=' || completed_raw || ' is not a boolean'
               WHEN churned IS NULL AND churned_raw IS NOT NULL THEN 'churned=' || churned_raw || ' is not a boolean'
               WHEN revenue IS NULL AND revenue_raw IS NOT NULL THEN 'revenue=' || revenue_raw || ' is not a number'
               WHEN as_of IS NULL AND as_of_raw IS NOT NULL THEN 'as_of=' || as_of_raw || ' is not a timestamp'
             END AS why FROM t WHERE why IS NOT NULL ORDER BY _row LIMIT 5"""
    ).fetchall()
    if bad:
        listed = "; ".join(f"row {r}: {w}" for r, w in bad)
        raise InputError(f"{name}: invalid outcome rows ({listed}); nothing from it was written")
    return table.select(OUTCOME_SCHEMA.names).cast(OUTCOME_SCHEMA)
