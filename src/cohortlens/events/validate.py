"""Validate raw batches into canonical events and quarantined rows, in one vectorized pass.

Every row of a :class:`~cohortlens.events.source.RawBatch` leaves here exactly once: either as a
canonical event (``EVENT_SCHEMA``) or as a quarantine row with a :class:`RejectReason`. The work is
one DuckDB SQL statement over the Arrow batch (zero-copy in, columnar, multi-threaded), so there
is no Python loop per row. The rules are documented in docs/DATA.md.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from cohortlens.errors import InputError
from cohortlens.events.schema import (
    DEFAULT_DOMAIN,
    EVENT_SCHEMA,
    QUARANTINE_SCHEMA,
    RejectReason,
)
from cohortlens.events.source import LINE_COLUMN, RAW_COLUMN, RawBatch, TimestampUnit

#: Events before this instant are rejected (no learning platform logged them; they are bugs).
EARLIEST_TS = datetime(2000, 1, 1, tzinfo=UTC)
#: Events later than ``now`` plus this are rejected (clock skew of a day is tolerated).
FUTURE_TOLERANCE = timedelta(days=1)
#: Longest plausible duration of one interaction; longer values are rejected as bad_duration.
MAX_DURATION_S = 7 * 86_400.0
#: In ``auto`` mode a numeric timestamp with |x| at or above this is epoch milliseconds.
EPOCH_MS_THRESHOLD = 1e11

_CHUNK_ROWS = 1 << 16
#: The DuckDB setting under which a statement filtering the validated rows on ``reason`` parses
#: each value once (see :func:`build_query`).
NO_FILTER_PUSHDOWN = "SET disabled_optimizers = 'filter_pushdown'"

_local = threading.local()


def _connection() -> duckdb.DuckDBPyConnection:
    """A per-thread in-memory DuckDB used purely as a vectorized expression engine."""
    con: duckdb.DuckDBPyConnection | None = getattr(_local, "con", None)
    if con is None:
        con = duckdb.connect(":memory:")
        con.execute("SET TimeZone = 'UTC'")
        _local.con = con
    return con


@dataclass(frozen=True)
class Validated:
    """The two disjoint parts of a validated batch."""

    accepted: pa.Table
    rejected: pa.Table


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def _trimmed(v: str, *, spaced: bool = False) -> str:
    """SQL for VARCHAR ``v`` without edge spaces; trimming allocates, so only where needed.

    ``contains`` is cheaper than testing both edges (trimming is idempotent), but not for
    values that usually hold a space (``spaced``), such as ``2024-01-01 10:00:00``.
    """
    test = f"starts_with({v}, ' ') OR ends_with({v}, ' ')" if spaced else f"contains({v}, ' ')"
    return f"CASE WHEN {test} THEN TRIM({v}) ELSE {v} END"


def _text(col: str, t: pa.DataType | None, *, spaced: bool = False) -> str:
    """SQL for a column as trimmed text, NULL when absent or blank."""
    if t is None:
        return "CAST(NULL AS VARCHAR)"
    return f"NULLIF({_trimmed(f'CAST({col} AS VARCHAR)', spaced=spaced)}, '')"


def _blank(col: str, t: pa.DataType | None) -> str:
    """SQL: the column is absent, null, empty or only spaces (what :func:`_text` makes NULL).

    Used only where a parse already failed, so the trim runs on few rows.
    """
    if t is None:
        return "TRUE"
    if _is_text(t):
        return f"({col} IS NULL OR TRIM(CAST({col} AS VARCHAR)) = '')"
    return f"({col} IS NULL)"


def _epoch(x: str, unit: TimestampUnit) -> str:
    """SQL turning a DOUBLE epoch value into TIMESTAMPTZ (NULL when out of range)."""
    scale = {"s": "1e6", "ms": "1e3", "us": "1"}
    if unit == "auto":
        micros = f"CASE WHEN abs({x}) >= {EPOCH_MS_THRESHOLD} THEN {x} * 1e3 ELSE {x} * 1e6 END"
    else:
        micros = f"{x} * {scale[unit]}"
    # Bound to years 1678..2262 so the integer cast cannot overflow; validation rejects later.
    return (
        f"CASE WHEN isfinite({x}) AND abs({micros}) < 9e18 "
        f"THEN CAST(make_timestamp(CAST(round({micros}) AS BIGINT)) AS TIMESTAMPTZ) END"
    )


@dataclass(frozen=True)
class _TimestampSQL:
    """The ``ts`` parse in three steps, so each cast appears once in the statement.

    DuckDB hoists a repeated expression into a projection of its own, computed for every
    row; written once per step, the numeric fallback runs only where the ISO parse failed.
    """

    text: str  # trimmed text (or the typed value), over ``batch``
    iso: str  # ISO 8601 parse, over ``c_ts_text``
    number: str  # epoch number, over ``c_ts_text`` and ``c_ts_iso``
    ts: str  # the result, over ``c_ts_iso`` and ``c_ts_number``


def _timestamp(
    t: pa.DataType | None, unit: TimestampUnit, ts_format: str | None = None
) -> _TimestampSQL:
    """SQL for the parsed ``ts`` column (TIMESTAMPTZ, NULL when absent or unparseable).

    Text is trimmed first: DuckDB's timestamp cast refuses some edge spaces. With ``ts_format``
    text is read by ``strptime`` with that pattern alone (naive results are UTC).
    """
    no_iso, no_number = "CAST(NULL AS TIMESTAMPTZ)", "CAST(NULL AS DOUBLE)"
    if t is None:
        return _TimestampSQL("CAST(NULL AS VARCHAR)", no_iso, no_number, no_iso)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return _TimestampSQL("ts", "CAST(c_ts_text AS TIMESTAMPTZ)", no_number, "c_ts_iso")
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        epoch = _epoch("c_ts_number", "s" if unit == "iso" else unit)
        return _TimestampSQL("ts", no_iso, "CAST(c_ts_text AS DOUBLE)", epoch)
    text = _trimmed("CAST(ts AS VARCHAR)", spaced=True)
    if ts_format is not None:
        pattern = f"CAST(try_strptime(c_ts_text, {_sql_literal(ts_format)}) AS TIMESTAMPTZ)"
        return _TimestampSQL(text, pattern, no_number, "c_ts_iso")
    iso = "TRY_CAST(c_ts_text AS TIMESTAMPTZ)"
    number = "TRY_CAST(c_ts_text AS DOUBLE)"
    if unit == "iso":
        return _TimestampSQL(text, iso, no_number, "c_ts_iso")
    if unit in ("s", "ms", "us"):
        return _TimestampSQL(text, no_iso, number, _epoch("c_ts_number", unit))
    # ISO first; the numeric parse only for rows where ISO parsing failed.
    return _TimestampSQL(
        text,
        iso,
        f"CASE WHEN c_ts_iso IS NULL THEN {number} END",
        f"coalesce(c_ts_iso, {_epoch('c_ts_number', 'auto')})",
    )


def _number(col: str, t: pa.DataType | None) -> str:
    """SQL for a numeric column that may arrive as text, as DOUBLE (NULL when blank or bad).

    Text is cast untrimmed: DuckDB's cast to DOUBLE skips surrounding white space itself.
    """
    if t is None:
        return "CAST(NULL AS DOUBLE)"
    t_ = pa.types
    if t_.is_boolean(t) or t_.is_integer(t) or t_.is_floating(t) or t_.is_decimal(t):
        return f"CAST({col} AS DOUBLE)"
    return f"TRY_CAST(CAST({col} AS VARCHAR) AS DOUBLE)"


def _sql_literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _raw_expr(types: dict[str, pa.DataType]) -> str:
    """SQL building the quarantine ``raw`` text: the reader's original text, else the fields."""
    if RAW_COLUMN in types:
        return f"CAST({RAW_COLUMN} AS VARCHAR)"
    fields = [c for c in types if c not in (LINE_COLUMN, RAW_COLUMN)]
    if not fields:
        return "CAST(NULL AS VARCHAR)"
    pairs = ", ".join(f"{c} := CAST({c} AS VARCHAR)" for c in fields)
    return f"CAST(to_json(struct_pack({pairs})) AS VARCHAR)"


