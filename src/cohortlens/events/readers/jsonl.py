"""Streaming JSON Lines reader (plain or gzip): one JSON object per line, nothing lost.

How a file is read:

* Text is UTF-8 unless ``options.encoding`` or a byte-order mark says otherwise (transcoded as
  it streams). Required columns are checked at open. The keys of the first 1000 non-blank lines are collected
  (the union over the lines that are JSON objects), and every required column (after
  ``--map``) must be among them. A record that lacks a key later is not a structural error:
  validation rejects it as ``missing_*``.
* The file is cut into blocks of whole lines, at most ``batch_rows`` non-empty lines each, so
  a batch has at most ``batch_rows`` rows. Blank lines (only spaces, tabs or ``\\r``) are not
  rows, but they are counted in ``_line``, the 1-based physical line number (lines end at
  ``\\n``). Every row also carries ``_raw``, its original line without the line break.
* Parsing is vectorized. Lines that cannot be objects are set aside first: the first non-blank
  byte must be ``{`` and the last ``}``. The rest of the block goes through
  ``pyarrow.json.read_json``, with an explicit schema over the canonical keys only, so other
  keys are skipped unparsed. If Arrow refuses a block, that is either a type change (a column
  that was text now holds numbers: the schema adapts and the block is read again) or a bad line.
  In the second case the block is halved until the halves parse. Pieces of at most 64 lines
  that still fail are read line by line with :func:`json.loads`. Bad lines become rejects with
  reason ``malformed_json``: invalid JSON, not an object, invalid UTF-8, or several objects on
  one line.
* Speed: Arrow parses about 1.1 to 1.4 M lines/s on 2 cores (6 short fields). :func:`json.loads`
  alone manages about 0.24 M lines/s, so the fallback is only for the few pieces that need it
  (see ``benchmarks/bench_readers.py``).

Values: JSON strings stay text. Numbers are float64 for ``ts``, ``outcome`` and ``duration_s``
and int64 for the id columns. Booleans stay booleans. A column whose values mix these kinds
within a batch becomes text: numbers are written as numbers, booleans as ``true``/``false``.
A nested value (object or array) in ``ts``, ``outcome`` or ``duration_s`` is kept as its
compact JSON text, which validation then rejects; in an id column (``learner_id``,
``item_id``, ``domain``, ``event_id``) the line is rejected by the reader
(``malformed_json``, with a detail naming the field). ``NaN`` and ``Infinity`` literals are read as numbers,
as both Arrow and Python do. Duplicate keys: the last one wins, as in Python.
"""

from __future__ import annotations

import itertools
import json
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from cohortlens.errors import InputError, UnreadableSourceError
from cohortlens.events.readers._text import decode_error
from cohortlens.events.readers.csv import (
    ByteStream,
    LineTooLong,
    RecordTooLongError,
    Text,
    column_plan,
    in_background,
    invalid_utf8_detail,
    line_blocks,
)
from cohortlens.events.schema import RejectReason
from cohortlens.events.source import (
    LINE_COLUMN,
    RAW_COLUMN,
    RawBatch,
    ReadOptions,
    Source,
    display_name,
    rejects_table,
)

#: Non-blank lines whose keys are inspected by ``open_source``.
HEADER_SAMPLE_LINES = 1000
#: Below this many lines a failing piece is read line by line instead of halved again.
_LEAF_LINES = 64
#: Type changes tolerated while parsing one piece before it is halved instead.
_MAX_RETYPES = 8
_MIN_BLOCK_BYTES = 1 << 16
_MAX_BLOCK_BYTES = 1 << 26
#: Canonical columns whose JSON numbers are read as float64 (the id columns use int64).
_FLOAT_COLUMNS = frozenset({"ts", "outcome", "duration_s"})
_KIND_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
}
_TYPE_CHANGE = re.compile(r"Column\(/(.*)\) changed from (\w+) to (\w+)")
_LF = 10
_CR = 13
_BRACE_OPEN = ord("{")
_BRACE_CLOSE = ord("}")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


@dataclass
class _Kinds:
    """The JSON kind assumed per source key; adapted when Arrow reports a type change."""

    plan: tuple[tuple[str, str], ...]
    kind: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for canon, src in self.plan:
            self.kind.setdefault(src, "float" if canon in _FLOAT_COLUMNS else "string")

    def schema(self) -> pa.Schema:
        return pa.schema([(src, _KIND_TYPES[k]) for src, k in self.kind.items()])

    def adapt(self, message: str) -> bool:
        """Follow an Arrow "changed from A to B" error; ``False`` if it is not one we handle."""
        match = _TYPE_CHANGE.search(message)
        if match is None or match.group(1) not in self.kind:
            return False
        src, new = match.group(1), match.group(3)
        if new == "number":
            roles = {c for c, s in self.plan if s == src}
            self.kind[src] = "float" if roles & _FLOAT_COLUMNS else "int"
        elif new in ("string", "boolean"):
            self.kind[src] = "string" if new == "string" else "bool"
        else:  # object, array: only the line-by-line reader keeps those (as JSON text)
            return False
        return True


