"""Text encodings: byte-order marks, transcoding to UTF-8, and decode errors users can act on.

Every text reader works on UTF-8 bytes. A file in another encoding (``--encoding``, or a
UTF-16/UTF-32 byte-order mark) is transcoded to UTF-8 as it streams, by Python's incremental
decoder for that codec; a UTF-8 file is read as is (its BOM skipped), and rows with invalid
UTF-8 become rejects of their reader. A byte the declared encoding cannot decode fails the file
whole with its byte offset and a hint (:func:`decode_error`).
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from cohortlens.errors import InputError, UnreadableSourceError

#: Byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one).
BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
UTF8 = "utf-8"
#: Bytes decoded per piece when transcoding.
_PIECE_BYTES = 1 << 22
#: Encodings that are UTF-8 for reading purposes (Python's names after ``codecs.lookup``).
_UTF8_NAMES = frozenset({"utf-8", "utf-8-sig"})


def check_encoding(name: str | None) -> str | None:
    """The codec's canonical name for ``--encoding NAME`` (``None`` stays ``None``: detect).

    Raises :class:`InputError` for an unknown codec or one that does not decode text.
    """
    if name is None:
        return None
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise InputError(
            f"--encoding {name!r}: unknown encoding; expected a Python codec name such as "
            "utf-8, utf-16, cp1252 or latin-1"
        ) from None
    if not getattr(info, "_is_text_encoding", True):
        raise InputError(f"--encoding {name!r}: not a text encoding")
    return "utf-8" if info.name == "utf-8-sig" else info.name


def sniff_bom(head: bytes) -> tuple[str, int] | None:
    """(encoding, BOM length) when ``head`` starts with a byte-order mark."""
    for bom, encoding in BOMS:
        if head.startswith(bom):
            return encoding, len(bom)
    return None


def _family(encoding: str) -> str:
    """``utf-16-le`` -> ``utf-16``: a BOM of the family may be skipped under any of its names."""
    for family in ("utf-8", "utf-16", "utf-32"):
        if encoding.startswith(family):
            return family
    return encoding


def choose(option: str | None, head: bytes) -> tuple[str, int]:
    """The encoding to read with and the bytes to skip (a BOM), given the option and first bytes.

    Without an option a BOM decides, else UTF-8. An explicit encoding wins over a BOM, but a
    BOM of the same family (``--encoding utf-16-le`` on a file starting with FF FE) is skipped.
    ``utf-16`` and ``utf-32`` take their byte order from the BOM, and are little-endian
    without one (as Python's ``bytes.decode`` reads them on common machines).
    """
    option = check_encoding(option)
    bom = sniff_bom(head)
    if option is None:
        return bom or (UTF8, 0)
    same = bom is not None and _family(bom[0]) == _family(option)
    if option in ("utf-16", "utf-32"):  # the byte order from the BOM, else little-endian
        return bom if bom is not None and same else (f"{option}-le", 0)
    return option, bom[1] if bom is not None and same else 0


def is_utf8(encoding: str) -> bool:
    """Whether bytes in ``encoding`` are UTF-8 already (no transcoding needed)."""
    return encoding in _UTF8_NAMES


def likely_encoding(sample: bytes) -> str | None:
    """A guess at the encoding of bytes that are not UTF-8, for hints (``None``: no idea).

    NUL bytes in every other position are UTF-16 without a BOM (the ASCII part of the text);
    bytes that decode as Windows-1252 suggest it (it decodes all but five byte values).
    """
    if sample:
        even, odd = sample[0::2], sample[1::2]
        if odd and odd.count(0) >= 0.3 * len(odd) and even.count(0) < 0.1 * len(even):
            return "utf-16-le"
        if even and even.count(0) >= 0.3 * len(even) and odd.count(0) < 0.1 * max(len(odd), 1):
            return "utf-16-be"
    try:
        sample.decode("cp1252")
    except UnicodeDecodeError:
        return "latin-1"
    return "cp1252"


def hint(encoding: str, sample: bytes) -> str:
    """What to try when ``sample`` does not decode as ``encoding``."""
    guess = likely_encoding(sample)
    if guess is None or guess == encoding:
        return "name the file's encoding with --encoding (e.g. utf-8, utf-16, cp1252)"
    if is_utf8(encoding):
        return f"if the file is not UTF-8, name its encoding: try --encoding {guess}"
    return (
        f"is the file really {encoding}? try --encoding {guess}, or leave --encoding out for UTF-8"
    )


def decode_error(
    name: str,
    encoding: str,
    offset: int,
    bad: bytes,
    sample: bytes,
    *,
    decompressed: bool = False,
    tip: str | None = None,
) -> UnreadableSourceError:
    """The error for bytes that ``encoding`` cannot decode at ``offset`` (of the file's text).

    ``bad`` holds the offending bytes; ``sample`` some text around them, for the hint (``tip``
    replaces it, for inputs whose encoding is fixed).
    """
    where = "of the decompressed text" if decompressed else "in the file"
    shown = " ".join(f"0x{b:02X}" for b in bad[:4]) or "end of data"
    label = "UTF-8" if is_utf8(encoding) else encoding
    return UnreadableSourceError(
        name,
        f"not valid {label} text: {shown} at byte offset {offset} {where}; "
        + (tip or hint(encoding, sample)),
    )


def nul_error(
    name: str, offset: int, sample: bytes, where: str = "in the header"
) -> UnreadableSourceError:
    """The error for a NUL byte in text: binary data, or UTF-16/32 without a BOM."""
    guess = likely_encoding(sample)
    tip = (
        f"the file looks like {guess} text without a byte-order mark: try --encoding {guess}"
        if guess is not None and guess.startswith("utf-16")
        else "binary data is not text; name the encoding with --encoding if it is text"
    )
    return UnreadableSourceError(name, f"a NUL byte at byte offset {offset} {where}; {tip}")


@dataclass
class StreamInfo:
    """What the first bytes of a stream told: filled in before its first piece is yielded."""

    encoding: str = UTF8
    #: Bytes before the text (a BOM), not part of the UTF-8 output.
    skipped: int = 0


def utf8_pieces(
    pieces: Iterable[bytes],
    option: str | None,
    name: str,
    info: StreamInfo | None = None,
    *,
    decompressed: bool = False,
) -> Iterator[bytes]:
    """``pieces`` of a file's bytes as UTF-8 (a BOM removed), transcoded unless already UTF-8.

    A byte the encoding cannot decode raises :func:`decode_error` with its offset. UTF-8 input
    passes through unchecked (readers reject the records that are not UTF-8).
    """
    info = info if info is not None else StreamInfo()
    it = iter(pieces)
    head = b""
    for piece in it:
        head += piece
        if len(head) >= 4:
            break
    info.encoding, info.skipped = choose(option, head)
    head = head[info.skipped :]
    if is_utf8(info.encoding):
        if head:
            yield head
        yield from it
        return
    decoder = codecs.getincrementaldecoder(info.encoding)("strict")
    consumed = info.skipped  # input bytes handed to the decoder so far
    for piece in _chain(head, it):
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(piece)
        except UnicodeDecodeError as exc:
            raise _located(exc, name, info.encoding, consumed - pending, decompressed) from None
        except UnicodeError as exc:  # a codec's own complaint, without a position
            raise UnreadableSourceError(name, f"cannot decode as {info.encoding}: {exc}") from None
        consumed += len(piece)
        if text:
            yield text.encode("utf-8", "surrogatepass")
    pending = len(decoder.getstate()[0])
    try:
        tail = decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise _located(exc, name, info.encoding, consumed - pending, decompressed) from None
    except UnicodeError as exc:
        raise UnreadableSourceError(name, f"cannot decode as {info.encoding}: {exc}") from None
    if tail:
        yield tail.encode("utf-8", "surrogatepass")


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _located(
    exc: UnicodeDecodeError, name: str, encoding: str, base: int, decompressed: bool
) -> UnreadableSourceError:
    """A decoder's error as :func:`decode_error`, at its offset in the whole input."""
    data = bytes(exc.object)
    return decode_error(
        name,
        encoding,
        base + exc.start,
        data[exc.start : exc.end],
        data[max(0, exc.start - 256) : exc.start + 256],
        decompressed=decompressed,
    )


class Reader(Protocol):
    """A binary file open for reading (plain, gzip, or one of the wrappers here)."""

    def read(self, size: int = -1, /) -> bytes | None: ...

    def close(self) -> None: ...


def file_pieces(file: Reader, size: int = _PIECE_BYTES) -> Iterator[bytes]:
    """A binary file's bytes in pieces of ``size``."""
    while piece := file.read(size):
        yield bytes(piece)


class PiecesReader(io.RawIOBase):
    """A read-only binary file over an iterator of byte pieces."""

    def __init__(self, pieces: Iterator[bytes], on_close: Iterable[object] = ()) -> None:
        super().__init__()
        self._pieces = pieces
        self._buffer = b""
        self._on_close = list(on_close)

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(target).cast("B")
        while not self._buffer:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._buffer = piece
        n = min(len(view), len(self._buffer))
        view[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            close = getattr(self._pieces, "close", None)
            if close is not None:
                close()
            for other in self._on_close:
                closer = getattr(other, "close", None)
                if closer is not None:
                    closer()
        super().close()


class Utf8Checked(io.RawIOBase):
    """A binary file whose bytes are checked to be UTF-8 as they are read.

    The first byte that is not UTF-8 raises :func:`decode_error` with its offset, so a parser
    reading through this file never sees invalid text (pyarrow's CSV reader prints a traceback
    when it must hand such a row to an invalid-row handler). ASCII pieces are checked by
    ``bytes.isascii`` alone.
    """

    def __init__(
        self, raw: Reader, name: str, *, decompressed: bool, tip: str | None = None
    ) -> None:
        super().__init__()
        self._raw = raw
        self._name = name
        self._decompressed = decompressed
        self._tip = tip
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._offset = 0  # bytes read so far

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` checked bytes (all that remain when ``size`` < 0)."""
        piece = self._raw.read(size) or b""
        self._check(piece, final=size < 0 or (size > 0 and not piece))
        return piece

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(target).cast("B")
        piece = self.read(len(view))
        view[: len(piece)] = piece
        return len(piece)

    def _check(self, piece: bytes, *, final: bool) -> None:
        """Raise :func:`decode_error` at the first byte of ``piece`` that is not UTF-8.

        ``final``: no bytes follow (a sequence cut at the end is an error).
        """
        n = len(piece)
        pending = len(self._decoder.getstate()[0])
        if pending or final or not piece.isascii():
            try:
                self._decoder.decode(piece, final=final)
            except UnicodeDecodeError as exc:
                data = bytes(exc.object)
                raise decode_error(
                    self._name,
                    UTF8,
                    self._offset - pending + exc.start,
                    data[exc.start : exc.end],
                    data[max(0, exc.start - 256) : exc.start + 256],
                    decompressed=self._decompressed,
                    tip=self._tip,
                ) from None
        self._offset += n

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()
