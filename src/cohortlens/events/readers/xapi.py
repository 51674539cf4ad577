"""Reader for xAPI 1.0.3 statements: a JSON array of statements, or JSON Lines.

Layout detection
    The first non-blank character decides (a byte-order mark and gzip compression, recognised
    by its magic bytes whatever the file name, are handled; UTF-16/UTF-32 text, by BOM or
    ``options.encoding``, is transcoded to UTF-8 as it is read): ``[`` is a JSON array of statements;
    ``{`` is JSON Lines, one statement per line, unless the first non-blank line is not a
    complete JSON value on its own (a pretty-printed statement) or is an LRS
    ``StatementResult`` (``{"statements": [...], "more": ...}``): then the file is read as one
    JSON document when it parses as one (up to ``DOCUMENT_MAX_BYTES``). An empty or blank file
    has no statements. Anything else raises :class:`~cohortlens.errors.UnreadableSourceError`
    at open, as does an array document that does not parse or a gzip stream that does not
    decode to its end.

Memory and speed
    JSON Lines are streamed: bytes are split into lines with NumPy in blocks of
    ``_BLOCK_BYTES`` and regrouped into batches of ``options.batch_rows`` statements; peak
    memory is about seven times one batch's text (measured: 0.7 GB for 200 000 statements of
    475 bytes). An array or ``StatementResult`` document is decoded whole at open: count about
    fifteen times its uncompressed size (1.4 GB for a 95 MB array); convert large exports to
    JSON Lines first (``jq -c '.[]' statements.json > statements.jsonl``). Opening JSON Lines
    makes one pass over the file to collect voided statement ids (and so proves the stream
    decodes). Fields are pulled out by one DuckDB statement per batch (JSON parsed in C++,
    columnar, no Python loop per statement); only the rare ``malformed_json`` rows get a
    Python error message. Each batch costs a fixed ~50 ms to plan, so keep batches large.

JSON dialect
    DuckDB's JSON reader (yyjson) decides what parses: strict RFC 8259 except that it also
    accepts ``NaN``/``Infinity`` literals and trailing commas. A non-finite score is a
    ``bad_outcome``. When a key is repeated in an object, the first occurrence counts.

Mapping to the canonical columns
    ``learner_id``
        The actor's single inverse functional identifier (Agent, or identified Group):
        ``mbox:mailto:<local>@<domain>`` (scheme and domain lowercased since they are case
        insensitive; the local part keeps its case, which RFC 5321 leaves to the mail host;
        the domain is what follows the last ``@``), ``sha1:<40 lowercase hex>`` for
        ``mbox_sha1sum``, ``openid:<uri>`` as given, and ``account:<homePage>|<name>``
        (unambiguous: an IRI cannot hold a bare ``|``). The same person identified by
        ``mbox`` in one statement and by ``mbox_sha1sum`` in another gets two ids. No
        identifier (anonymous Group or Agent) gives null, rejected downstream as
        ``missing_learner_id``; an identifier of the wrong form, or more than one, is a
        ``malformed_record``. A JSON ``null`` counts as absent, here and for every field.
    ``item_id``
        ``object.id`` (an Activity's IRI, a StatementRef's UUID); objects without one
        (SubStatement, Agent) give null, rejected downstream as ``missing_item_id``.
    ``ts``
        ``timestamp`` as text, else ``stored``, else null; parsed by validation.
    ``outcome``
        ``result.score.scaled`` as is (the spec allows -1..1: negative values are kept and
        rejected downstream as ``outcome_out_of_range`` rather than silently remapped); else
        ``(raw - min) / (max - min)`` when ``raw``, ``min`` and ``max`` are all present (``max``
        must exceed ``min``, else ``bad_outcome``); else ``result.success`` as 1.0 / 0.0; else
        null (ungraded). A raw score without both bounds cannot be put on [0, 1] and is ignored.
    ``duration_s``
        ``result.duration`` read as an ISO 8601:2004 §4.4.3.2 duration (``PnYnMnDTnHnMnS``
        or ``PnW``; designators upper case and in that order; only the lowest-order component
        may carry a ``.`` or ``,`` fraction). A day is 86 400 s, a week 7 days, a year 365.25
        days and a month 30.4375 days (= a year / 12), the mean Gregorian lengths: statement
        durations are not anchored to a start date. An unparseable duration is a
        ``bad_duration`` reject.
    ``domain``
        The value at ``options.xapi_domain_path`` (default
        ``context.contextActivities.grouping[0].id``), or null when any step is missing.
        Strings are used as is, numbers and booleans as their JSON text; objects, lists and
        nulls give null. Path syntax: steps separated by ``.``; a step is a bare key (no
        ``.``, ``[``, ``]``, ``"``) or a non-empty double-quoted key in which ``\\"`` and
        ``\\\\`` escape a quote and a backslash, which is how extension IRIs holding dots are
        written, e.g.
        ``object.definition.extensions."http://example.com/domain"``; ``[n]`` after a step
        indexes a list (negative counts from the end). ``[0]`` and ``[-1]`` on an object treat
        it as a one-element list, since xAPI lets ``contextActivities`` values be a single
        Activity.
    ``event_id``
        The statement ``id`` (a UUID), lowercased; null when absent.

    ``_line`` is the physical line for JSON Lines and the 1-based statement index for a
    document; ``_raw`` is the line (JSON Lines) or the statement as DuckDB re-serialises it
    (documents: compact, numbers possibly respelled). ``options.mapping`` does not apply.

Rejects (reason, as counted rows read)
    A line that does not parse (or is not UTF-8): ``malformed_json``. A value that is not an
    object, a statement lacking ``actor``, ``verb`` or ``object``, or a present field of the
    wrong JSON type: ``malformed_record`` (``bad_timestamp``, ``bad_outcome`` or
    ``bad_duration`` when the field is the timestamp, score/success or duration). Voiding: a
    statement with verb ``http://adlnet.gov/expapi/verbs/voided`` is rejected as
    ``malformed_record`` with detail ``voiding statement``, and a statement it voids (its
    ``object`` is a ``StatementRef`` to the voided id, anywhere in the same file) as
    ``malformed_record`` with detail ``voided by statement <id>``: neither is a learner event.
    Details quote offending values as JSON text.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import threading
import zlib
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import IO, cast

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cohortlens.errors import InputError, UnreadableSourceError
from cohortlens.events.readers._text import (
    PiecesReader,
    choose,
    decode_error,
    file_pieces,
    is_utf8,
    utf8_pieces,
)
from cohortlens.events.schema import CANONICAL_COLUMNS, QUARANTINE_SCHEMA, RejectReason
from cohortlens.events.source import (
    LINE_COLUMN,
    RAW_COLUMN,
    RawBatch,
    ReadOptions,
    Source,
    display_name,
)

#: Verb IRI of a voiding statement (xAPI 1.0.3 §2.3.2).
VOIDED_VERB = "http://adlnet.gov/expapi/verbs/voided"
#: Mean Gregorian year and month, in days, for duration years and months.
DAYS_PER_YEAR = 365.25
DAYS_PER_MONTH = DAYS_PER_YEAR / 12.0
#: Largest document read whole when a ``{``-led file is not JSON Lines.
DOCUMENT_MAX_BYTES = 1 << 30

PathStep = str | int

_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_BLOCK_BYTES = 1 << 23
_JSON_WS = " \t\r\n"
_READ_ERRORS = (OSError, EOFError, zlib.error)
_BARE_KEY = re.compile(r'[^.\["\]]+')
_INDEX = re.compile(r"\[(-?\d+)\]")
_LINES_SCHEMA = pa.schema(
    [pa.field(LINE_COLUMN, pa.int64()), pa.field(RAW_COLUMN, pa.string()), ("bad_utf8", pa.bool_())]
)
_TABLE_SCHEMA = pa.schema(
    [
        ("learner_id", pa.string()),
        ("ts", pa.string()),
        ("domain", pa.string()),
        ("item_id", pa.string()),
        ("outcome", pa.float64()),
        ("duration_s", pa.float64()),
        ("event_id", pa.string()),
        (LINE_COLUMN, pa.int64()),
        (RAW_COLUMN, pa.string()),
    ]
)

_NUM = r"\d+(?:[.,]\d+)?"
#: ISO 8601 duration, in RE2 syntax (no look-ahead): the emptiness rules are checked apart.
_DURATION_RE = (
    rf"^P(?:(?P<Y>{_NUM})Y)?(?:(?P<Mo>{_NUM})M)?(?:(?P<W>{_NUM})W)?(?:(?P<D>{_NUM})D)?"
    rf"(?P<T>T(?:(?P<H>{_NUM})H)?(?:(?P<Mi>{_NUM})M)?(?:(?P<S>{_NUM})S)?)?$"
)
#: Duration components from highest to lowest order, with their length in seconds.
_DURATION_UNITS_S: tuple[tuple[str, float], ...] = (
    ("Y", DAYS_PER_YEAR * 86_400.0),
    ("Mo", DAYS_PER_MONTH * 86_400.0),
    ("W", 7 * 86_400.0),
    ("D", 86_400.0),
    ("H", 3_600.0),
    ("Mi", 60.0),
    ("S", 1.0),
)
_DURATION_HINT = " is not an ISO 8601 duration (PnYnMnDTnHnMnS or PnW, fraction on the last part)"

_local = threading.local()


# --------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------


def open_source(path: Path, options: ReadOptions) -> Source:
    """Open an xAPI statements file, failing whole if it cannot be decoded (see module doc)."""
    name = display_name(path)
    query = build_query(parse_domain_path(options.xapi_domain_path))
    batch_rows = max(1, options.batch_rows)
    encoding = options.encoding
    first = _first_char(path, name, encoding)
    statements: pa.Table | None = None
    if first == "[":
        statements = _array_statements(
            _decode_text(_read_bytes(path, name, encoding=encoding), name), name
        )
    elif first == "{":
        statements = _document_statements(path, name, encoding)
    elif first:
        raise UnreadableSourceError(
            name,
            f"not JSON: the first non-blank character is {first!r}; expected '[' "
            "(a JSON array of statements) or '{' (JSON Lines, one statement per line)",
        )
    else:
        statements = _LINES_SCHEMA.empty_table()
    if statements is not None:
        doc = statements
        doc_voided = _voided_targets([doc])
        return Source(
            name=name,
            columns=CANONICAL_COLUMNS,
            batches=lambda: (
                _build_batch(name, doc.slice(start, batch_rows), query, doc_voided)
                for start in range(0, doc.num_rows, batch_rows)
            ),
        )
    voided = _voided_targets(_line_blocks(path, name, encoding))
    return Source(
        name=name,
        columns=CANONICAL_COLUMNS,
        batches=lambda: (
            _build_batch(name, lines, query, voided)
            for lines in _rebatch(_line_blocks(path, name, encoding), batch_rows)
        ),
    )


# --------------------------------------------------------------------------------------
# ISO 8601 durations (vectorised)
# --------------------------------------------------------------------------------------


def parse_durations(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Seconds of each ISO 8601 duration string, and a mask of non-null unparseable ones.

    Returns ``(seconds, invalid)``: ``seconds`` is float64 with NaN where the input is null or
    invalid. Years and months use ``DAYS_PER_YEAR`` and ``DAYS_PER_MONTH``.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    values = pc.cast(values, pa.string())
    n = len(values)
    parts = pc.extract_regex(values, _DURATION_RE)
    matched = np.asarray(parts.is_valid(), dtype=bool)
    seconds = np.zeros(n, dtype=np.float64)
    present = np.zeros((len(_DURATION_UNITS_S), n), dtype=bool)
    fraction = np.zeros_like(present)
    for k, (unit, unit_s) in enumerate(_DURATION_UNITS_S):
        text = pc.fill_null(parts.field(unit), "")
        has = np.asarray(pc.not_equal(text, ""), dtype=bool)
        dotted = pc.replace_substring(text, ",", ".")
        filled = pc.if_else(pa.array(has), dotted, pa.scalar("0"))
        number = pc.cast(filled, pa.float64()).to_numpy(zero_copy_only=False)
        present[k] = has
        fraction[k] = np.asarray(pc.match_substring(dotted, "."), dtype=bool)
        seconds += number * unit_s
    time_part = pc.fill_null(parts.field("T"), "").to_numpy(zero_copy_only=False)
    empty_time = time_part == "T"
    n_present = present.sum(axis=0)
    week_mixed = present[2] & (n_present > 1)
    # Only the lowest-order present component may have a fraction.
    later_present = np.flip(np.cumsum(np.flip(present, axis=0), axis=0), axis=0) > present
    misplaced_fraction = (fraction & later_present).any(axis=0)
    ok = matched & (n_present > 0) & ~empty_time & ~week_mixed & ~misplaced_fraction
    ok &= np.isfinite(seconds)
    is_null = np.asarray(values.is_null(), dtype=bool)
    invalid = ~ok & ~is_null
    seconds[~ok] = np.nan
    return seconds, invalid


# --------------------------------------------------------------------------------------
# Domain path
# --------------------------------------------------------------------------------------


def parse_domain_path(path: str) -> tuple[PathStep, ...]:
    """Split a domain path (syntax in the module docstring) into keys and list indexes."""
    steps: list[PathStep] = []
    i, n = 0, len(path)
    want_key = True
    while i < n or want_key:
        if i >= n:
            raise _path_error(path, i, "a key is expected")
        ch = path[i]
        if want_key:
            key, i = _quoted_key(path, i) if ch == '"' else _bare_key(path, i)
            steps.append(key)
            want_key = False
        elif ch == "[":
            m = _INDEX.match(path, i)
            if m is None:
                raise _path_error(path, i, "'[' must hold an integer and close with ']'")
            steps.append(int(m.group(1)))
            i = m.end()
        elif ch == ".":
            want_key = True
            i += 1
        else:
            raise _path_error(path, i, "'.' or '[' is expected")
    return tuple(steps)


def _bare_key(path: str, i: int) -> tuple[str, int]:
    """Read an unquoted key starting at ``i``."""
    m = _BARE_KEY.match(path, i)
    if m is None:
        raise _path_error(path, i, "a key is expected")
    return m.group(), m.end()


def _quoted_key(path: str, i: int) -> tuple[str, int]:
    """Read a double-quoted key starting at ``i`` (escapes: ``\\"`` and ``\\\\``)."""
    out: list[str] = []
    j = i + 1
    while j < len(path):
        ch = path[j]
        if ch == "\\" and j + 1 < len(path) and path[j + 1] in '"\\':
            out.append(path[j + 1])
            j += 2
        elif ch == '"':
            if not out:
                raise _path_error(path, i, "a quoted key cannot be empty")
            return "".join(out), j + 1
        else:
            out.append(ch)
            j += 1
    raise _path_error(path, i, "unterminated quoted key")


def _path_error(path: str, i: int, why: str) -> InputError:
    """A user-facing error pointing at character ``i`` of a domain path."""
    return InputError(f"xAPI domain path {path!r}: {why} at character {i + 1}")


# --------------------------------------------------------------------------------------
# The extraction statement
# --------------------------------------------------------------------------------------

#: Statement fields pulled in one ``json_extract`` call: alias -> JSON path.
_FIELDS: dict[str, str] = {
    "actor": "$.actor",
    "actor_type": "$.actor.objectType",
    "mbox": "$.actor.mbox",
    "sha1": "$.actor.mbox_sha1sum",
    "openid": "$.actor.openid",
    "account": "$.actor.account",
    "home": "$.actor.account.homePage",
    "user": "$.actor.account.name",
    "verb": "$.verb",
    "verb_id": "$.verb.id",
    "object": "$.object",
    "object_id": "$.object.id",
    "id": "$.id",
    "timestamp": "$.timestamp",
    "stored": "$.stored",
    "result": "$.result",
    "score": "$.result.score",
    "scaled": "$.result.score.scaled",
    "raw": "$.result.score.raw",
    "min": "$.result.score.min",
    "max": "$.result.score.max",
    "success": "$.result.success",
    "duration": "$.result.duration",
}
_IFI = (("mbox", "mbox"), ("sha1", "mbox_sha1sum"), ("openid", "openid"), ("account", "account"))
_MBOX_RE = r"^(?is:mailto):(.+)@([^@]+)$"
_JSON_NAME = (
    "CASE {t} WHEN 'VARCHAR' THEN 'string' WHEN 'OBJECT' THEN 'object' WHEN 'ARRAY' THEN 'array' "
    "WHEN 'BOOLEAN' THEN 'boolean' WHEN 'NULL' THEN 'null' ELSE 'number' END"
)


def _lit(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _json_path(keys: list[str]) -> str:
    """A DuckDB JSON path selecting nested object keys, every key quoted."""
    quoted = ('"' + k.replace("\\", "\\\\").replace('"', '\\"') + '"' for k in keys)
    return "$" + "".join("." + q for q in quoted)


def _has(a: str) -> str:
    """SQL column: field ``a`` is present and not JSON null."""
    return f"h_{a}"


def _number_ok(a: str) -> str:
    """SQL: field ``a`` is a finite JSON number."""
    return f"(t_{a} = 'DOUBLE' AND isfinite(TRY_CAST(j_{a} AS DOUBLE)))"


def _not_object(a: str, label: str) -> tuple[str, RejectReason, str]:
    """Rule: field ``a`` (named ``label`` in details), when present, must be a JSON object."""
    detail = f"'{label} is a JSON ' || " + _JSON_NAME.format(t=f"t_{a}") + " || ', not an object'"
    return f"{_has(a)} AND t_{a} <> 'OBJECT'", RejectReason.MALFORMED_RECORD, detail


def _wrong_type(
    a: str, label: str, want: str, reason: RejectReason
) -> tuple[str, RejectReason, str]:
    """Rule: field ``a``, when present, must have DuckDB JSON type ``want``."""
    kind = {"VARCHAR": "a string", "BOOLEAN": "a boolean"}[want]
    return f"{_has(a)} AND t_{a} <> '{want}'", reason, f"'{label} ' || j_{a} || ' is not {kind}'"


def _rules() -> list[tuple[str, RejectReason, str]]:
    """Reader-level reject rules in priority order: (SQL condition, reason, SQL detail)."""
    mr, bad_outcome = RejectReason.MALFORMED_RECORD, RejectReason.BAD_OUTCOME
    required = ("actor", "verb", "object")
    lacks = ", ".join(f"CASE WHEN NOT {_has(a)} THEN '{a}' END" for a in required)
    ifis = ", ".join(f"CASE WHEN {_has(a)} THEN '{key}' END" for a, key in _IFI)
    n_ifi = "(" + " + ".join(f"CAST({_has(a)} AS INTEGER)" for a, _ in _IFI) + ")"
    ts_type = f"CASE WHEN {_has('timestamp')} THEN t_timestamp ELSE t_stored END"
    ts_json = f"CASE WHEN {_has('timestamp')} THEN j_timestamp ELSE j_stored END"
    sha1_re = "'^[0-9a-fA-F]{40}$'"
    return [
        ("root <> 'OBJECT'", mr,
         "'statement is a JSON ' || " + _JSON_NAME.format(t="root") + " || ', not an object'"),
        (" OR ".join(f"NOT {_has(a)}" for a in required), mr,
         f"'statement lacks ' || concat_ws(', ', {lacks})"),
        _not_object("verb", "verb"),
        _not_object("object", "object"),
        _wrong_type("id", "id", "VARCHAR", mr),
        (f"s_verb_id = {_lit(VOIDED_VERB)}", mr, "'voiding statement'"),
        ("voided_by IS NOT NULL", mr, "'voided by statement ' || voided_by"),
        _not_object("actor", "actor"),
        (f"{_has('actor_type')} AND coalesce(s_actor_type NOT IN ('Agent', 'Group'), true)", mr,
         "'actor objectType ' || j_actor_type || ' is neither \"Agent\" nor \"Group\"'"),
        (f"{n_ifi} > 1", mr,
         f"'actor has ' || {n_ifi} || ' inverse functional identifiers (' || "
         f"concat_ws(', ', {ifis}) || '); xAPI allows exactly one'"),
        (f"{_has('mbox')} AND NOT coalesce(regexp_matches(s_mbox, {_lit(_MBOX_RE)}), false)", mr,
         "'actor mbox ' || j_mbox || ' is not a mailto IRI'"),
        (f"{_has('sha1')} AND NOT coalesce(regexp_matches(s_sha1, {sha1_re}), false)", mr,
         "'actor mbox_sha1sum ' || j_sha1 || ' is not 40 hex digits'"),
        (f"{_has('openid')} AND coalesce(s_openid, '') = ''", mr,
         "'actor openid ' || j_openid || ' is not a URI'"),
        (f"{_has('account')} AND (coalesce(s_home, '') = '' OR coalesce(s_user, '') = '')", mr,
         "'actor account needs a non-empty \"homePage\" and \"name\"'"),
        _wrong_type("object_id", "object id", "VARCHAR", mr),
        (f"{ts_type} NOT IN ('VARCHAR', 'NULL')", RejectReason.BAD_TIMESTAMP,
         f"'timestamp ' || {ts_json} || ' is not a string'"),
        _not_object("result", "result"),
        (f"{_has('score')} AND t_score <> 'OBJECT'", bad_outcome,
         "'result.score ' || j_score || ' is not an object'"),
        *(
            (f"{_has(a)} AND n_{a} IS NULL", bad_outcome,
             f"'result.score.{a} ' || j_{a} || ' is not a finite number'")
            for a in ("scaled", "raw", "min", "max")
        ),
        _wrong_type("success", "result.success", "BOOLEAN", bad_outcome),
        _wrong_type("duration", "result.duration", "VARCHAR", RejectReason.BAD_DURATION),
        ("use_range AND NOT (n_max > n_min AND isfinite((n_raw - n_min) / (n_max - n_min)))",
         bad_outcome,
         "'result.score raw ' || j_raw || ' cannot be normalised: max ' || j_max"
         " || ' must exceed min ' || j_min"),
    ]  # fmt: skip


def _domain_steps(steps: tuple[PathStep, ...]) -> tuple[str, list[str]]:
    """(JSON path of the domain path's leading keys, SQL expressions walking the rest).

    Each expression maps the previous value ``d`` (JSON) to the next one.
    """
    lead = 0
    while lead < len(steps) and isinstance(steps[lead], str):
        lead += 1
    exprs: list[str] = []
    keys: list[str] = []
    for step in (*steps[lead:], None):
        if isinstance(step, str):
            keys.append(step)
            continue
        if keys:
            exprs.append(f"json_extract(d, {_lit(_json_path(keys))})")
            keys = []
        if isinstance(step, int):
            single = " WHEN 'OBJECT' THEN d" if step in (0, -1) else ""
            exprs.append(
                f"CASE json_type(d) WHEN 'ARRAY' THEN json_extract(d, '$[{step}]'){single} END"
            )
    return _json_path([str(k) for k in steps[:lead]]), exprs


def _type_of(json_text: str) -> str:
    """SQL: DuckDB's JSON type name of a compact JSON text, from its first character."""
    names = "['DOUBLE', 'VARCHAR', 'OBJECT', 'ARRAY', 'BOOLEAN', 'BOOLEAN', 'NULL']"
    return f"{names}[instr('\"{{[tfn', left({json_text}, 1)) + 1]"


def _unquote(json_text: str) -> str:
    """SQL: the value of a JSON string text (parsed again only when it holds escapes)."""
    return (
        f"CASE WHEN contains({json_text}, '\\') THEN {json_text} ->> '$' ELSE {json_text}[2:-2] END"
    )


def build_query(steps: tuple[PathStep, ...]) -> str:
    """The DuckDB statement turning a lines table (``_line``, ``_raw``, ``bad_utf8``) into
    canonical fields, a reader reject ``reason``/``detail``, and the duration text.

    Each line is parsed twice in C++ (validity, then all JSON paths at once); types come from
    the compact JSON's first character and strings are unquoted without parsing when they
    hold no escape. Rows come back in any order (``_build_batch`` sorts them by line).
    """
    aliases = list(_FIELDS)
    domain_path, domain_exprs = _domain_steps(steps)
    paths = "[" + ", ".join(_lit(p) for p in [*_FIELDS.values(), domain_path]) + "]"
    unpack = ",\n    ".join(
        f"v[{k + 1}] AS j_{a}, {_type_of(f'v[{k + 1}]')} AS t_{a}" for k, a in enumerate(aliases)
    )
    strings = ",\n    ".join(
        f"coalesce(t_{a} <> 'NULL', false) AS h_{a}, "
        f"CASE WHEN t_{a} = 'VARCHAR' THEN {_unquote(f'j_{a}')} END AS s_{a}"
        for a in aliases
    )
    numbers = ",\n    ".join(
        f"CASE WHEN {_number_ok(a)} THEN CAST(j_{a} AS DOUBLE) END AS n_{a}"
        for a in ("scaled", "raw", "min", "max")
    )
    domain_ctes = "".join(
        f", d{k + 1} AS (SELECT * REPLACE ({expr} AS d) FROM d{k})"
        for k, expr in enumerate(domain_exprs)
    )
    last = f"d{len(domain_exprs)}"
    rules = _rules()
    rule = "\n      ".join(f"WHEN {c} THEN {k}" for k, (c, _, _) in enumerate(rules, start=1))
    reasons = ", ".join(f"'{r.value}'" for _, r, _ in rules)
    detail = "\n      ".join(f"WHEN {k} THEN {d}" for k, (_, _, d) in enumerate(rules, start=1))
    learner = (
        f"CASE WHEN {_has('mbox')} THEN 'mbox:mailto:' || regexp_extract(s_mbox, "
        f"{_lit(_MBOX_RE)}, 1) || '@' || lower(regexp_extract(s_mbox, {_lit(_MBOX_RE)}, 2)) "
        f"WHEN {_has('sha1')} THEN 'sha1:' || lower(s_sha1) "
        f"WHEN {_has('openid')} THEN 'openid:' || s_openid "
        f"WHEN {_has('account')} THEN 'account:' || s_home || '|' || s_user END"
    )
    return f"""
WITH src AS (
  SELECT {LINE_COLUMN}, {RAW_COLUMN} AS raw, bad_utf8,
    NOT bad_utf8 AND json_valid({RAW_COLUMN}) AS ok
  FROM lines
), fields AS (
  SELECT {LINE_COLUMN}, raw, bad_utf8, ok,
    CASE WHEN ok THEN {_type_of(f"ltrim(raw, {_lit(_JSON_WS)})")} END AS root,
    CASE WHEN ok THEN json_extract(raw, {paths}) END AS v
  FROM src
), typed AS (
  SELECT {LINE_COLUMN}, raw, bad_utf8, ok, root, v[{len(aliases) + 1}] AS d,
    {unpack}
  FROM fields
), present AS (
  SELECT *,
    {strings}
  FROM typed
), d0 AS (
  SELECT present.*, voided.voided_by,
    {numbers}
  FROM present LEFT JOIN voided ON voided.target = lower(present.s_id)
){domain_ctes}, ranged AS (
  SELECT *,
    n_scaled IS NULL AND n_raw IS NOT NULL AND n_min IS NOT NULL AND n_max IS NOT NULL
      AS use_range
  FROM {last}
), judged AS (
  SELECT *,
    CASE WHEN NOT ok THEN 0
      {rule}
    END AS rule
  FROM ranged
)
SELECT
  {learner} AS learner_id,
  CASE WHEN {_has("timestamp")} THEN s_timestamp ELSE s_stored END AS ts,
  CASE WHEN json_type(d) = 'VARCHAR' THEN d ->> '$'
       WHEN json_type(d) NOT IN ('OBJECT', 'ARRAY', 'NULL') THEN CAST(d AS VARCHAR) END AS domain,
  s_object_id AS item_id,
  CASE WHEN n_scaled IS NOT NULL THEN n_scaled
       WHEN use_range THEN (n_raw - n_min) / (n_max - n_min)
       WHEN t_success = 'BOOLEAN' THEN CASE WHEN j_success = 'true' THEN 1.0 ELSE 0.0 END
  END AS outcome,
  lower(s_id) AS event_id,
  s_duration AS duration,
  j_duration AS duration_json,
  {LINE_COLUMN}, raw AS {RAW_COLUMN},
  ['{RejectReason.MALFORMED_JSON.value}', {reasons}][rule + 1] AS reason,
  CASE rule WHEN 0 THEN CASE WHEN bad_utf8 THEN 'not UTF-8 text' END
      {detail}
  END AS detail
FROM judged
"""


def _connection() -> duckdb.DuckDBPyConnection:
    """A per-thread in-memory DuckDB used as a vectorised JSON engine."""
    con: duckdb.DuckDBPyConnection | None = getattr(_local, "con", None)
    if con is None:
        con = duckdb.connect(":memory:")
        _local.con = con
    return con


def _run(query: str, tables: dict[str, pa.Table]) -> pa.Table:
    """Run ``query`` over Arrow ``tables`` registered under their names."""
    con = _connection()
    for table_name, table in tables.items():
        con.register(table_name, table)
    try:
        return con.sql(query).to_arrow_table()
    finally:
        for table_name in tables:
            con.unregister(table_name)


# --------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------


def _build_batch(name: str, lines: pa.Table, query: str, voided: pa.Table) -> RawBatch:
    """Turn a lines table into a canonical table plus the reader's rejects."""
    res = _run(query, {"lines": lines, "voided": voided})
    line = res[LINE_COLUMN]
    if res.num_rows > 1 and not pc.all(pc.greater(line[1:], line[:-1])).as_py():
        res = res.take(pc.sort_indices(line))
    duration_s, bad = parse_durations(res["duration"])
    reason = res["reason"]
    bad_duration = pa.array(bad & np.asarray(pc.is_null(reason), dtype=bool))
    hint = pc.binary_join_element_wise("result.duration ", res["duration_json"], _DURATION_HINT, "")
    reason = pc.if_else(bad_duration, RejectReason.BAD_DURATION.value, reason)
    detail = pc.if_else(bad_duration, hint, res["detail"])
    rejected = pc.is_valid(reason)
    rejects = pa.table(
        {
            "source": pa.array([name] * res.num_rows, pa.string()),
            "line": res[LINE_COLUMN],
            "reason": reason,
            "detail": _json_error_details(reason, detail, res[RAW_COLUMN]),
            "raw": res[RAW_COLUMN],
        }
    ).filter(rejected)
    table = res.set_column(
        res.schema.get_field_index("duration"),
        "duration_s",
        pa.array(duration_s, pa.float64(), mask=np.isnan(duration_s)),
    )
    table = table.filter(pc.invert(rejected)).select(_TABLE_SCHEMA.names).cast(_TABLE_SCHEMA)
    return RawBatch(source=name, table=table, rejects=rejects.cast(QUARANTINE_SCHEMA))


def _json_error_details(
    reason: pa.ChunkedArray | pa.Array, detail: pa.ChunkedArray | pa.Array, raw: pa.ChunkedArray
) -> pa.Array:
    """Fill the missing details of ``malformed_json`` rows (rare) with Python's parse error."""
    detail = pa.chunked_array([detail]) if isinstance(detail, pa.Array) else detail
    is_json = pc.fill_null(pc.equal(reason, RejectReason.MALFORMED_JSON.value), False)
    bad = np.flatnonzero(np.asarray(pc.and_(is_json, pc.is_null(detail))))
    if not len(bad):
        return detail.combine_chunks()
    values = detail.to_pylist()
    for i in bad.tolist():
        values[i] = _json_error(raw[i].as_py())
    return pa.array(values, pa.string())


def _json_error(text: str) -> str:
    """Why ``text`` is not JSON, in words (with the position Python's parser gives)."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}" if exc.lineno > 1 else f"column {exc.colno}"
        return f"{exc.msg} at {where}"
    return "not valid JSON"


def _voided_targets(blocks: Iterator[pa.Table] | list[pa.Table]) -> pa.Table:
    """Voided statement id (lowercased) -> id of the statement voiding it, over all blocks."""
    found = []
    query = f"""
SELECT lower(json_extract_string({RAW_COLUMN}, '$.object.id')) AS target,
       coalesce(json_extract_string({RAW_COLUMN}, '$.id'), '(without id)') AS voided_by
FROM lines
WHERE NOT bad_utf8 AND json_valid({RAW_COLUMN})
  AND json_extract_string({RAW_COLUMN}, '$.verb.id') = {_lit(VOIDED_VERB)}
  AND json_extract_string({RAW_COLUMN}, '$.object.objectType') = 'StatementRef'
  AND json_type({RAW_COLUMN}, '$.object.id') = 'VARCHAR'
"""
    for block in blocks:
        candidates = block.filter(pc.match_substring(block[RAW_COLUMN], "voided"))
        if candidates.num_rows:
            found.append(_run(query, {"lines": candidates}))
    schema = pa.schema([("target", pa.string()), ("voided_by", pa.string())])
    if not found:
        return schema.empty_table()
    voided = pa.concat_tables(found).cast(schema)
    return _run("SELECT DISTINCT ON (target) * FROM voided", {"voided": voided})


# --------------------------------------------------------------------------------------
# Files and lines
# --------------------------------------------------------------------------------------


def _open(path: Path, name: str, encoding: str | None = None) -> IO[bytes]:
    """Open ``path`` for reading bytes, through gzip when it starts with the gzip magic.

    Text that is not UTF-8 (``encoding``, or a UTF-16/UTF-32 byte-order mark) is transcoded to
    UTF-8 as it is read; a UTF-8 BOM is left for the callers, which skip it.
    """
    try:
        with path.open("rb") as probe:
            magic = probe.read(2)
        zipped = magic == _GZIP_MAGIC
        # Returned open (or wrapped): the caller closes it.
        raw = cast(IO[bytes], gzip.open(path, "rb")) if zipped else path.open("rb")  # noqa: SIM115
    except OSError as exc:
        raise UnreadableSourceError(name, str(exc)) from exc
    try:
        head = raw.peek(4)[:4]  # type: ignore[attr-defined]
        chosen, _ = choose(encoding, head)
    except _READ_ERRORS as exc:
        raw.close()
        raise UnreadableSourceError(name, str(exc)) from exc
    if is_utf8(chosen):
        return raw
    pieces = utf8_pieces(file_pieces(raw), encoding, name, decompressed=zipped)
    return io.BufferedReader(PiecesReader(pieces, on_close=[raw]), 1 << 20)


def _first_char(path: Path, name: str, encoding: str | None = None) -> str:
    """The first non-blank character of the (decompressed) file, ``""`` if there is none."""
    try:
        with _open(path, name, encoding) as fh:
            head = True
            while chunk := fh.read(1 << 16):
                if head:
                    chunk = chunk.removeprefix(_BOM)
                head = False
                stripped = chunk.lstrip()
                if stripped:
                    return stripped[:1].decode("latin-1")
    except _READ_ERRORS as exc:
        raise UnreadableSourceError(name, str(exc)) from exc
    return ""


def _read_bytes(
    path: Path, name: str, max_bytes: int | None = None, *, encoding: str | None = None
) -> bytes:
    """The (decompressed) file's bytes, at most ``max_bytes + 1`` of them when bounded."""
    try:
        with _open(path, name, encoding) as fh:
            return fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    except _READ_ERRORS as exc:
        raise UnreadableSourceError(name, str(exc)) from exc


def _decode_text(data: bytes, name: str) -> str:
    """The file's text (UTF-8, a BOM dropped), or an unreadable-source error naming the byte."""
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = skip + exc.start
        raise decode_error(
            name, "utf-8", at, data[at : skip + exc.end], data[max(0, at - 256) : at + 256]
        ) from exc


def _line_blocks(
    path: Path, name: str, encoding: str | None = None
) -> Generator[pa.Table, None, None]:
    """Non-blank lines of a JSON Lines file, in blocks of about ``_BLOCK_BYTES`` bytes."""
    next_line = 1
    carry = b""
    try:
        with _open(path, name, encoding) as fh:
            block = fh.read(_BLOCK_BYTES).removeprefix(_BOM)
            while True:
                data = carry + block if carry else block
                if block:
                    cut = data.rfind(b"\n") + 1
                    body, carry = data[:cut], data[cut:]
                else:
                    body, carry = data, b""
                if body:
                    lines, n_lines = _split_lines(body, next_line)
                    next_line += n_lines
                    if lines.num_rows:
                        yield lines
                if not block:
                    return
                block = fh.read(_BLOCK_BYTES)
    except _READ_ERRORS as exc:
        raise UnreadableSourceError(name, str(exc)) from exc


def _split_lines(body: bytes, first_line: int) -> tuple[pa.Table, int]:
    """Split ``body`` at newlines with NumPy: (table of its non-blank lines, lines seen)."""
    buf = np.frombuffer(body, dtype=np.uint8)
    ends = np.flatnonzero(buf == 0x0A) + 1
    if not len(ends) or ends[-1] != len(body):
        ends = np.append(ends, len(body))
    offsets = np.concatenate([[0], ends]).astype(np.int32)
    n = len(ends)
    binary = pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(body)]
    )
    bad_utf8 = np.zeros(n, dtype=bool)
    try:
        text = binary.cast(pa.string())
    except pa.ArrowInvalid:  # rare: find the offending lines one by one
        decoded = []
        for i, line in enumerate(binary.to_pylist()):
            try:
                decoded.append(line.decode("utf-8"))
            except UnicodeDecodeError:
                decoded.append(line.decode("utf-8", "replace"))
                bad_utf8[i] = True
        text = pa.array(decoded, pa.string())
    text = pc.utf8_rtrim(text, characters="\r\n")
    keep = pc.not_equal(pc.utf8_trim(text, characters=_JSON_WS), "")
    table = pa.table(
        {
            LINE_COLUMN: pa.array(np.arange(first_line, first_line + n, dtype=np.int64)),
            RAW_COLUMN: text,
            "bad_utf8": pa.array(bad_utf8),
        },
        schema=_LINES_SCHEMA,
    )
    return table.filter(keep), n


