"""Arrow tables in and out of PostgreSQL through COPY in CSV form, without per-row Python.

Writes render the table with Arrow's CSV writer straight into ``COPY ... FROM STDIN``; reads
parse ``COPY (query) TO STDOUT`` with Arrow's streaming CSV reader. Both sides agree on the
text forms: NULL is an unquoted empty field, strings are always quoted (so "" stays an empty
string), timestamps are ISO 8601 with an offset (the session runs in UTC, DateStyle ISO),
booleans are t/f on the way out.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

#: PostgreSQL text cannot hold NUL; such characters are stored as U+FFFD.
_NUL, _REPLACEMENT = "\x00", "\ufffd"

#: Bytes of CSV text parsed per Arrow block on reads (batches are re-sliced to ``batch_rows``).
_MIN_BLOCK, _MAX_BLOCK = 1 << 20, 1 << 27


class _CopySink:
    """A write-only file object that forwards Arrow's CSV output into a COPY."""

    closed = False

    def __init__(self, copy: psycopg.Copy) -> None:
        self._copy = copy

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._copy.write(view)
        return view.nbytes

    def flush(self) -> None:
        """Nothing is buffered here."""

    def close(self) -> None:
        self.closed = True


class _CopySource(io.RawIOBase):
    """A read-only file object over the data chunks (one per row) of a COPY TO STDOUT."""

    def __init__(self, chunks: Iterator[Any], first: bytes) -> None:
        super().__init__()
        self._chunks = chunks
        self._pending = first

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        parts, have = [self._pending], len(self._pending)
        while size < 0 or have < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            part = bytes(chunk)
            parts.append(part)
            have += len(part)
        data = b"".join(parts)
        if 0 <= size < len(data):
            self._pending = data[size:]
            return data[:size]
        self._pending = b""
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _without_nul(table: pa.Table) -> pa.Table:
    """Replace NUL characters in string columns (PostgreSQL text cannot store them)."""
    for i, field in enumerate(table.schema):
        if not pa.types.is_string(field.type) and not pa.types.is_large_string(field.type):
            continue
        col = table.column(i)
        if pc.any(pc.match_substring(col, _NUL)).as_py():
            table = table.set_column(
                i, field, pc.replace_substring(col, pattern=_NUL, replacement=_REPLACEMENT)
            )
    return table


def copy_in(conn: psycopg.Connection[Any], target: str, table: pa.Table) -> None:
    """Append ``table`` (columns in the order of ``target``'s column list) with one COPY.

    ``target`` is ``name (col, ...)``; the caller owns the transaction.
    """
    if table.num_rows == 0:
        return
    table = _without_nul(table)
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    with conn.cursor() as cur, cur.copy(f"COPY {target} FROM STDIN (FORMAT csv)") as copy:
        pacsv.write_csv(table, _CopySink(copy), options)


def _convert_options(schema: pa.Schema) -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(
        column_types={f.name: f.type for f in schema},
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        true_values=["t"],
        false_values=["f"],
    )


def copy_out(
    conn: psycopg.Connection[Any],
    query: str,
    params: Sequence[Any],
    schema: pa.Schema,
    *,
    batch_rows: int = 1 << 20,
) -> Iterator[pa.RecordBatch]:
    """Stream the rows of ``query`` (columns as ``schema``) as record batches.

    The connection stays busy until the iterator is exhausted or closed.
    """
    with conn.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT (FORMAT csv)", params) as copy:
        chunks = iter(copy)
        first = next(chunks, None)
        if first is None:
            return
        block = min(max(batch_rows * 96, _MIN_BLOCK), _MAX_BLOCK)
        reader = pacsv.open_csv(
            _CopySource(chunks, bytes(first)),
            read_options=pacsv.ReadOptions(
                column_names=schema.names, block_size=block, use_threads=False
            ),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=_convert_options(schema),
        )
        for batch in reader:
            for start in range(0, batch.num_rows, batch_rows):
                yield batch.slice(start, batch_rows).cast(schema)


def copy_out_table(
    conn: psycopg.Connection[Any], query: str, params: Sequence[Any], schema: pa.Schema
) -> pa.Table:
    """All rows of ``query`` as one table of ``schema``."""
    batches: Iterable[pa.RecordBatch] = list(copy_out(conn, query, params, schema))
    return pa.Table.from_batches(batches, schema=schema)
