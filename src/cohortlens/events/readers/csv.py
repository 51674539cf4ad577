"""Streaming CSV/TSV reader (plain or gzip): bounded memory, exact line numbers, no lost rows.

How a file is read:

* Text is UTF-8 unless ``options.encoding`` or a UTF-16/UTF-32 byte-order mark says otherwise;
  other encodings are transcoded to UTF-8 as the file streams (``_text.py``). The header is the
  first non-blank record; leading blank lines and a byte-order mark are skipped. A header that
  is not UTF-8, or holds a NUL byte, fails the file with its byte offset and a hint. When the
  header lacks required columns under the default delimiter, ``;``, tab and ``|`` are tried.
  Only the canonical columns (after ``--map``) are kept, each read as text (an empty field is
  the empty string); validation casts them. Quoting follows RFC 4180 as Arrow reads it:
  ``"`` opens a quoted value only at the start of a field, ``""`` inside quotes is a literal
  quote, and there is no escape character.
* The rest is cut into blocks of whole lines, about ``batch_rows`` records each, so memory
  stays bounded whatever the file size (about 250 MB above the interpreter with the default
  ``batch_rows``). A background thread reads ahead, and decompresses ``.gz`` input, while Arrow's
  multi-threaded CSV parser parses the current block.
* Fast path: Arrow parses the block as if every line were one record, and the result is
  checked. It passes when Arrow reports no malformed row, no row has an empty learner id (an
  empty line shows up that way), and (when the block has quotes or ``\\r``) Arrow found exactly
  one row per ``\\n`` line. Then ``_line`` is a plain range. Otherwise the exact path runs: a
  compiled scanner (:func:`_scan_records`, loaded on first need) finds every record's start
  line and field count with Arrow's quoting rules. Records with the wrong field count become
  rejects (``wrong_field_count``). Blank and whitespace-only lines are dropped. Arrow parses
  the rest, and the reader checks it found the same number of rows. Invalid UTF-8 in a record
  makes that record a ``malformed_record`` reject. A record longer than
  ``options.max_field_bytes`` fails the file naming its line; shorter ones of any length are
  parsed (Arrow's block grows to hold them).

What ``_line`` means: the 1-based physical line on which a record *starts* (the header is
line 1 unless blank lines precede it). A line ends at ``\\n``, ``\\r\\n`` or a lone ``\\r``,
the same rule Arrow uses to end records. Line breaks inside quoted values are counted too. So a
record with an embedded newline spans several lines, and the next record's number counts
them: every number is the line an editor shows for the start of the record.
"""

from __future__ import annotations

import functools
import queue
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO, TypeAlias, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from cohortlens.errors import InputError, MissingColumnsError, UnreadableSourceError
from cohortlens.events.readers._text import (
    StreamInfo,
    choose,
    decode_error,
    file_pieces,
    is_utf8,
    likely_encoding,
    nul_error,
    utf8_pieces,
)
from cohortlens.events.schema import CANONICAL_COLUMNS, QUARANTINE_SCHEMA, RejectReason
from cohortlens.events.source import (
    LINE_COLUMN,
    RawBatch,
    ReadOptions,
    Source,
    check_required,
    display_name,
    rejects_table,
)

#: Arrow's internal parse block (its unit of multi-threading); tuned on 2 cores.
_ARROW_BLOCK_BYTES = 1 << 20
#: Bounds on a read block; the target is ``batch_rows`` times the mean record size.
_MIN_BLOCK_BYTES = 1 << 16
_MAX_BLOCK_BYTES = 1 << 26
#: A record longer than this (an unbalanced quote, most likely) makes the file unreadable.
_MAX_RECORD_BYTES = 1 << 26
#: Decompressed piece handed over by the gzip thread, and how many may wait.
_GZIP_PIECE_BYTES = 1 << 22
_GZIP_QUEUE_PIECES = 4
_QUOTE = ord('"')
_LF = 10
_CR = 13
T = TypeVar("T")
#: How the detail of a ``malformed_record`` reject for invalid UTF-8 starts (ingest's hints).
UTF8_REJECT_DETAIL = "not valid UTF-8 text"
#: Text of a block: a fresh ``bytearray`` per block, or ``bytes``.
Text: TypeAlias = bytes | bytearray


# --------------------------------------------------------------------------------------------
# Column selection (shared with the JSON Lines and Parquet readers)


