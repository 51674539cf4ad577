"""Plumbing shared by the public-dataset adapters (OULAD, EdNet, KDD Cup 2015).

A dataset is a directory of CSV files: one *main* file streamed in bounded blocks (each row is
numbered with its physical line, header = line 1) and small *side* tables read whole and joined
by key. Every field is read as text; the adapters derive the canonical fields from it with
vectorized Arrow/NumPy code. Rows that cannot be split into fields (wrong field count) or whose
numeric/date fields are not numbers/dates are quarantined here, with their line and text, so
nothing is dropped without a reason.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from cohortlens.errors import InputError, MissingColumnsError, UnreadableSourceError
from cohortlens.events.readers._text import Utf8Checked, decode_error, nul_error
from cohortlens.events.schema import QUARANTINE_SCHEMA, RejectReason
from cohortlens.events.source import LINE_COLUMN, RAW_COLUMN, RawBatch

#: Bytes of CSV text parsed at a time: bounds memory whatever the file size.
_BLOCK_BYTES = 1 << 22
_US_PER_DAY = 86_400_000_000
#: Integers pyarrow's cast accepts (no sign '+', no blanks), at most 18 digits (fits int64).
_INT_PATTERN = r"^-?\d{1,18}$"
_FLOAT_PATTERN = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(?i:nan|inf|infinity)$"
_TS_TYPE = pa.timestamp("us", tz="UTC")
#: The hint of a decode error: the datasets are published in UTF-8 (no --encoding applies).
_DATASET_TIP = "the dataset's files are UTF-8 as published: is this one damaged or re-saved?"
#: What reading a (gzip) file may raise: ``BadGzipFile`` is an ``OSError``.
_READ_ERRORS = (OSError, EOFError, zlib.error)

#: Canonical columns every dataset adapter emits (``event_id`` is derived by ingestion).
EVENT_COLUMNS: tuple[str, ...] = (
    "learner_id",
    "ts",
    "domain",
    "item_id",
    "outcome",
    "duration_s",
)


@dataclass(frozen=True)
class TextBlock:
    """A block of the main file, every field as text (empty field -> null).

    Attributes:
        table: the header's columns, as strings.
        lines: physical line of each row (int64; header = line 1).
        rejects: rows of the block with the wrong number of fields (``QUARANTINE_SCHEMA``).
    """

    table: pa.Table
    lines: np.ndarray
    rejects: pa.Table

    def raw(self, rows: np.ndarray | None = None) -> pa.Array:
        """The text of ``rows`` (all rows if ``None``): fields joined with commas.

        For an unquoted CSV this is the line itself. Built on demand, as it costs as much as
        parsing when a block has many rows and few of them become events.
        """
        table = self.table if rows is None else self.table.take(pa.array(rows, pa.int64()))
        return join_fields(table)


def require_files(root: Path, names: Sequence[str], layout: str) -> None:
    """Raise :class:`UnreadableSourceError` unless ``root`` is a directory holding ``names``."""
    if not root.is_dir():
        raise UnreadableSourceError(str(root), f"the {layout} layout is a directory")
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise UnreadableSourceError(
            str(root), f"missing file(s) {', '.join(missing)} of the {layout} layout"
        )


def reject_mapping(options_mapping: Mapping[str, str], layout: str) -> None:
    """Raise :class:`InputError` for ``--map`` entries: dataset layouts have fixed columns."""
    if options_mapping:
        raise InputError(f"the {layout} layout has fixed columns; --map is not supported")


def _binary(path: Path) -> BinaryIO:
    """``path`` opened for bytes, decompressed when its name ends in ``.gz``."""
    if path.name.endswith(".gz"):
        return cast(BinaryIO, gzip.open(path, "rb"))
    return path.open("rb")


def _checked(path: Path) -> Utf8Checked:
    """``path``'s (decompressed) bytes, checked to be UTF-8 as they are read."""
    return Utf8Checked(
        _binary(path), str(path), decompressed=path.name.endswith(".gz"), tip=_DATASET_TIP
    )


