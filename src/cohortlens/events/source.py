"""The contract between readers and validation: a source yields raw batches.

A reader opens a source (checking that the required columns exist *before* anything is
read, so a bad file fails whole), then streams :class:`RawBatch` slices of bounded size.
Readers never validate values: they only split records into fields and name them with the
canonical column names; :mod:`cohortlens.events.validate` does the rest for every format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa

from cohortlens.errors import MissingColumnsError
from cohortlens.events.limits import DEFAULT_MAX_FIELD_BYTES
from cohortlens.events.schema import QUARANTINE_SCHEMA, REQUIRED_COLUMNS

TimestampUnit = Literal["auto", "iso", "s", "ms", "us"]

#: Column holding each row's 1-based physical line (CSV/JSONL) or record number (Parquet).
LINE_COLUMN = "_line"
#: Optional column holding each row's original text (JSONL, xAPI); built from fields otherwise.
RAW_COLUMN = "_raw"


@dataclass(frozen=True)
class ReadOptions:
    """How to read a source.

    Attributes:
        mapping: canonical name -> source column name, for foreign layouts (``--map``).
        ts_unit: how to read ``ts``: ``auto`` detects ISO 8601 text or epoch numbers
            (|x| >= 1e11 means milliseconds, else seconds); the others force one reading.
        ts_format: a strptime pattern (``%d/%m/%Y %H:%M``) that text timestamps must match,
            instead of ISO 8601 or epoch numbers; naive results are UTC, ``%z`` reads an
            offset. ``None``: ``ts_unit`` decides. Typed (Parquet) timestamps are kept as is.
        batch_rows: rows per streamed batch; bounds memory whatever the file size.
        delimiter: CSV field separator; ``None`` = ``,`` (``\\t`` for ``.tsv`` files), or
            ``;``, tab or ``|`` when only that one gives the required columns.
        encoding: text encoding (a Python codec name: ``utf-8``, ``utf-16``, ``cp1252``, ...)
            of CSV, JSON Lines and xAPI files; ``None`` = UTF-8, or what a UTF-8/16/32
            byte-order mark at the start says.
        max_field_bytes: the longest CSV record (and so field), and JSON line, accepted, in
            bytes; a longer one fails the file naming its line. Default 64 MiB.
        xapi_domain_path: dotted path into an xAPI statement giving the domain
            (``[n]`` indexes a list; ``extensions`` keys may contain dots if quoted ``"..."``).
    """

    mapping: Mapping[str, str] = field(default_factory=dict)
    ts_unit: TimestampUnit = "auto"
    ts_format: str | None = None
    batch_rows: int = 1 << 18
    delimiter: str | None = None
    encoding: str | None = None
    max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES
    xapi_domain_path: str = "context.contextActivities.grouping[0].id"


@dataclass(frozen=True)
class RawBatch:
    """A slice of one source as read, before validation.

    Attributes:
        source: name of the file (or stream) the rows came from, for the quarantine.
        table: columns named canonically (any subset of ``CANONICAL_COLUMNS``; values of
            any Arrow type that can be cast), plus ``_line`` (int64) and optionally ``_raw``.
        rejects: rows the reader could not split into fields (``QUARANTINE_SCHEMA``):
            malformed JSON, wrong field count. They count as rows read.
    """

    source: str
    table: pa.Table
    rejects: pa.Table = field(default_factory=QUARANTINE_SCHEMA.empty_table)

    @property
    def n_rows(self) -> int:
        """Rows read in this batch, including the reader's own rejects."""
        return self.table.num_rows + self.rejects.num_rows


@dataclass(frozen=True)
class NativeScan:
    """How a SQL engine can read a source itself, bypassing ``batches()`` (same rows, same lines).

    Attributes:
        kind: the file format (``parquet``).
        path: the file.
        plan: (canonical name, source column) pairs.
        types: Arrow type of each canonical column, as stored.
    """

    kind: Literal["parquet"]
    path: Path
    plan: tuple[tuple[str, str], ...]
    types: Mapping[str, pa.DataType]


@dataclass(frozen=True)
class Source:
    """An opened input whose header has been checked; ``batches()`` streams it.

    ``columns`` are the canonical event columns it provides: empty for an outcomes file,
    which has no events and only ``outcomes``.
    """

    name: str
    columns: tuple[str, ...]
    batches: Callable[[], Iterator[RawBatch]]
    #: Learner outcomes the source carries: ``learner_id`` and the outcome columns it observes
    #: (merged column by column; public dataset layouts, outcomes files).
    outcomes: Callable[[], pa.Table] | None = None
    #: Set when a store's SQL engine may scan the file natively instead of ``batches()``.
    native: NativeScan | None = None


def check_required(source: str, available: list[str], mapping: Mapping[str, str]) -> None:
    """Raise :class:`MissingColumnsError` unless every required column is present."""
    missing = [c for c in REQUIRED_COLUMNS if mapping.get(c, c) not in available]
    if missing:
        raise MissingColumnsError(source, [mapping.get(c, c) for c in missing], available)


def rejects_table(
    source: str,
    lines: list[int | None],
    reasons: list[str],
    details: list[str | None],
    raws: list[str | None],
) -> pa.Table:
    """Build a quarantine table from per-row lists (readers' structural rejects are rare)."""
    return pa.table(
        {
            "source": pa.array([source] * len(lines), pa.string()),
            "line": pa.array(lines, pa.int64()),
            "reason": pa.array(reasons, pa.string()),
            "detail": pa.array(details, pa.string()),
            "raw": pa.array(raws, pa.string()),
        },
        schema=QUARANTINE_SCHEMA,
    )


def display_name(path: Path | str) -> str:
    """The name a source is reported under (its path as given)."""
    return str(path)
