"""Why a source was rejected wholesale, and the likely fix: the ``--max-reject-rate`` error.

When more of a source's rows are rejected than ``max_reject_rate`` allows, ingestion fails
the request (nothing is written) with :class:`RejectRateError`: the top reasons, each with an
example row (its line and raw text) and the option most likely to fix it. For unparsed
timestamps the pattern is found by trying common ``strptime`` patterns on the rejected values
with DuckDB (the engine validation uses), so the suggested ``--ts-format`` is one that reads
them; when day-first and month-first both fit, both are given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from cohortlens.errors import InputError
from cohortlens.events.limits import DEFAULT_MAX_REJECT_RATE
from cohortlens.events.readers.csv import UTF8_REJECT_DETAIL
from cohortlens.events.schema import RejectReason
from cohortlens.events.session import RejectExample
from cohortlens.events.source import ReadOptions
from cohortlens.events.validate import _connection, bad_timestamp_value

#: Reasons shown in the error, most frequent first.
TOP_REASONS = 3
#: Rejected rows fetched per reason to find a timestamp pattern (one is shown).
EXAMPLES_PER_REASON = 200
#: Raw text longer than this is cut in the message.
_RAW_CHARS = 200

_R = RejectReason
__all__ = ["DEFAULT_MAX_REJECT_RATE", "ReasonSummary", "RejectRateError", "likely_fix", "summarize"]


@dataclass(frozen=True)
class ReasonSummary:
    """One reason of a failed source: how many rows, an example, and the likely fix."""

    reason: str
    count: int
    example: RejectExample | None
    fix: str | None


class RejectRateError(InputError):
    """A source's rejected share exceeds ``max_reject_rate``: the request fails, nothing written."""

    def __init__(
        self,
        source: str,
        rows_read: int,
        rejected: int,
        limit: float,
        reasons: Sequence[ReasonSummary],
    ) -> None:
        self.source = source
        self.rows_read = rows_read
        self.rejected = rejected
        self.limit = limit
        self.reasons = list(reasons)
        lines = [
            f"{source}: {rejected:,} of {rows_read:,} rows rejected ({rejected / rows_read:.1%}), "
            f"more than --max-reject-rate {limit:g} allows; the source fails whole and nothing "
            "from this ingest was written. Top reasons:"
        ]
        for r in self.reasons:
            lines.append(f"  {r.reason}: {r.count:,} rows")
            if r.example is not None:
                where = f"line {r.example.line}" if r.example.line is not None else "a row"
                lines.append(f"    e.g. {where}: {_cut(r.example.raw or '')}")
                if r.example.detail:
                    lines.append(f"    {_cut(r.example.detail)}")
            if r.fix:
                lines.append(f"    likely fix: {r.fix}")
        lines.append("  (--max-reject-rate 1 ingests such a file anyway, quarantining the rows)")
        super().__init__("\n".join(lines))


def _cut(text: str) -> str:
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= _RAW_CHARS else text[:_RAW_CHARS] + f"... ({len(text):,} chars)"


def summarize(
    by_reason: dict[str, int], examples: Sequence[RejectExample], options: ReadOptions
) -> list[ReasonSummary]:
    """The :data:`TOP_REASONS` most frequent reasons, each with an example and a likely fix."""
    top = sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_REASONS]
    out = []
    for reason, count in top:
        mine = [e for e in examples if e.reason == reason]
        out.append(
            ReasonSummary(
                reason, count, mine[0] if mine else None, likely_fix(reason, mine, options)
            )
        )
    return out


def likely_fix(reason: str, examples: Sequence[RejectExample], options: ReadOptions) -> str | None:
    """The option or change most likely to fix rows rejected for ``reason`` (None: no idea)."""
    if reason == _R.BAD_TIMESTAMP:
        values = [v for v in (bad_timestamp_value(e.detail) for e in examples) if v]
        return _timestamp_fix(values, options)
    undecodable = [e for e in examples if (e.detail or "").startswith(UTF8_REJECT_DETAIL)]
    if reason in (_R.MALFORMED_RECORD, _R.MALFORMED_JSON) and undecodable:
        named = re.search(r"--encoding [\w-]+", " ".join(e.detail or "" for e in undecodable))
        return (
            f"the file is not UTF-8: pass its encoding ({named.group(0)}, for example)"
            if named
            else "the file is not UTF-8: pass its encoding with --encoding"
        )
    field = _MISSING_FIELD.get(reason)
    if field is not None:
        return (
            f"these rows have no {field}; if it is in another column, map it: --map {field}=COLUMN"
        )
    return _FIXES.get(reason)