@dataclass
class _Piece:
    """Parsed rows of a run of lines: source-key columns and the rows' line indices."""

    columns: dict[str, pa.Array | pa.ChunkedArray]
    rows: np.ndarray


@dataclass
class _Bad:
    """Lines rejected in a block (line indices within the block, with the reason's detail)."""

    rows: list[int] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def add(self, row: int, detail: str) -> None:
        self.rows.append(row)
        self.details.append(detail)


# --------------------------------------------------------------------------------------------
# Line-by-line reading (the fallback for pieces Arrow refuses)


def _value_text(value: Any) -> str | None:
    """A JSON value as text: strings as is, others as compact JSON (``None`` for null)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _column_from_values(values: list[Any], numbers_as_float: bool) -> pa.Array:
    """An Arrow array for one column of Python JSON values (typed when homogeneous)."""
    present = [v for v in values if v is not None]
    if not present:
        return pa.nulls(len(values))
    if all(isinstance(v, str) for v in present):
        return pa.array(values, pa.string())
    if all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        if numbers_as_float:
            return pa.array([None if v is None else float(v) for v in values], pa.float64())
        if all(isinstance(v, int) and _INT64_MIN <= v <= _INT64_MAX for v in present):
            return pa.array(values, pa.int64())
    return pa.array([_value_text(v) for v in values], pa.string())


def _loads_lines(lines: Sequence[Text], rows: np.ndarray, kinds: _Kinds, bad: _Bad) -> _Piece:
    """Parse lines one by one with :mod:`json`; bad ones go to ``bad``."""
    keys = list(kinds.kind)
    values: dict[str, list[Any]] = {k: [] for k in keys}
    ok: list[int] = []
    # An object or array cannot be an id: such a record is rejected, not given a JSON-text id.
    id_keys = [(c, s) for c, s in kinds.plan if c not in _FLOAT_COLUMNS]
    for row, text in zip(rows.tolist(), lines, strict=True):
        try:
            obj = json.loads(bytes(text).decode("utf-8"))
        except UnicodeDecodeError as exc:
            bad.add(row, invalid_utf8_detail(bytes(text), exc))
            continue
        except ValueError as exc:
            bad.add(row, f"invalid JSON: {exc}")
            continue
        if not isinstance(obj, dict):
            bad.add(row, f"not a JSON object (a JSON {type(obj).__name__})")
            continue
        nested = next((c for c, src in id_keys if isinstance(obj.get(src), dict | list)), None)
        if nested is not None:
            bad.add(row, f"{nested} is a JSON object or array; expected text or a number")
            continue
        ok.append(row)
        for k in keys:
            values[k].append(obj.get(k))
    float_keys = {s for c, s in kinds.plan if c in _FLOAT_COLUMNS}
    columns = {k: _column_from_values(values[k], k in float_keys) for k in keys}
    return _Piece(columns, np.asarray(ok, dtype=np.int64))


# --------------------------------------------------------------------------------------------
# Blocks


@dataclass(frozen=True)
class _Lines:
    """Line boundaries of a block (offsets relative to the block's first byte)."""

    starts: np.ndarray
    #: End of each line's content: the ``\\n`` and a ``\\r`` before it excluded.
    ends: np.ndarray
    #: Offset where the next line starts (after the terminator).
    nexts: np.ndarray


def _split_lines(block: np.ndarray) -> _Lines:
    """Line boundaries of ``block`` (the last line may lack its ``\\n``)."""
    nl = np.flatnonzero(block == _LF)
    size = block.shape[0]
    ends = nl if size and block[-1] == _LF else np.append(nl, size)
    starts = np.concatenate(([0], nl[: ends.shape[0] - 1] + 1)).astype(np.int64)
    nexts = np.minimum(ends + 1, size)
    content = ends.copy()
    has_cr = (content > starts) & (block[np.maximum(content - 1, 0)] == _CR)
    content[has_cr] -= 1
    return _Lines(starts, content, nexts)


def _line_range(lines: _Lines, first: int, stop: int) -> _Lines:
    """Lines ``first..stop-1`` of ``lines``, with offsets relative to line ``first``."""
    base = lines.starts[first]
    return _Lines(
        lines.starts[first:stop] - base,
        lines.ends[first:stop] - base,
        lines.nexts[first:stop] - base,
    )


def _batch_bounds(lines: _Lines, batch_rows: int) -> list[int]:
    """Line indices cutting ``lines`` into runs of at most ``batch_rows`` non-empty lines."""
    n = lines.starts.shape[0]
    nonempty = lines.ends > lines.starts
    count = np.cumsum(nonempty)
    if n == 0 or count[-1] <= batch_rows:
        return [0, n]
    last = np.flatnonzero(nonempty & (count % batch_rows == 0)) + 1
    return [0, *last[last < n].tolist(), n]


def _object_shape(block: np.ndarray, lines: _Lines) -> tuple[np.ndarray, np.ndarray]:
    """(blank, object-shaped) masks per line: a cheap first sort of the lines.

    Lines are classified from their first and last bytes, vectorized. Lines that start or end
    with whitespace (rare) are classified from their stripped text.
    """
    starts, ends = lines.starts, lines.ends
    nonempty = ends > starts
    first = np.where(nonempty, block[np.minimum(starts, block.shape[0] - 1)], 0)
    last = np.where(nonempty, block[np.maximum(ends - 1, 0)], 0)
    blank = ~nonempty
    shaped = nonempty & (first == _BRACE_OPEN) & (last == _BRACE_CLOSE)
    odd = np.flatnonzero(nonempty & (np.isin(first, (32, 9, 13)) | np.isin(last, (32, 9, 13))))
    raw = block.tobytes() if odd.size else b""
    for i in odd.tolist():
        text = raw[starts[i] : ends[i]].strip(b" \t\r")
        blank[i] = not text
        shaped[i] = text.startswith(b"{") and text.endswith(b"}")
    return blank, shaped


class _BlockReader:
    """Turns blocks of whole lines into batches (table + rejects)."""

    def __init__(self, name: str, plan: tuple[tuple[str, str], ...]) -> None:
        self.name = name
        self.plan = plan
        self.kinds = _Kinds(plan)

    def _arrow(self, text: pa.Buffer, block_bytes: int) -> pa.Table:
        return pj.read_json(
            pa.BufferReader(text),
            read_options=pj.ReadOptions(use_threads=True, block_size=block_bytes),
            parse_options=pj.ParseOptions(
                explicit_schema=self.kinds.schema(),
                unexpected_field_behavior="ignore",
                newlines_in_values=False,
            ),
        )

    def _parse_run(
        self,
        text: memoryview | bytearray,
        lines: _Lines,
        rows: np.ndarray,
        block_bytes: int,
        bad: _Bad,
        out: list[_Piece],
    ) -> None:
        """Parse the object-shaped lines ``rows`` (ascending), halving on failure."""
        lo, hi = int(lines.starts[rows[0]]), int(lines.nexts[rows[-1]])
        view = memoryview(text)[lo:hi]
        for _ in range(_MAX_RETYPES):
            try:
                table = self._arrow(pa.py_buffer(view), block_bytes)
            except pa.ArrowInvalid as exc:
                if self.kinds.adapt(str(exc)):
                    continue
                break
            except UnicodeDecodeError:  # Arrow's message quoted invalid UTF-8
                break
            if table.num_rows == rows.shape[0]:
                out.append(_Piece({c: table.column(c) for c in table.column_names}, rows))
                return
            break  # several objects on one line, or a line holding none
        if rows.shape[0] <= _LEAF_LINES:
            data = [bytes(text[lines.starts[r] : lines.ends[r]]) for r in rows.tolist()]
            out.append(_loads_lines(data, rows, self.kinds, bad))
            return
        half = rows.shape[0] // 2
        self._parse_run(text, lines, rows[:half], block_bytes, bad, out)
        self._parse_run(text, lines, rows[half:], block_bytes, bad, out)

    def block(self, data: Text, lo: int, lines: _Lines, first_line: int) -> RawBatch:
        """Read whole ``lines`` (offsets relative to ``lo``); line ``i`` is ``first_line + i``."""
        hi = lo + int(lines.nexts[-1])
        block = np.frombuffer(data, np.uint8, hi - lo, lo)
        blank, shaped = _object_shape(block, lines)
        lengths = lines.nexts - lines.starts
        offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)
        raw_all = pa.StringArray.from_buffers(
            lengths.shape[0], pa.py_buffer(offsets), pa.py_buffer(memoryview(data)[lo:hi])
        )
        bad = _Bad()
        text: memoryview | bytearray = memoryview(data)[lo:hi]
        try:
            raw_all.validate(full=True)
        except pa.ArrowInvalid:
            shaped = shaped.copy()
            for i in np.flatnonzero(~blank).tolist():
                try:
                    bytes(text[lines.starts[i] : lines.nexts[i]]).decode("utf-8")
                except UnicodeDecodeError:
                    shaped[i] = False
        # Lines Arrow must not see (not object-shaped) are blanked to spaces in a copy.
        others = np.flatnonzero(~blank & ~shaped)
        if others.size:
            text = bytearray(text)  # a copy: ``data`` keeps the original text for rejects
            for i in others.tolist():
                s, e = int(lines.starts[i]), int(lines.ends[i])
                text[s:e] = b" " * (e - s)
        pieces: list[_Piece] = []
        candidates = np.flatnonzero(shaped)
        if candidates.size:
            longest = int(lengths[candidates].max())
            block_bytes = max(1 << 20, 1 << (2 * longest).bit_length())
            self._parse_run(text, lines, candidates, block_bytes, bad, pieces)
        if others.size:
            data_lines = [data[lo + int(lines.starts[i]) : lo + int(lines.ends[i])] for i in others]
            pieces.append(_loads_lines(data_lines, others, self.kinds, bad))
        table = self._assemble(pieces, bad, raw_all, first_line)
        order = np.argsort(np.asarray(bad.rows, dtype=np.int64), kind="stable").tolist()
        rejects = rejects_table(
            self.name,
            [first_line + bad.rows[i] for i in order],
            [RejectReason.MALFORMED_JSON.value] * len(order),
            [bad.details[i] for i in order],
            [
                data[lo + int(lines.starts[r]) : lo + int(lines.ends[r])].decode(
                    "utf-8", errors="replace"
                )
                for r in (bad.rows[i] for i in order)
            ],
        )
        return RawBatch(self.name, table, rejects)

    def _assemble(
        self, pieces: list[_Piece], bad: _Bad, raw_all: pa.StringArray, first_line: int
    ) -> pa.Table:
        """Concatenate the pieces in line order, with ``_line`` and ``_raw``."""
        rows = np.concatenate([p.rows for p in pieces]) if pieces else np.empty(0, np.int64)
        order = None if np.all(rows[1:] > rows[:-1]) else np.argsort(rows, kind="stable")
        columns: dict[str, pa.ChunkedArray] = {}
        for k in self.kinds.kind:
            parts = [p.columns[k] for p in pieces]
            types = {a.type for a in parts} - {pa.null()}
            target = types.pop() if len(types) == 1 else pa.string()
            parts = [a if a.type == target else _as_text(a, target) for a in parts]
            chunks = [
                c for a in parts for c in (a.chunks if isinstance(a, pa.ChunkedArray) else [a])
            ]
            merged = pa.chunked_array(chunks, type=target)
            columns[k] = merged if order is None else merged.take(pa.array(order))
        if order is not None:
            rows = rows[order]
        raw = pc.utf8_rtrim(raw_all.take(pa.array(rows)), characters="\r\n")
        return pa.Table.from_arrays(
            [
                *(columns[src] for _, src in self.plan),
                pa.array(first_line + rows, pa.int64()),
                raw,
            ],
            names=[*(canon for canon, _ in self.plan), LINE_COLUMN, RAW_COLUMN],
        )