def header_of(path: Path) -> list[str]:
    """Column names on the first line of ``path`` (gzip-decompressed for ``.gz``)."""
    try:
        with _binary(path) as file:
            head = file.read(1 << 20)
    except _READ_ERRORS as exc:
        raise UnreadableSourceError(str(path), str(exc)) from exc
    first = re.split(rb"\r|\n", head, maxsplit=1)[0]
    skip = len(codecs.BOM_UTF8) if first.startswith(codecs.BOM_UTF8) else 0
    try:
        text = first[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = skip + exc.start
        raise decode_error(
            str(path),
            "utf-8",
            at,
            first[at : skip + exc.end],
            first,
            decompressed=path.name.endswith(".gz"),
            tip=_DATASET_TIP,
        ) from None
    if "\0" in text:
        raise nul_error(str(path), skip + len(text[: text.index("\0")].encode()), first)
    try:
        names = next(csv.reader([text]), [])
    except csv.Error as exc:  # e.g. an unbalanced quote
        raise UnreadableSourceError(str(path), f"cannot parse the header line: {exc}") from exc
    if not any(n.strip() for n in names):
        raise UnreadableSourceError(str(path), "empty file (no header line)")
    return [n.strip() for n in names]


def require_columns(path: Path, needed: Sequence[str]) -> list[str]:
    """Return the header of ``path``; raise :class:`MissingColumnsError` if ``needed`` lack."""
    header = header_of(path)
    missing = [c for c in needed if c not in header]
    if missing:
        raise MissingColumnsError(str(path), missing, header)
    return header


def _convert_options(header: Sequence[str]) -> pv.ConvertOptions:
    return pv.ConvertOptions(
        column_types={c: pa.string() for c in header},
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )


def read_side_table(path: Path, needed: Sequence[str]) -> pa.Table:
    """Read a small side table whole, as text; any malformed row fails the source whole."""
    header = require_columns(path, needed)
    try:
        with _checked(path) as file:
            table = pv.read_csv(file, convert_options=_convert_options(header))
    except (pa.ArrowInvalid, *_READ_ERRORS) as exc:
        raise UnreadableSourceError(str(path), str(exc)) from exc
    return table.combine_chunks()


def _lines_after(first: int, n: int, skipped: np.ndarray) -> np.ndarray:
    """The first ``n`` line numbers >= ``first`` that are not in ``skipped``."""
    later = skipped[skipped >= first]
    candidates = np.arange(first, first + n + later.size, dtype=np.int64)
    return candidates[~np.isin(candidates, later)][:n]


def _field_count_rejects(source: str, rows: list[tuple[int, str, int, int]]) -> pa.Table:
    """Quarantine rows pyarrow could not split into the header's number of fields."""
    return pa.table(
        {
            "source": pa.array([source] * len(rows), pa.string()),
            "line": pa.array([r[0] for r in rows], pa.int64()),
            "reason": pa.array([RejectReason.WRONG_FIELD_COUNT.value] * len(rows), pa.string()),
            "detail": pa.array(
                [f"expected {r[2]} fields, found {r[3]}" for r in rows], pa.string()
            ),
            "raw": pa.array([r[1] for r in rows], pa.string()),
        },
        schema=QUARANTINE_SCHEMA,
    )


def stream_csv(
    path: Path, header: Sequence[str], block_bytes: int = _BLOCK_BYTES
) -> Iterator[TextBlock]:
    """Stream ``path`` (plain or ``.gz``) as text blocks numbered with physical lines.

    Empty lines become all-null rows (so line numbers stay exact); rows with the wrong field
    count are skipped by the parser and returned as ``WRONG_FIELD_COUNT`` rejects with the
    next block (or a final empty block).
    """
    source = str(path)
    skipped: list[tuple[int, str, int, int]] = []

    def on_invalid(row: pv.InvalidRow) -> str:
        skipped.append((int(row.number or 0), row.text, row.expected_columns, row.actual_columns))
        return "skip"

    file = _checked(path)
    try:
        reader = pv.open_csv(
            file,
            read_options=pv.ReadOptions(use_threads=False, block_size=block_bytes),
            parse_options=pv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=False),
            convert_options=_convert_options(header),
        )
    except (pa.ArrowInvalid, *_READ_ERRORS) as exc:
        file.close()
        raise UnreadableSourceError(source, str(exc)) from exc
    except BaseException:
        file.close()
        raise
    with file:
        yield from _blocks(reader, source, header, skipped)


def _blocks(
    reader: pv.CSVStreamingReader,
    source: str,
    header: Sequence[str],
    skipped: list[tuple[int, str, int, int]],
) -> Iterator[TextBlock]:
    """The body of :func:`stream_csv`: batches numbered with lines, rejects attached."""
    next_line, reported = 2, 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except (pa.ArrowInvalid, *_READ_ERRORS) as exc:
            raise UnreadableSourceError(source, str(exc)) from exc
        if batch.num_rows == 0:
            continue
        lines = _lines_after(next_line, batch.num_rows, np.array([s[0] for s in skipped], np.int64))
        next_line = int(lines[-1]) + 1
        done = [s for s in skipped[reported:] if s[0] < next_line]
        reported += len(done)
        table = pa.Table.from_batches([batch])
        yield TextBlock(table, lines, _field_count_rejects(source, done))
    if reported < len(skipped):
        empty = pa.table({c: pa.array([], pa.string()) for c in header})
        yield TextBlock(
            empty, np.empty(0, np.int64), _field_count_rejects(source, skipped[reported:])
        )


def join_fields(table: pa.Table) -> pa.Array:
    """Each row's fields joined with commas: the original line of an unquoted CSV."""
    if table.num_columns == 0:
        return pa.nulls(table.num_rows, pa.string())
    cols = [pc.fill_null(table.column(i).combine_chunks(), "") for i in range(table.num_columns)]
    joined: pa.Array = pc.binary_join_element_wise(*cols, ",")
    return joined