#: Reject reasons (StrEnum members hash as their text) -> the field they miss.
_MISSING_FIELD: dict[str, str] = {
    _R.MISSING_LEARNER_ID: "learner_id",
    _R.MISSING_ITEM_ID: "item_id",
    _R.MISSING_TIMESTAMP: "ts",
}
_FIXES: dict[str, str] = {
    _R.WRONG_FIELD_COUNT: "check the delimiter (--delimiter) and quoting: a value holding "
    "the delimiter or a line break must be in double quotes",
    _R.TIMESTAMP_TOO_OLD: "epoch milliseconds or microseconds read as seconds? "
    "pass --ts-unit ms or --ts-unit us",
    _R.TIMESTAMP_IN_FUTURE: "epoch microseconds read as milliseconds? pass --ts-unit us "
    "(else the source's clock runs ahead)",
    _R.BAD_OUTCOME: "outcome must be a number in [0, 1]",
    _R.OUTCOME_OUT_OF_RANGE: "outcome must be in [0, 1]: rescale scores before ingesting "
    "(a percentage / 100)",
    _R.BAD_DURATION: "duration_s must be seconds in [0, 604800]: convert milliseconds (/ 1000)",
    _R.MALFORMED_JSON: "each line must be one JSON object; a JSON array of xAPI statements "
    "needs --format xapi",
}


def _timestamp_fix(values: Sequence[str], options: ReadOptions) -> str | None:
    """A ``--ts-format`` (or two) reading ``values``, or what else to check."""
    if not values:
        return None
    if all(_is_number(v) for v in values):
        return (
            f"numbers that are not epoch times in range as read by --ts-unit {options.ts_unit}: "
            "check --ts-unit (s, ms or us)"
        )
    found = guess_ts_formats(values)
    given = f"they do not match --ts-format '{options.ts_format}'; " if options.ts_format else ""
    if not found:
        return (
            given + "timestamps must be ISO 8601 (2024-03-01T10:00:00Z) or epoch numbers; "
            "give their pattern with --ts-format"
        )
    if len(found) == 2:
        (a, a_kind), (b, b_kind) = found
        return (
            f"{given}--ts-format '{a}' ({a_kind}) or --ts-format '{b}' ({b_kind}): every "
            "example fits both, so check which one your source writes"
        )
    pattern, note = found[0]
    return f"{given}--ts-format '{pattern}'" + (f" ({note})" if note else "")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_DATE_ORDERS = {"dmy": ("%d", "%m", "%Y"), "mdy": ("%m", "%d", "%Y"), "ymd": ("%Y", "%m", "%d")}
_TIMES = ("", " %H:%M", " %H:%M:%S", " %H:%M:%S.%f", " %I:%M %p", " %I:%M:%S %p", "T%H:%M:%S")
_WORDY = (
    "%d %b %Y",
    "%d %B %Y",
    "%b %d %Y",
    "%b %d, %Y",
    "%B %d, %Y",
    "%d-%b-%Y",
    "%a, %d %b %Y",
    "%Y%m%d",
)


def _candidates() -> list[str]:
    """Common strptime patterns, in order of preference (4-digit years first)."""
    out: list[str] = []
    for year in ("%Y", "%y"):
        for order in ("dmy", "mdy", "ymd"):
            for sep in ("/", "-", "."):
                parts = [year if p == "%Y" else p for p in _DATE_ORDERS[order]]
                date = sep.join(parts)
                out.extend(date + t for t in _TIMES)
    for date in _WORDY:
        out.extend(date + t for t in _TIMES)
    out.extend(["%Y%m%d%H%M%S", "%a %b %d %H:%M:%S %Y"])
    return out + [p + " %z" for p in out] + [p + "%z" for p in out if "%H" in p]


def guess_ts_formats(values: Sequence[str]) -> list[tuple[str, str]]:
    """Patterns reading every value, as (pattern, note): one, or two when day-first and
    month-first both fit; else the pattern reading most (at least half), noted so.

    A pattern reads a value when DuckDB's ``try_strptime`` parses it to a year in 1970..2199
    (so ``%Y`` does not read ``24`` as the year 24).
    """
    distinct = sorted(set(values))[:EXAMPLES_PER_REASON]
    if not distinct:
        return []
    patterns = _candidates()
    con = _connection()
    counts = con.execute(
        "SELECT "
        + ", ".join(
            f"count(CASE WHEN year(try_strptime(v, ${i + 2})) BETWEEN 1970 AND 2199 THEN 1 END)"
            for i in range(len(patterns))
        )
        + " FROM (SELECT unnest($1) AS v)",
        [distinct, *patterns],
    ).fetchall()[0]  # fetchall: an unfinished result would block the shared connection
    n = len(distinct)
    full = [p for p, c in zip(patterns, counts, strict=True) if c == n]
    if full:
        best = full[0]
        twin = _swap_day_month(best)
        if twin != best and twin in full:
            first_kind = "day first" if best.index("%d") < best.index("%m") else "month first"
            other_kind = "month first" if first_kind == "day first" else "day first"
            return [(best, first_kind), (twin, other_kind)]
        return [(best, "")]
    most = max(range(len(patterns)), key=lambda i: counts[i])
    if counts[most] * 2 >= n:
        return [(patterns[most], f"reads {counts[most]} of {n} distinct examples")]
    return []


def _swap_day_month(pattern: str) -> str:
    """``%d/%m/%Y`` <-> ``%m/%d/%Y`` (unchanged when it has not both)."""
    if "%d" not in pattern or "%m" not in pattern:
        return pattern
    return pattern.replace("%d", "\0").replace("%m", "%d").replace("\0", "%m")