def _rebatch(blocks: Iterator[pa.Table], batch_rows: int) -> Iterator[pa.Table]:
    """Regroup line blocks into tables of exactly ``batch_rows`` rows (the last may be short)."""
    pending: list[pa.Table] = []
    count = 0
    for block in blocks:
        pending.append(block)
        count += block.num_rows
        if count < batch_rows:
            continue
        whole = pa.concat_tables(pending)
        start = 0
        while whole.num_rows - start >= batch_rows:
            yield whole.slice(start, batch_rows)
            start += batch_rows
        rest = whole.slice(start)
        pending, count = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
    if count:
        yield pa.concat_tables(pending)


def _statements_table(items: pa.Array) -> pa.Table:
    """A lines table from the JSON texts of a document's statements (index = line)."""
    return pa.table(
        {
            LINE_COLUMN: pa.array(np.arange(1, len(items) + 1, dtype=np.int64)),
            RAW_COLUMN: items.cast(pa.string()),
            "bad_utf8": pa.array(np.zeros(len(items), dtype=bool)),
        },
        schema=_LINES_SCHEMA,
    )


def _document(text: str) -> tuple[str | None, pa.Array | None]:
    """(JSON type of a document or ``None`` if it does not parse, texts of its statements).

    The statements are the elements of an array or of a ``StatementResult``'s ``statements``
    list; ``None`` for any other document.
    """
    res = _run(
        """
SELECT CASE WHEN json_valid(doc) THEN json_type(doc) END AS kind,
       CASE WHEN json_valid(doc) THEN
         CASE json_type(doc)
           WHEN 'ARRAY' THEN json_extract(doc, '$[*]')
           WHEN 'OBJECT' THEN CASE WHEN json_type(doc, '$.statements') = 'ARRAY'
                                    AND json_type(doc, '$.actor') IS NULL
                               THEN json_extract(doc, '$.statements[*]') END
         END
       END AS items
FROM docs
""",
        {"docs": pa.table({"doc": pa.array([text], pa.string())})},
    )
    kind = res["kind"][0].as_py()
    items = res["items"].combine_chunks()
    return kind, (items.flatten() if items.null_count == 0 else None)