def parse_number(text: pa.Array, to: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Cast text to ``to`` (int64/float64): values (null if empty or bad) and a bad-token mask."""
    try:
        return pc.cast(text, to), np.zeros(len(text), dtype=bool)
    except pa.ArrowInvalid:
        pattern = _INT_PATTERN if pa.types.is_integer(to) else _FLOAT_PATTERN
        ok = pc.fill_null(pc.match_substring_regex(text, pattern), False)
        values = pc.cast(pc.if_else(ok, text, pa.scalar(None, pa.string())), to)
        bad = pc.and_(pc.is_valid(text), pc.invert(ok))
        return values, bad.to_numpy(zero_copy_only=False)


def parse_date_us(text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Parse ``YYYY-MM-DD`` text to int64 microseconds since the epoch at 00:00 UTC."""
    parsed = pc.strptime(text, format="%Y-%m-%d", unit="us", error_is_null=True)
    bad = pc.and_(pc.is_valid(text), pc.is_null(parsed)).to_numpy(zero_copy_only=False)
    return pc.cast(parsed, pa.int64()), bad


def days_to_us(days: pa.Array) -> pa.Array:
    """Whole days (int64) to microseconds (int64), nulls kept."""
    out: pa.Array = pc.multiply(days, pa.scalar(_US_PER_DAY, pa.int64()))
    return out


def as_timestamp(us: pa.Array) -> pa.Array:
    """int64 microseconds since the epoch to ``timestamp[us, UTC]``."""
    out: pa.Array = pc.cast(us, _TS_TYPE)
    return out


def lookup(keys: pa.Array, value_set: pa.Array) -> pa.Array:
    """Row of ``value_set`` holding each key (int32; null when absent or the key is null)."""
    out: pa.Array = pc.index_in(keys, value_set=value_set)
    return out


@dataclass(frozen=True)
class Problem:
    """Rows of a block flagged as malformed, with a per-row explanation.

    Attributes:
        mask: bool per row of the block.
        field: column named in the detail.
        values: the offending text per row of the block.
        why: what is wrong, e.g. ``"is not an integer"``.
    """

    mask: np.ndarray
    field: str
    values: pa.Array
    why: str


def split_malformed(
    source: str, block: TextBlock, problems: Sequence[Problem]
) -> tuple[np.ndarray, pa.Table]:
    """Rows to keep, and the ``MALFORMED_RECORD`` quarantine rows of the others.

    A row flagged by several problems is quarantined once, explained by the first.
    """
    n = block.table.num_rows
    flagged = np.zeros(n, dtype=bool)
    parts = []
    for p in problems:
        idx = np.flatnonzero(p.mask & ~flagged)
        flagged |= p.mask
        if idx.size == 0:
            continue
        take = pa.array(idx, pa.int64())
        detail = pc.binary_join_element_wise(
            pa.scalar(f"{p.field} "),
            pc.fill_null(p.values.take(take), ""),
            pa.scalar(f" {p.why}"),
            "",
        )
        parts.append(
            pa.table(
                {
                    "source": pa.array([source] * idx.size, pa.string()),
                    "line": pa.array(block.lines[idx], pa.int64()),
                    "reason": pa.array(
                        [RejectReason.MALFORMED_RECORD.value] * idx.size, pa.string()
                    ),
                    "detail": detail,
                    "raw": block.raw(idx),
                },
                schema=QUARANTINE_SCHEMA,
            )
        )
    rejects = [block.rejects, *parts]
    quarantine = pa.concat_tables(rejects).sort_by([("line", "ascending")])
    return ~flagged, quarantine


def emit(source: str, table: pa.Table, rejects: pa.Table, batch_rows: int) -> Iterator[RawBatch]:
    """Slice ``table`` into batches of at most ``batch_rows`` rows; rejects ride the first."""
    if table.num_rows == 0:
        if rejects.num_rows:
            yield RawBatch(source, table, rejects)
        return
    step = max(1, batch_rows)
    for start in range(0, table.num_rows, step):
        first = start == 0
        yield RawBatch(
            source,
            table.slice(start, step),
            rejects if first else QUARANTINE_SCHEMA.empty_table(),
        )


def event_table(columns: Mapping[str, pa.Array], lines: np.ndarray, raw: pa.Array) -> pa.Table:
    """Assemble the canonical columns (in ``EVENT_COLUMNS`` order) plus ``_line``/``_raw``."""
    data = {c: columns[c] for c in EVENT_COLUMNS}
    data[LINE_COLUMN] = pa.array(lines, pa.int64())
    data[RAW_COLUMN] = raw
    return pa.table(data)


def null_floats(n: int) -> pa.Array:
    """A float64 column of ``n`` nulls (fields a dataset does not have)."""
    return pa.nulls(n, pa.float64())