def build_query(
    types: dict[str, pa.DataType],
    unit: TimestampUnit,
    default_domain: str,
    ts_format: str | None = None,
) -> str:
    """The validation statement for a batch whose columns have the given Arrow ``types``.

    Its columns are those of ``EVENT_SCHEMA`` plus ``line``, ``reason`` (NULL when accepted),
    ``detail`` and ``raw`` (set only for rejected rows). Callers that keep one side filter on
    ``reason`` with DuckDB's filter pushdown off (:data:`NO_FILTER_PUSHDOWN`): pushed down,
    the filter would get a copy of every parse expression and run them twice.
    Every value is parsed once; the raw text of a field is only built for rejected rows.
    """
    g = types.get
    r = RejectReason
    ts_raw = _text("ts", g("ts"), spaced=True)
    outcome_raw, duration_raw = (_text(c, g(c)) for c in ("outcome", "duration_s"))
    line = f"CAST({LINE_COLUMN} AS BIGINT)" if LINE_COLUMN in types else "CAST(NULL AS BIGINT)"
    dom = _sql_literal(default_domain)
    # The derived event id hashes the canonical values (documented in docs/DATA.md), with the
    # outcome and duration as integers (1e-9 and 1e-6 units) so every engine formats them alike.
    derived_id = (
        "md5(concat_ws(chr(31), c_learner_id, CAST(epoch_us(c_ts) AS VARCHAR), c_domain, "
        "c_item_id, coalesce(CAST(CAST(round(c_outcome * 1e9) AS BIGINT) AS VARCHAR), ''), "
        "coalesce(CAST(CAST(round(c_duration_s * 1e6) AS BIGINT) AS VARCHAR), '')))"
    )
    ts = _timestamp(g("ts"), unit, ts_format)
    ts_expected = (
        f"does not match --ts-format '{ts_format}'"
        if ts_format is not None and g("ts") is not None and _is_text(g("ts"))
        else f"is not an ISO 8601 date-time or an epoch number in range ({unit} mode)"
    )
    return f"""
WITH texts AS (
  SELECT
    {_text("learner_id", g("learner_id"))} AS c_learner_id,
    {_text("item_id", g("item_id"))} AS c_item_id,
    coalesce({_text("domain", g("domain"))}, {dom}) AS c_domain,
    {ts.text} AS c_ts_text,
    {_number("outcome", g("outcome"))} AS c_outcome,
    {_number("duration_s", g("duration_s"))} AS c_duration_s,
    {_text("event_id", g("event_id"))} AS c_given_id,
    {line} AS c_line,
    *
  FROM batch
), iso AS (
  SELECT *, {ts.iso} AS c_ts_iso FROM texts
), numbers AS (
  SELECT *, {ts.number} AS c_ts_number FROM iso
), parsed AS (
  SELECT *, {ts.ts} AS c_ts FROM numbers
), judged AS (
  SELECT *,
    CASE
      WHEN c_learner_id IS NULL THEN '{r.MISSING_LEARNER_ID}'
      WHEN c_item_id IS NULL THEN '{r.MISSING_ITEM_ID}'
      WHEN c_ts IS NULL AND {_blank("ts", g("ts"))} THEN '{r.MISSING_TIMESTAMP}'
      WHEN c_ts IS NULL THEN '{r.BAD_TIMESTAMP}'
      WHEN c_ts < $earliest THEN '{r.TIMESTAMP_TOO_OLD}'
      WHEN c_ts > $latest THEN '{r.TIMESTAMP_IN_FUTURE}'
      WHEN c_outcome IS NULL AND NOT {_blank("outcome", g("outcome"))} THEN '{r.BAD_OUTCOME}'
      WHEN isnan(c_outcome) THEN '{r.BAD_OUTCOME}'
      WHEN c_outcome < 0 OR c_outcome > 1 THEN '{r.OUTCOME_OUT_OF_RANGE}'
      WHEN c_duration_s IS NULL AND NOT {_blank("duration_s", g("duration_s"))}
        THEN '{r.BAD_DURATION}'
      WHEN NOT isfinite(c_duration_s) OR c_duration_s < 0 OR c_duration_s > $max_duration
        THEN '{r.BAD_DURATION}'
    END AS reason
  FROM parsed
)
SELECT
  CASE WHEN reason IS NULL THEN coalesce(c_given_id, {derived_id}) END AS event_id,
  c_learner_id AS learner_id, c_ts AS ts, c_domain AS domain, c_item_id AS item_id,
  c_outcome AS outcome, c_duration_s AS duration_s, c_line AS line, reason,
  CASE
    WHEN reason IS NULL THEN NULL
    WHEN reason = '{r.BAD_TIMESTAMP}' THEN 'ts=' || {ts_raw} || {_sql_literal(" " + ts_expected)}
    WHEN reason = '{r.TIMESTAMP_TOO_OLD}' THEN 'ts=' || CAST(c_ts AS VARCHAR) ||
      ' is before 2000-01-01'
    WHEN reason = '{r.TIMESTAMP_IN_FUTURE}' THEN 'ts=' || CAST(c_ts AS VARCHAR) ||
      ' is more than 1 day after ingestion time'
    WHEN reason IN ('{r.BAD_OUTCOME}', '{r.OUTCOME_OUT_OF_RANGE}') THEN
      'outcome=' || coalesce({outcome_raw}, 'NaN') || CASE reason
        WHEN '{r.BAD_OUTCOME}' THEN ' is not a number in [0, 1]' ELSE ' is outside [0, 1]' END
    WHEN reason = '{r.BAD_DURATION}' THEN 'duration_s=' || {duration_raw} ||
      ' is not a number of seconds in [0, 604800]'
    WHEN reason = '{r.MISSING_LEARNER_ID}' THEN 'learner_id is empty'
    WHEN reason = '{r.MISSING_ITEM_ID}' THEN 'item_id is empty'
    WHEN reason = '{r.MISSING_TIMESTAMP}' THEN 'ts is empty'
  END AS detail,
  CASE WHEN reason IS NOT NULL THEN {_raw_expr(types)} END AS raw
FROM judged
"""