def _as_text(array: pa.Array | pa.ChunkedArray, target: pa.DataType) -> pa.Array | pa.ChunkedArray:
    """A piece of a column cast to the batch's type for it: its own kind, else text.

    All-null pieces take any type; mixed kinds become text (numbers written as numbers,
    booleans as ``true``/``false``).
    """
    return pc.cast(array, target)


# --------------------------------------------------------------------------------------------
# Streaming and opening


@dataclass(frozen=True)
class _Layout:
    path: Path
    name: str
    gzip: bool
    plan: tuple[tuple[str, str], ...]
    batch_rows: int
    encoding: str | None
    max_line_bytes: int


def _batches(layout: _Layout) -> Iterator[RawBatch]:
    """Stream the file as batches of at most ``batch_rows`` rows (table + rejects)."""
    reader = _BlockReader(layout.name, layout.plan)
    stream = ByteStream(layout.path, layout.gzip, layout.encoding, layout.name)
    size = {"bytes_per_line": 128.0}

    def target() -> int:
        return _block_target(layout.batch_rows, size["bytes_per_line"])

    blocks = in_background(
        line_blocks(
            stream, target, layout.name, cr_ends_lines=False, max_line_bytes=layout.max_line_bytes
        ),
        2,
    )
    line = 1
    try:
        for data, _final in blocks:
            lines = _split_lines(np.frombuffer(data, np.uint8))
            bounds = _batch_bounds(lines, layout.batch_rows)
            for first, stop in itertools.pairwise(bounds):
                batch = reader.block(
                    data, int(lines.starts[first]), _line_range(lines, first, stop), line + first
                )
                if batch.n_rows:
                    yield batch
            nlines = lines.starts.shape[0]
            if nlines:
                size["bytes_per_line"] = 0.5 * size["bytes_per_line"] + 0.5 * len(data) / nlines
            line += nlines
    except (OSError, zlib.error) as exc:
        raise UnreadableSourceError(layout.name, str(exc)) from exc
    except LineTooLong:
        raise RecordTooLongError(layout.name, line, layout.max_line_bytes) from None
    finally:
        blocks.close()  # type: ignore[attr-defined]
        stream.close()