def column_plan(
    source: str, available: list[str], mapping: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """Pairs (canonical name, source column) for every canonical column the source provides.

    Raises :class:`InputError` for a mapping key that is not a canonical column, and
    :class:`~cohortlens.errors.MissingColumnsError` when a required column is absent.
    """
    unknown = sorted(set(mapping) - set(CANONICAL_COLUMNS))
    if unknown:
        raise InputError(
            f"{source}: --map names unknown canonical column(s) {', '.join(unknown)}; "
            f"expected one of {', '.join(CANONICAL_COLUMNS)}"
        )
    check_required(source, available, mapping)
    present = set(available)
    return tuple((c, mapping.get(c, c)) for c in CANONICAL_COLUMNS if mapping.get(c, c) in present)


#: An empty quarantine table (``Schema.empty_table`` would import pandas on its first call).
NO_REJECTS = pa.Table.from_batches([], schema=QUARANTINE_SCHEMA)


def int64_array(values: np.ndarray) -> pa.Array:
    """``values`` as an Arrow int64 array, without a copy.

    ``pa.array`` would do the same, but its first call imports pandas (half a second).
    """
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


# --------------------------------------------------------------------------------------------
# Bytes in: plain or gzip, in blocks


class _Failure:
    """An exception raised by a background producer, carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


def in_background(items: Iterator[T], depth: int) -> Iterator[T]:
    """Iterate ``items`` in a daemon thread, up to ``depth`` items ahead of the consumer.

    I/O and decompression release the GIL, so the producer overlaps the consumer's parsing.
    The producer's exceptions are re-raised here. Closing this generator stops the producer.
    """
    channel: queue.Queue[object] = queue.Queue(depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                channel.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    break
            else:
                put(_DONE)
        except BaseException as exc:  # carried to the consumer, which raises it
            put(_Failure(exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = channel.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


def _inflate(file: BinaryIO) -> Iterator[bytes]:
    """Decompressed pieces of a gzip file (concatenated members supported)."""
    inflater = zlib.decompressobj(wbits=31)
    started = False  # has the current member received any byte?
    while raw := file.read(_GZIP_PIECE_BYTES // 4):
        while raw:
            started = True
            out = inflater.decompress(raw)
            if out:
                yield out
            if inflater.eof:  # the next gzip member, if any
                raw = inflater.unused_data
                inflater = zlib.decompressobj(wbits=31)
                started = False
            else:
                raw = b""
    if started and not inflater.eof:
        raise zlib.error("truncated gzip stream")


class ByteStream:
    """Sequential UTF-8 bytes of a plain or gzip file, its byte-order mark removed.

    Gzip is decompressed, and text in another encoding (``encoding``, or a UTF-16/UTF-32 BOM
    when ``encoding`` is ``None``) transcoded to UTF-8, in a background thread; a plain UTF-8
    file is read directly. ``info`` says which encoding was used and how many bytes (a BOM)
    were skipped: it is set once the first bytes have been read.
    """

    def __init__(self, path: Path, gzip: bool, encoding: str | None = None, name: str = "") -> None:
        self._file = path.open("rb")
        self.gzip = gzip
        self.info = StreamInfo()
        self._pieces: Iterator[bytes] | None = None
        name = name or str(path)
        try:
            if gzip:
                decoded = utf8_pieces(
                    _inflate(self._file), encoding, name, self.info, decompressed=True
                )
                self._pieces = in_background(decoded, _GZIP_QUEUE_PIECES)
            else:
                chosen, skip = choose(encoding, self._file.read(4))
                if is_utf8(chosen):
                    self.info.encoding, self.info.skipped = chosen, skip
                    self._file.seek(skip)
                else:
                    self._file.seek(0)
                    decoded = utf8_pieces(file_pieces(self._file), encoding, name, self.info)
                    self._pieces = in_background(decoded, _GZIP_QUEUE_PIECES)
        except BaseException:
            self._file.close()
            raise
        self._pending = bytearray()

    def read_after(self, prefix: Text, n: int) -> tuple[bytearray, bool]:
        """``prefix`` followed by the next ``n`` bytes, and whether the end was reached.

        The result is a new buffer, written once (no further copies of the data).
        """
        out = bytearray(len(prefix) + n)
        out[: len(prefix)] = prefix
        filled = len(prefix)
        view = memoryview(out)
        if self._pieces is None:
            while filled < len(out):
                got = self._file.readinto(view[filled:])
                if not got:
                    break
                filled += got
        else:
            while len(self._pending) < n:
                piece = next(self._pieces, None)
                if piece is None:
                    break
                self._pending += piece
            take = min(n, len(self._pending))
            view[filled : filled + take] = self._pending[:take]
            del self._pending[:take]
            filled += take
        view.release()
        eof = filled < len(out)
        del out[filled:]
        return out, eof

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at the end of the data."""
        return bytes(self.read_after(b"", n)[0])

    def close(self) -> None:
        """Stop the decompression thread (if any) and close the file."""
        if self._pieces is not None:
            self._pieces.close()  # type: ignore[attr-defined]
        self._file.close()


class LineTooLong(Exception):  # noqa: N818 (a signal to the consumer, which knows the line)
    """A line longer than the reader's limit: the consumer names the line it starts on."""


def line_blocks(
    stream: ByteStream,
    target: Callable[[], int],
    name: str,
    *,
    cr_ends_lines: bool = True,
    max_line_bytes: int = _MAX_RECORD_BYTES,
) -> Iterator[tuple[bytearray, bool]]:
    """Blocks of whole lines (about ``target()`` bytes each) and whether each is the last.

    A block ends just after a ``\\n`` unless it is the last one. With ``cr_ends_lines``, a
    block without any ``\\n`` ends after its last ``\\r`` that is not its last byte. A line
    longer than a block grows the block; past ``max_line_bytes`` :class:`LineTooLong` is raised
    (the first line of the pending block is the long one).
    """
    carry: Text = b""
    want = target()
    while True:
        data, eof = stream.read_after(carry, max(want - len(carry), 1 << 12))
        if eof:
            if data:
                yield data, True
            return
        cut = data.rfind(b"\n") + 1
        if cut == 0 and cr_ends_lines:
            cut = data.rfind(b"\r", 0, len(data) - 1) + 1
        if cut == 0:  # no complete line yet: read more
            if len(data) > max_line_bytes:
                raise LineTooLong
            carry, want = data, min(2 * len(data), max_line_bytes + 2)
            continue
        carry = data[cut:]
        del data[cut:]
        yield data, False
        want = target()


# --------------------------------------------------------------------------------------------
# The record scanner (Arrow's quoting rules, exact line numbers)


def _scan_records(
    buf: np.ndarray,
    delim: int,
    max_records: int,
    is_final: bool,
    starts: np.ndarray,
    ends: np.ndarray,
    fields: np.ndarray,
    lines: np.ndarray,
    blank: np.ndarray,
) -> tuple[int, int, int, bool]:
    """Split ``buf`` into records the way Arrow's CSV parser does, counting physical lines.

    Writes, per non-empty record, its byte range ``[starts, ends)`` (terminator excluded), its
    field count, the line (0-based, relative to ``buf``) it starts on, and whether it is
    whitespace only. Empty lines are skipped. Stops after ``max_records`` records that are not
    whitespace only, when the output arrays are full, or where more data is needed to decide
    (a ``\\r`` or a quote at the end of a non-final buffer).

    Returns (records written, bytes consumed, line breaks consumed, any record spans lines).
    Compiled with numba (:func:`_compiled_scanner`) for blocks; run as Python for headers.
    """
    n = buf.shape[0]
    cap = starts.shape[0]
    nout = 0
    nfull = 0
    consumed = 0
    lines_consumed = 0
    multiline = False
    line = 0
    i = 0
    # Per-record state. state: 0 = at a field start, 1 = inside an unquoted field, 2 = quoted.
    rec_start = 0
    rec_line = 0
    nfields = 1
    nonws = False
    state = 0
    stopped = False
    while i < n:
        c = buf[i]
        if state == 2:
            if c == _QUOTE:
                if i + 1 < n:
                    if buf[i + 1] == _QUOTE:
                        i += 2
                        continue
                elif not is_final:
                    stopped = True
                    break
                state = 1
            elif c == _LF:
                line += 1
                multiline = True
            elif c == _CR:
                if i + 1 < n:
                    if buf[i + 1] != _LF:
                        line += 1
                        multiline = True
                elif not is_final:
                    stopped = True
                    break
                else:
                    line += 1
                    multiline = True
            i += 1
            continue
        if c == _LF or c == _CR:  # noqa: SIM109 (plain compares compile to less in numba)
            end = i
            if c == _CR:
                if i + 1 < n:
                    if buf[i + 1] == _LF:
                        i += 1
                elif not is_final:
                    stopped = True
                    break
            if end > rec_start:
                if nout == cap or (nonws and nfull == max_records):
                    stopped = True
                    break
                starts[nout] = rec_start
                ends[nout] = end
                fields[nout] = nfields
                lines[nout] = rec_line
                blank[nout] = not nonws
                nout += 1
                if nonws:
                    nfull += 1
            i += 1
            line += 1
            consumed = i
            lines_consumed = line
            rec_start = i
            rec_line = line
            nfields = 1
            nonws = False
            state = 0
            continue
        if c == delim:
            nfields += 1
            nonws = True
            state = 0
        elif state == 0 and c == _QUOTE:
            state = 2
            nonws = True
        else:
            state = 1
            if c != 32 and c != 9:
                nonws = True
        i += 1
    # The last record of the file may have no line terminator (or end in an unbalanced quote).
    room = not (nout == cap or (nonws and nfull == max_records))
    if not stopped and is_final and rec_start < n and room:
        starts[nout] = rec_start
        ends[nout] = n
        fields[nout] = nfields
        lines[nout] = rec_line
        blank[nout] = not nonws
        nout += 1
        consumed = n
        lines_consumed = line
    return nout, consumed, lines_consumed, multiline


@dataclass(frozen=True)
class _Scan:
    """Records of one region of the text, as found by :func:`_scan_records`."""

    starts: np.ndarray
    ends: np.ndarray
    fields: np.ndarray
    lines: np.ndarray
    blank: np.ndarray
    consumed: int
    lines_consumed: int
    multiline: bool


@functools.cache
def _compiled_scanner() -> Callable[..., tuple[int, int, int, bool]]:
    """:func:`_scan_records` compiled by numba, on first need (cached on disk).

    Importing numba and loading the compiled code costs about a second per process, so it
    is deferred until a block needs the exact path. Headers and clean files never pay it.
    """
    import numba

    compiled: Callable[..., tuple[int, int, int, bool]] = numba.njit(cache=True, nogil=True)(
        _scan_records
    )
    return compiled


def _scan(
    data: Text, lo: int, delim: int, max_records: int, is_final: bool, *, compiled: bool = True
) -> _Scan:
    """Run the scanner over ``data[lo:]`` (offsets in the result are relative to ``lo``).

    ``compiled=False`` runs it as plain Python: for a header, which stops after two records.
    """
    buf = np.frombuffer(data, dtype=np.uint8, offset=lo)
    cap = max_records + 1024
    starts = np.empty(cap, np.int64)
    ends = np.empty(cap, np.int64)
    fields = np.empty(cap, np.int64)
    lines = np.empty(cap, np.int64)
    blank = np.empty(cap, np.bool_)
    kernel = _compiled_scanner() if compiled else _scan_records
    nout, consumed, lines_consumed, multiline = kernel(
        buf, delim, max_records, is_final, starts, ends, fields, lines, blank
    )
    return _Scan(
        starts[:nout],
        ends[:nout],
        fields[:nout],
        lines[:nout],
        blank[:nout],
        int(consumed),
        int(lines_consumed),
        bool(multiline),
    )


# --------------------------------------------------------------------------------------------
# Header


@dataclass(frozen=True)
class _Layout:
    """What ``open_source`` learned from the header, reused by every ``batches()`` call."""

    path: Path
    name: str
    gzip: bool
    delimiter: str
    header: tuple[str, ...]
    #: Bytes of the (decompressed) text up to the first data record, and its line number.
    data_offset: int
    first_line: int
    plan: tuple[tuple[str, str], ...]
    batch_rows: int
    #: ``ReadOptions.encoding`` (``None``: UTF-8 unless a BOM says otherwise).
    encoding: str | None = None
    #: The longest record accepted, in bytes (``ReadOptions.max_field_bytes``).
    max_record_bytes: int = _MAX_RECORD_BYTES


def _delimiter(path: Path, options: ReadOptions) -> str:
    """The field separator: the option, else tab for ``.tsv`` files, else comma."""
    if options.delimiter is not None:
        d = options.delimiter
    else:
        name = path.name.lower()
        d = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
    if len(d.encode()) != 1 or d in ('"', "\n", "\r"):
        raise InputError(f"{path}: the CSV delimiter must be one ASCII character, not {d!r}")
    return d


def _read_header(
    stream: ByteStream, name: str, delim: str, max_record_bytes: int = _MAX_RECORD_BYTES
) -> tuple[tuple[str, ...], int, int]:
    """Parse the header (first non-blank record); return (names, its end offset, next line).

    The end offset and next line are those of the first data record: the header, the lines
    before it and any blank lines right after it are consumed. A header that is not UTF-8
    text, or holds a NUL byte, fails the file with the byte offset and a hint.
    """
    data = b""
    want = 1 << 16
    lo = 0
    lines_before = 0  # line breaks of the blank lines skipped before ``lo``
    while True:
        more = stream.read(want - len(data))
        final = len(more) < want - len(data)
        data += more
        # Plain Python over a header is quick; a huge first line needs the compiled scanner.
        scan = _scan(data, lo, ord(delim), 1, final, compiled=len(data) > 1 << 20)
        full = np.flatnonzero(~scan.blank)
        if full.size:
            break
        if scan.consumed:  # only blank lines so far: skip them and scan on
            lo += scan.consumed
            lines_before += scan.lines_consumed
            continue
        if final:
            raise UnreadableSourceError(name, "the file is empty (no header line)")
        if want >= max_record_bytes:
            raise RecordTooLongError(name, 1 + lines_before, max_record_bytes)
        want *= 4
    k = int(full[0])
    start = lo + int(scan.starts[k])
    text = data[start : lo + int(scan.ends[k])]
    _check_header_text(stream, name, data, start, text)
    try:
        table = pv.read_csv(
            pa.py_buffer(text + b"\n"),
            read_options=pv.ReadOptions(use_threads=False),
            parse_options=pv.ParseOptions(delimiter=delim, newlines_in_values=True),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise UnreadableSourceError(name, f"cannot parse the header line: {exc}") from exc
    return tuple(table.column_names), lo + scan.consumed, 1 + lines_before + scan.lines_consumed


def _check_header_text(stream: ByteStream, name: str, data: Text, start: int, text: Text) -> None:
    """Raise a decode error (with the byte offset in the file) unless ``text`` is clean UTF-8."""
    offset = stream.info.skipped + start  # bytes before ``data[0]``: a BOM, if any
    decompressed = stream.gzip
    sample = bytes(data[: start + len(text)][:4096])
    nul = text.find(b"\0")
    if nul >= 0:
        raise nul_error(name, offset + nul, sample)
    try:
        bytes(text).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise decode_error(
            name,
            stream.info.encoding,
            offset + exc.start,
            bytes(text[exc.start : exc.end]),
            sample,
            decompressed=decompressed,
        ) from None


class RecordTooLongError(InputError):
    """A CSV record longer than ``ReadOptions.max_field_bytes`` (an unbalanced quote, often)."""

    def __init__(self, source: str, line: int, limit: int) -> None:
        super().__init__(
            f"{source}: the record starting at line {line} is longer than {_size(limit)} "
            f"(--max-field-bytes {limit}); if it is real, raise --max-field-bytes, else look "
            "for an unbalanced quote there"
        )


def _size(n: int) -> str:
    """Bytes in words: ``64 MiB``, ``1.5 KiB``, ``100 bytes``."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


# --------------------------------------------------------------------------------------------
# Blocks -> batches


@dataclass
class _Rejects:
    """Structural rejects of one block, collected row by row (they are rare)."""

    lines: list[int | None]
    reasons: list[str]
    details: list[str | None]
    raws: list[str | None]

    def add(self, line: int, reason: RejectReason, detail: str, raw: Text) -> None:
        self.lines.append(line)
        self.reasons.append(reason.value)
        self.details.append(detail)
        self.raws.append(raw.decode("utf-8", errors="replace"))

    def table(self, source: str) -> pa.Table:
        """The quarantine table, in line order."""
        order = np.argsort(np.asarray(self.lines, dtype=np.int64), kind="stable").tolist()
        return rejects_table(
            source,
            [self.lines[i] for i in order],
            [self.reasons[i] for i in order],
            [self.details[i] for i in order],
            [self.raws[i] for i in order],
        )


class _BlockParser:
    """Parses blocks of one file's records into batches (fast path, else the exact path)."""

    def __init__(self, layout: _Layout) -> None:
        self.layout = layout
        self.ncols = len(layout.header)
        self.delim = ord(layout.delimiter)
        # Arrow sees positional names, so duplicate or odd header names cannot clash.
        names = [f"c{i}" for i in range(self.ncols)]
        position = {h: i for i, h in reversed(list(enumerate(layout.header)))}
        self.columns = [(canon, f"c{position[src]}") for canon, src in layout.plan]
        self.keep = sorted({col for _, col in self.columns}, key=lambda c: int(c[1:]))
        self.id_column = dict(self.columns)["learner_id"]
        self.read_options = pv.ReadOptions(
            column_names=names, use_threads=True, block_size=_ARROW_BLOCK_BYTES
        )
        # Arrow checks every value is UTF-8 (about a third of its parse time); text that is
        # all ASCII is valid UTF-8 and so is every field cut from it, so that check is skipped
        # for blocks that pass ``bytes.isascii`` (a fast, word-at-a-time scan).
        self.convert_options, self.convert_options_ascii = (
            pv.ConvertOptions(
                include_columns=self.keep,
                column_types={c: pa.string() for c in self.keep},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                check_utf8=check,
            )
            for check in (True, False)
        )

    def _parse(
        self,
        buffer: pa.Buffer,
        *,
        newlines: bool,
        ignore_empty: bool,
        ascii: bool,
        longest: int = 0,
    ) -> pa.Table:
        """Arrow-parse ``buffer``; a malformed row raises ``pa.ArrowInvalid``.

        ``ascii`` promises the buffer is ASCII text (so Arrow need not check UTF-8). No
        invalid-row handler: Arrow would decode a bad row's text for it and print a traceback
        when that text is not UTF-8. Arrow's block must hold the ``longest`` record whole.
        """
        options = pv.ParseOptions(
            delimiter=self.layout.delimiter,
            quote_char='"',
            double_quote=True,
            escape_char=False,
            newlines_in_values=newlines,
            ignore_empty_lines=ignore_empty,
        )
        read_options = self.read_options
        if 2 * longest > _ARROW_BLOCK_BYTES:
            read_options = pv.ReadOptions(
                column_names=read_options.column_names,
                use_threads=True,
                block_size=1 << (2 * longest).bit_length(),
            )
        return pv.read_csv(
            pa.BufferReader(buffer),
            read_options=read_options,
            parse_options=options,
            convert_options=self.convert_options_ascii if ascii else self.convert_options,
        )

    def _table(self, parsed: pa.Table, lines: np.ndarray) -> pa.Table:
        """Canonical column names (renamed, duplicated if mapped twice) plus ``_line``."""
        arrays = [parsed.column(col) for _, col in self.columns]
        names = [canon for canon, _ in self.columns]
        return pa.Table.from_arrays([*arrays, int64_array(lines)], names=[*names, LINE_COLUMN])

    def fast(self, data: Text, lo: int, hi: int, first_line: int) -> pa.Table | None:
        """Parse ``data[lo:hi]`` assuming one record per line; ``None`` if that is not so.

        Empty lines are kept as rows and a malformed row makes Arrow raise. The rows are then
        exactly the lines when: Arrow raised nothing; no row has an empty learner id (an empty
        line is a row of empty fields); and, if the region has quotes or ``\\r``, Arrow found as
        many rows as there are ``\\n`` lines, with no lone ``\\r``. A quoted value holding a
        newline merges lines, and a lone ``\\r`` splits one, so the counts differ.
        """
        limit = self.layout.max_record_bytes
        if limit < _ARROW_BLOCK_BYTES and _longest_line(data, lo, hi) > limit:
            return None  # the exact path names the record (Arrow takes longer ones whole)
        try:
            parsed = self._parse(
                pa.py_buffer(memoryview(data)[lo:hi]),
                newlines=False,
                ignore_empty=False,
                ascii=data.isascii(),
            )
        except pa.ArrowInvalid:  # a malformed row, invalid UTF-8, a record longer than a block
            return None
        n = parsed.num_rows
        if n == 0:
            return None
        if pc.min(pc.binary_length(parsed.column(self.id_column))).as_py() == 0:
            return None
        has_quote = data.find(b'"', lo, hi) >= 0
        has_cr = data.find(b"\r", lo, hi) >= 0
        if has_quote or has_cr:
            # ``bytearray.count`` scans without the temporary array a NumPy compare makes.
            if data.count(b"\n", lo, hi) + int(data[hi - 1] != _LF) != n:
                return None
            if has_quote and has_cr and _has_lone_cr(np.frombuffer(data, np.uint8, hi - lo, lo)):
                return None
        return self._table(parsed, np.arange(first_line, first_line + n, dtype=np.int64))

    def exact(
        self, data: Text, lo: int, is_final: bool, first_line: int
    ) -> tuple[pa.Table, pa.Table, _Scan]:
        """Scan ``data[lo:]`` record by record, reject malformed ones, Arrow-parse the rest."""
        scan = _scan(data, lo, self.delim, self.layout.batch_rows, is_final)
        if scan.starts.shape[0]:
            lengths = scan.ends - scan.starts
            longest = int(np.argmax(lengths))
            if lengths[longest] > self.layout.max_record_bytes:
                raise RecordTooLongError(
                    self.layout.name,
                    first_line + int(scan.lines[longest]),
                    self.layout.max_record_bytes,
                )
        rejects = _Rejects([], [], [], [])
        good = ~scan.blank & (scan.fields == self.ncols)
        for k in np.flatnonzero(~scan.blank & ~good).tolist():
            rejects.add(
                first_line + int(scan.lines[k]),
                RejectReason.WRONG_FIELD_COUNT,
                f"expected {self.ncols} fields, got {int(scan.fields[k])}",
                data[lo + int(scan.starts[k]) : lo + int(scan.ends[k])],
            )
        parsed, good = self._parse_good(data, lo, scan, good, first_line, rejects)
        table = self._table(parsed, first_line + scan.lines[good])
        return table, rejects.table(self.layout.name), scan

    def _parse_good(
        self,
        data: Text,
        lo: int,
        scan: _Scan,
        good: np.ndarray,
        first_line: int,
        rejects: _Rejects,
    ) -> tuple[pa.Table, np.ndarray]:
        """Arrow-parse the ``good`` records, after dropping the others from the text.

        Records Arrow refuses as invalid UTF-8 join the rejects (``malformed_record``).
        """
        ascii = data.isascii()
        for attempt in range(2):
            if not good.any():
                empty = pa.array([], pa.string())
                return pa.table({c: empty for c in self.keep}), good
            good_starts, good_ends = scan.starts[good], scan.ends[good]
            try:
                parsed = self._parse(
                    _kept_text(data, lo, scan, good),
                    newlines=scan.multiline,
                    ignore_empty=True,
                    ascii=ascii,
                    longest=int((good_ends - good_starts).max()),
                )
            except pa.ArrowInvalid as exc:
                if attempt or "utf8" not in str(exc).lower().replace("-", ""):
                    raise UnreadableSourceError(self.layout.name, str(exc)) from exc
                bad = _invalid_utf8(data, lo, scan, good)
                for k, detail in bad:
                    rejects.add(
                        first_line + int(scan.lines[k]),
                        RejectReason.MALFORMED_RECORD,
                        detail,
                        data[lo + int(scan.starts[k]) : lo + int(scan.ends[k])],
                    )
                good = good.copy()
                good[np.asarray([k for k, _ in bad], dtype=np.int64)] = False
                continue
            if parsed.num_rows != int(good.sum()):
                raise UnreadableSourceError(
                    self.layout.name,
                    f"records from line {first_line} on could not be split consistently "
                    f"(expected {int(good.sum())} rows; Arrow found {parsed.num_rows})",
                )
            return parsed, good
        raise AssertionError("unreachable")  # pragma: no cover


def _longest_line(data: Text, lo: int, hi: int) -> int:
    """Bytes of the longest ``\\n``-terminated line in ``data[lo:hi]`` (its break excluded)."""
    breaks = np.flatnonzero(np.frombuffer(data, np.uint8, hi - lo, lo) == _LF)
    bounds = np.concatenate(([-1], breaks, [hi - lo]))
    return int((np.diff(bounds) - 1).max())


def _has_lone_cr(region: np.ndarray) -> bool:
    """Whether some ``\\r`` in ``region`` is not followed by ``\\n``."""
    cr = np.flatnonzero(region == _CR)
    after = np.minimum(cr + 1, region.shape[0] - 1)
    return bool(np.any((cr + 1 >= region.shape[0]) | (region[after] != _LF)))


def _kept_text(data: Text, lo: int, scan: _Scan, good: np.ndarray) -> pa.Buffer:
    """The scanned text without the records that are not ``good`` (line breaks stay)."""
    end = lo + scan.consumed
    drop = np.flatnonzero(~good).tolist()
    view = memoryview(data)
    if not drop:
        return pa.py_buffer(view[lo:end])
    pieces: list[memoryview] = []
    pos = lo
    for k in drop:
        pieces.append(view[pos : lo + int(scan.starts[k])])
        pos = lo + int(scan.ends[k])
    pieces.append(view[pos:end])
    return pa.py_buffer(b"".join(pieces))


def _invalid_utf8(data: Text, lo: int, scan: _Scan, good: np.ndarray) -> list[tuple[int, str]]:
    """``good`` records whose bytes are not valid UTF-8, each with why (a rare, slow path)."""
    bad: list[tuple[int, str]] = []
    for k in np.flatnonzero(good).tolist():
        record = bytes(data[lo + int(scan.starts[k]) : lo + int(scan.ends[k])])
        try:
            record.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad.append((k, invalid_utf8_detail(record, exc)))
    return bad


def invalid_utf8_detail(record: bytes, exc: UnicodeDecodeError) -> str:
    """The quarantine detail of a record that is not UTF-8 (names the byte and a fix)."""
    guess = likely_encoding(record) or "cp1252"
    return (
        f"{UTF8_REJECT_DETAIL}: byte 0x{record[exc.start]:02X} at byte {exc.start + 1} of the "
        f"record; if the file is in another encoding, pass it (e.g. --encoding {guess})"
    )


def _batches(layout: _Layout) -> Iterator[RawBatch]:
    """Stream the data records of ``layout`` as batches of at most ``batch_rows`` rows."""
    stream = ByteStream(layout.path, layout.gzip, layout.encoding, layout.name)
    try:
        skipped = 0
        while skipped < layout.data_offset:  # the header, already parsed by open_source
            got = len(stream.read(min(layout.data_offset - skipped, _MAX_BLOCK_BYTES)))
            if got == 0:
                return
            skipped += got
        yield from _parse_blocks(stream, _BlockParser(layout), layout)
    finally:
        stream.close()


def _parse_blocks(stream: ByteStream, parser: _BlockParser, layout: _Layout) -> Iterator[RawBatch]:
    """Parse blocks of lines (read ahead by a background thread) into batches.

    The fast path takes a whole block. The exact path takes up to ``batch_rows`` records at a
    time. Its last, incomplete record (a quoted value running into the next block) is carried
    over to the next block.
    """
    batch_rows = layout.batch_rows
    size = {"bytes_per_row": float(max(layout.data_offset, 16))}

    def target() -> int:
        return _block_target(batch_rows, size["bytes_per_row"])

    line = layout.first_line
    pending: Text = b""
    try_fast = True
    limit = layout.max_record_bytes
    blocks = in_background(line_blocks(stream, target, layout.name, max_line_bytes=limit), 2)
    try:
        for block, final in blocks:
            data = pending + block if pending else block
            lo = 0
            while lo < len(data):
                table = None
                if parser.ncols >= 2 and try_fast:
                    table = parser.fast(data, lo, len(data), line)
                    try_fast = table is not None
                if table is not None:
                    consumed, rows = len(data) - lo, table.num_rows
                    parts = -(-rows // batch_rows)  # equal parts of at most batch_rows rows
                    for k in range(parts):
                        yield RawBatch(
                            layout.name,
                            table.slice(
                                k * rows // parts, (k + 1) * rows // parts - k * rows // parts
                            ),
                            NO_REJECTS,
                        )
                    line += rows
                else:
                    table, rejects, scan = parser.exact(data, lo, final, line)
                    consumed, rows = scan.consumed, table.num_rows + rejects.num_rows
                    if consumed == 0:  # an incomplete record: wait for the next block
                        if final:  # cannot happen: a final scan consumes all it is given
                            raise UnreadableSourceError(layout.name, f"stuck at line {line}")
                        break
                    if rows:
                        yield RawBatch(layout.name, table, rejects)
                    line += scan.lines_consumed
                    # Try the fast path again once a block shows it would have worked.
                    try_fast = _one_record_per_line(scan, table.num_rows)
                lo += consumed
                if rows:
                    size["bytes_per_row"] = 0.5 * size["bytes_per_row"] + 0.5 * consumed / rows
            pending = data[lo:]
            if len(pending) > limit:
                raise RecordTooLongError(layout.name, line, limit)
    except LineTooLong:  # from ``line_blocks``: the pending record, or a line, starts at ``line``
        raise RecordTooLongError(layout.name, line, limit) from None
    finally:
        blocks.close()  # type: ignore[attr-defined]


def _one_record_per_line(scan: _Scan, good_rows: int) -> bool:
    """Whether a scanned region was one valid record per line (the fast path's case)."""
    n = scan.starts.shape[0]
    return not scan.multiline and good_rows == n and scan.lines_consumed in (n - 1, n)


def _block_target(batch_rows: int, bytes_per_row: float) -> int:
    """Bytes to read for about ``batch_rows`` records (a little under, to avoid splitting)."""
    return int(min(max(0.95 * batch_rows * bytes_per_row, _MIN_BLOCK_BYTES), _MAX_BLOCK_BYTES))


# --------------------------------------------------------------------------------------------
# Entry point


def open_source(path: Path, options: ReadOptions) -> Source:
    """Open a CSV/TSV file (optionally ``.gz``); the header is checked before returning.

    Raises :class:`~cohortlens.errors.UnreadableSourceError` when the file cannot be opened,
    decompressed or decoded, or has no header, and
    :class:`~cohortlens.errors.MissingColumnsError` when a required column (after
    ``options.mapping``) is absent. Without ``options.delimiter``, a header that the default
    delimiter leaves lacking required columns is tried with ``;``, tab and ``|``: the one
    delimiter that yields them all is used. An explicit delimiter is never replaced, but the
    error then names the delimiter that would work.
    """
    name = display_name(path)
    if options.batch_rows < 1:
        raise InputError(f"{name}: batch_rows must be >= 1, not {options.batch_rows}")
    if options.max_field_bytes < 1:
        raise InputError(f"--max-field-bytes must be >= 1, not {options.max_field_bytes}")
    delim = _delimiter(path, options)
    gz = path.name.lower().endswith(".gz")
    header, data_offset, first_line = _header(path, name, gz, delim, options)
    try:
        plan = column_plan(name, list(header), options.mapping)
    except MissingColumnsError as exc:
        delim, header, data_offset, first_line, plan = _other_delimiter(
            path, name, gz, delim, options, exc
        )
    for _, src in plan:
        if header.count(src) > 1:
            raise UnreadableSourceError(name, f"column {src!r} appears {header.count(src)} times")
    layout = _Layout(
        path=path,
        name=name,
        gzip=gz,
        delimiter=delim,
        header=header,
        data_offset=data_offset,
        first_line=first_line,
        plan=plan,
        batch_rows=options.batch_rows,
        encoding=options.encoding,
        max_record_bytes=options.max_field_bytes,
    )
    return Source(name=name, columns=tuple(c for c, _ in plan), batches=partial(_guarded, layout))


#: Delimiters tried when the header lacks required columns (``,`` first: the default).
_DELIMITERS = (",", ";", "\t", "|")


def _header(
    path: Path, name: str, gz: bool, delim: str, options: ReadOptions
) -> tuple[tuple[str, ...], int, int]:
    """:func:`_read_header` of a fresh stream (names, data offset, first data line)."""
    try:
        stream = ByteStream(path, gz, options.encoding, name)
    except OSError as exc:
        raise UnreadableSourceError(name, exc.strerror or str(exc)) from exc
    try:
        return _read_header(stream, name, delim, options.max_field_bytes)
    except (OSError, zlib.error) as exc:
        raise UnreadableSourceError(name, str(exc)) from exc
    finally:
        stream.close()


def _other_delimiter(
    path: Path, name: str, gz: bool, delim: str, options: ReadOptions, exc: MissingColumnsError
) -> tuple[str, tuple[str, ...], int, int, tuple[tuple[str, str], ...]]:
    """The layout under the one other delimiter giving the required columns (see open_source).

    Re-raises ``exc`` when none does, with a hint naming the delimiter when one would do but
    ``--delimiter`` chose another (or several would).
    """
    fits = []
    for other in (d for d in _DELIMITERS if d != delim):
        header, data_offset, first_line = _header(path, name, gz, other, options)
        try:
            plan = column_plan(name, list(header), options.mapping)
        except MissingColumnsError:
            continue
        fits.append((other, header, data_offset, first_line, plan))
    if len(fits) == 1 and options.delimiter is None:
        return fits[0]
    if not fits:
        raise exc
    named = " or ".join(f"--delimiter {delimiter_arg(f[0])}" for f in fits)
    raise MissingColumnsError(
        exc.source,
        exc.missing,
        exc.available,
        hint=f"The header looks delimited by another character: pass {named}.",
    ) from None


def delimiter_arg(d: str) -> str:
    """How to write delimiter ``d`` on a shell command line (``';'``, ``'\\t'``)."""
    return "'\\t'" if d == "\t" else f"'{d}'"


def _guarded(layout: _Layout) -> Iterator[RawBatch]:
    """:func:`_batches`, with I/O and decompression errors as :class:`UnreadableSourceError`."""
    try:
        yield from _batches(layout)
    except (OSError, zlib.error) as exc:
        raise UnreadableSourceError(layout.name, str(exc)) from exc