def prepare(
    batch: RawBatch,
    ts_unit: TimestampUnit,
    default_domain: str = DEFAULT_DOMAIN,
    now: datetime | None = None,
    ts_format: str | None = None,
) -> tuple[pa.Table, str, dict[str, object]]:
    """The batch re-chunked for a parallel scan, its validation SQL (over ``batch``), and params.

    Stores with a SQL engine run the statement themselves (no Arrow round trip); the result has
    the columns of ``EVENT_SCHEMA`` plus ``line``, ``reason``, ``detail`` and ``raw``.
    """
    now = now or datetime.now(UTC)
    # Several Arrow chunks let DuckDB scan the batch on all threads.
    table = pa.Table.from_batches(
        batch.table.to_batches(max_chunksize=_CHUNK_ROWS), schema=batch.table.schema
    )
    query = build_query({f.name: f.type for f in table.schema}, ts_unit, default_domain, ts_format)
    return table, query, validation_params(now)


def check_ts_format(ts_format: str | None) -> str | None:
    """``ts_format`` if DuckDB's strptime accepts it; :class:`InputError` naming the problem.

    DuckDB's strptime takes the same ``%`` codes as Python's (``%d/%m/%Y %H:%M``, ``%z``).
    """
    if ts_format is None:
        return None
    if "%" not in ts_format:
        raise InputError(
            f"--ts-format {ts_format!r}: a strptime pattern needs % codes, e.g. '%d/%m/%Y %H:%M'"
        )
    try:
        _connection().execute("SELECT try_strptime('', $f)", {"f": ts_format}).fetchall()
    except duckdb.Error as exc:
        why = str(exc).splitlines()[0].removeprefix("Invalid Input Error: ")
        raise InputError(f"--ts-format {ts_format!r}: {why}") from None
    return ts_format