def _array_statements(text: str, name: str) -> pa.Table:
    """The statements of a JSON array document (any parse failure: unreadable)."""
    kind, items = _document(text)
    if kind != "ARRAY" or items is None:
        raise UnreadableSourceError(name, f"invalid JSON array: {_json_error(text)}")
    return _statements_table(items)


def _document_statements(path: Path, name: str, encoding: str | None = None) -> pa.Table | None:
    """Statements of a ``{``-led file read as one document, or ``None`` if it is JSON Lines."""
    lines = _line_blocks(path, name, encoding)
    try:
        first = next(lines).slice(0, 1)
    finally:
        lines.close()
    if first["bad_utf8"][0].as_py():
        return None
    kind, items = _document(first[RAW_COLUMN][0].as_py())
    if kind is not None and items is None:
        return None  # a complete statement on the first line: JSON Lines
    data = _read_bytes(path, name, DOCUMENT_MAX_BYTES, encoding=encoding)
    if len(data) > DOCUMENT_MAX_BYTES:
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    kind, items = _document(text)
    if kind != "OBJECT":
        return None
    if items is None:
        items = pa.array([text.strip(_JSON_WS)], pa.string())
    return _statements_table(items)


__all__ = [
    "DAYS_PER_MONTH",
    "DAYS_PER_YEAR",
    "VOIDED_VERB",
    "build_query",
    "open_source",
    "parse_domain_path",
    "parse_durations",
]