def _block_target(batch_rows: int, bytes_per_line: float) -> int:
    """Bytes to read for about ``batch_rows`` lines, within the block bounds."""
    return int(min(max(0.95 * batch_rows * bytes_per_line, _MIN_BLOCK_BYTES), _MAX_BLOCK_BYTES))


def _sample_keys(path: Path, name: str, gz: bool, encoding: str | None) -> list[str]:
    """Union of the keys of the JSON objects among the first non-blank lines, in order seen.

    When none of them is a JSON object because the text is not UTF-8, the error says where.
    """
    stream = ByteStream(path, gz, encoding, name)
    try:
        data = b""
        while data.count(b"\n") <= HEADER_SAMPLE_LINES + 64 and len(data) < _MAX_BLOCK_BYTES:
            more = stream.read(1 << 20)
            if not more:
                break
            data += more
    except (OSError, zlib.error) as exc:
        raise UnreadableSourceError(name, str(exc)) from exc
    finally:
        stream.close()
    keys: dict[str, None] = {}
    seen = 0
    first_error = ""
    first_undecodable: tuple[int, UnicodeDecodeError] | None = None
    offset = 0
    for number, text in enumerate(data.split(b"\n"), start=1):
        start, offset = offset, offset + len(text) + 1
        if not text.strip():
            continue
        seen += 1
        if seen > HEADER_SAMPLE_LINES:
            break
        try:
            obj = json.loads(text.decode("utf-8"))
        except UnicodeDecodeError as exc:
            first_undecodable = first_undecodable or (start, exc)
            first_error = first_error or f"line {number}: not UTF-8"
            continue
        except ValueError as exc:
            first_error = first_error or f"line {number}: {exc}"
            continue
        if isinstance(obj, dict):
            keys.update(dict.fromkeys(obj))
        else:
            first_error = first_error or f"line {number}: not a JSON object"
    if seen == 0:
        raise UnreadableSourceError(name, "the file is empty (no JSON lines)")
    if not keys and first_undecodable is not None:
        start, error = first_undecodable
        at = start + error.start
        raise decode_error(
            name,
            stream.info.encoding,
            stream.info.skipped + at,
            data[at : at + error.end - error.start],
            data[max(0, at - 256) : at + 256],
            decompressed=gz,
        )
    if not keys:
        raise UnreadableSourceError(
            name, f"none of the first {seen} non-blank lines is a JSON object ({first_error})"
        )
    return list(keys)


def open_source(path: Path, options: ReadOptions) -> Source:
    """Open a JSON Lines file (optionally ``.gz``); its keys are checked before returning.

    Raises :class:`~cohortlens.errors.UnreadableSourceError` when the file cannot be read, is
    empty, or none of its first non-blank lines is a JSON object, and
    :class:`~cohortlens.errors.MissingColumnsError` when no sampled object has a required key
    (after ``options.mapping``; keys are top-level, no paths).
    """
    name = display_name(path)
    if options.batch_rows < 1:
        raise InputError(f"{name}: batch_rows must be >= 1, not {options.batch_rows}")
    if options.max_field_bytes < 1:
        raise InputError(f"--max-field-bytes must be >= 1, not {options.max_field_bytes}")
    gz = path.name.lower().endswith(".gz")
    try:
        keys = _sample_keys(path, name, gz, options.encoding)
    except OSError as exc:
        raise UnreadableSourceError(name, exc.strerror or str(exc)) from exc
    plan = column_plan(name, keys, options.mapping)
    layout = _Layout(
        path, name, gz, plan, options.batch_rows, options.encoding, options.max_field_bytes
    )
    return Source(name=name, columns=tuple(c for c, _ in plan), batches=partial(_batches, layout))