def bad_timestamp_value(detail: str | None) -> str | None:
    """The ts text a ``bad_timestamp`` detail quotes (``ts=<text> is not ...``), else None."""
    if detail is None or not detail.startswith("ts="):
        return None
    for tail in (" is not an ISO 8601", " does not match --ts-format"):
        end = detail.rfind(tail)
        if end > 0:
            return detail[3:end]
    return None


def validation_params(now: datetime) -> dict[str, object]:
    """The bound parameters of the validation statement for ingestion time ``now``."""
    return {
        "earliest": EARLIEST_TS,
        "latest": now + FUTURE_TOLERANCE,
        "max_duration": MAX_DURATION_S,
    }


def validate_batch(
    batch: RawBatch,
    *,
    ts_unit: TimestampUnit = "auto",
    now: datetime | None = None,
    default_domain: str = DEFAULT_DOMAIN,
    ts_format: str | None = None,
) -> Validated:
    """Split ``batch`` into canonical events and quarantined rows (with the reader's rejects).

    ``now`` (default: the current time) bounds the future; pass a fixed value for replays.
    ``ts_format`` is a strptime pattern for text timestamps (see ``ReadOptions.ts_format``).
    """
    table, query, params = prepare(batch, ts_unit, default_domain, now, ts_format)
    con = _connection()
    con.register("batch", table)
    try:
        result = con.sql(query, params=params).to_arrow_table()
    finally:
        con.unregister("batch")
    n_bad = result.num_rows - result["reason"].null_count
    if n_bad == 0:  # the common case: no copy of the string columns
        accepted, bad = result, result.slice(0, 0)
    else:
        ok = pc.is_null(result["reason"])
        accepted, bad = result.filter(ok), result.filter(pc.invert(ok))
    accepted = accepted.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA)
    rejected = pa.table(
        {
            "source": pa.array([batch.source] * bad.num_rows, pa.string()),
            "line": bad["line"],
            "reason": bad["reason"],
            "detail": bad["detail"],
            "raw": bad["raw"],
        },
        schema=QUARANTINE_SCHEMA,
    )
    if batch.rejects.num_rows:
        rejected = pa.concat_tables([batch.rejects.cast(QUARANTINE_SCHEMA), rejected])
    return Validated(accepted=accepted, rejected=rejected)
