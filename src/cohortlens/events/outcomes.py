"""Learner-outcomes tables: read from Parquet or CSV, checked, holding only the columns given.

An outcomes table has ``learner_id`` and any of the outcome columns of ``OUTCOME_SCHEMA``
(``completed``, ``churned``, ``revenue``, ``as_of``). The store merges it column by column:
the columns a table carries are written (an empty value sets null); the others keep their
stored values (docs/DATA.md, "Outcomes").
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq

from cohortlens.errors import InputError, MissingColumnsError, UnreadableSourceError
from cohortlens.events.readers._text import Utf8Checked, file_pieces, nul_error, utf8_pieces
from cohortlens.events.schema import OUTCOME_COLUMNS, outcome_schema

#: Delimiters tried, in order, until the header holds ``learner_id``.
_DELIMITERS = (",", ";", "\t", "|")


def check_outcomes(table: pa.Table, name: str) -> pa.Table:
    """``table`` cast to :func:`outcome_schema` of the outcome columns it has.

    Raises :class:`InputError` when ``learner_id`` or every outcome column is missing, or a
    column is not one of ``OUTCOME_SCHEMA`` (so nothing is merged by mistake).
    """
    cols = table.column_names
    if "learner_id" not in cols:
        raise MissingColumnsError(name, ["learner_id"], list(cols))
    carried = [c for c in OUTCOME_COLUMNS if c in cols]
    if not carried:
        raise InputError(
            f"{name}: no outcome column; found {', '.join(cols)}; expected learner_id and at "
            f"least one of {', '.join(OUTCOME_COLUMNS)}. Nothing was written."
        )
    schema = outcome_schema(carried)
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"{name}: outcome columns of the wrong type: {exc}") from exc


def read_outcomes(path: Path, encoding: str | None = None) -> pa.Table:
    """Load an outcomes file; ``learner_id`` and at least one outcome column are required.

    Only the outcome columns present are returned (see the module docstring). Booleans accept
    true/false/1/0/yes/no; a value that is none of these fails the whole file with the
    offending row number, since outcomes are few and a silent guess would bias results. An
    empty value is null. CSV text is decoded as ``encoding`` (``None``: UTF-8, or what a
    byte-order mark says); its delimiter is the first of ``,`` ``;`` tab ``|`` whose header
    holds ``learner_id``.
    """
    name = str(path)
    if name.endswith((".parquet", ".pq")):
        try:
            src = pq.read_table(path)
            src.column_names  # noqa: B018 (names are decoded here: a damaged one raises)
        except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
            raise UnreadableSourceError(name, f"not a readable Parquet file ({exc})") from exc
    else:
        src = _read_csv(path, name, encoding)
    cols = src.column_names
    if "learner_id" not in cols:
        raise MissingColumnsError(name, ["learner_id"], list(cols))
    repeated = [c for c in ("learner_id", *OUTCOME_COLUMNS) if cols.count(c) > 1]
    if repeated:
        raise InputError(f"{name}: column(s) {', '.join(repeated)} appear more than once")
    carried = [c for c in OUTCOME_COLUMNS if c in cols]
    if not carried:
        check_outcomes(src, name)  # raises, naming the columns found and those expected
    src = src.select(["learner_id", *carried])
    if any(pa.types.is_nested(t) for t in src.schema.types):
        raise InputError(f"{name}: nested outcome columns; expected text, numbers or booleans")
    src = src.append_column("_row", pa.array(np.arange(1, src.num_rows + 1, dtype=np.int64)))
    return _parsed(src, carried, name)


def _read_csv(path: Path, name: str, encoding: str | None) -> pa.Table:
    """A CSV outcomes file, every field as text (decoded to UTF-8 first; see read_outcomes)."""
    zipped = name.endswith(".gz")
    try:
        with path.open("rb") as raw:
            file = gzip.GzipFile(fileobj=raw) if zipped else raw
            text = b"".join(utf8_pieces(file_pieces(file), encoding, name, decompressed=zipped))
            checked = Utf8Checked(io.BytesIO(text), name, decompressed=zipped)
            data = checked.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise UnreadableSourceError(name, str(exc)) from exc
    if not data.strip():
        raise UnreadableSourceError(name, "the file is empty (no header line)")
    nul = data.find(b"\0")
    if nul >= 0:
        raise nul_error(name, nul, data[:4096], "in the file")
    first = data.split(b"\n", 1)[0].split(b"\r", 1)[0].decode("utf-8")
    header: list[str] = []
    for delimiter in _DELIMITERS:
        try:
            header = next(csv.reader([first], delimiter=delimiter), [])
        except csv.Error as exc:
            raise UnreadableSourceError(name, f"cannot parse the header line: {exc}") from exc
        if "learner_id" in header:
            break
    else:
        delimiter = ","
    try:
        return pv.read_csv(
            io.BytesIO(data),
            read_options=pv.ReadOptions(use_threads=False),
            parse_options=pv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pv.ConvertOptions(
                column_types={h: pa.string() for h in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise UnreadableSourceError(name, str(exc)) from exc


def _parsed(src: pa.Table, carried: list[str], name: str) -> pa.Table:
    """The outcome columns cast from text (or their stored types); bad values fail the file."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.register("src", src)
    casts = {
        "completed": "BOOLEAN",
        "churned": "BOOLEAN",
        "revenue": "DOUBLE",
        "as_of": "TIMESTAMPTZ",
    }
    what = {
        "completed": "a boolean",
        "churned": "a boolean",
        "revenue": "a number",
        "as_of": "a timestamp",
    }

    def raw(c: str) -> str:
        return f"NULLIF(TRIM(CAST({c} AS VARCHAR)), '')"

    values = ", ".join(
        f"TRY_CAST({raw(c)} AS {casts[c]}) AS {c}, {raw(c)} AS {c}_raw" for c in carried
    )
    checks = "\n".join(
        f"WHEN {c} IS NULL AND {c}_raw IS NOT NULL THEN '{c}=' || {c}_raw || ' is not {what[c]}'"
        for c in carried
    )
    try:
        table = con.sql(
            f"SELECT _row, {raw('learner_id')} AS learner_id, {values} FROM src ORDER BY _row"
        ).to_arrow_table()
        con.register("t", table)
        bad = con.sql(
            f"""SELECT _row, CASE WHEN learner_id IS NULL THEN 'learner_id is empty' {checks} END
                   AS why FROM t WHERE why IS NOT NULL ORDER BY _row LIMIT 5"""
        ).fetchall()
    except duckdb.Error as exc:
        raise UnreadableSourceError(name, str(exc).splitlines()[0]) from exc
    finally:
        con.close()
    if bad:
        listed = "; ".join(f"row {r}: {w}" for r, w in bad)
        raise InputError(f"{name}: invalid outcome rows ({listed}); nothing from it was written")
    return check_outcomes(table.select(["learner_id", *carried]), name)
