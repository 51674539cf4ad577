"""Streaming Parquet reader: row groups are read in batches of ``batch_rows``, types kept.

Only the canonical columns (after ``--map``) are read from the file, so a wide file costs what
its useful columns cost. Their Arrow types are kept as stored (an integer learner id, a
``timestamp[ms]`` or an epoch number ``ts``); :mod:`cohortlens.events.validate` casts them.
``_line`` is the 1-based record number in the file. Parquet has no lines, and record ``n`` is
what ``duckdb``'s or ``pyarrow``'s row ``n - 1`` is, so a rejected row can be found again.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cohortlens.errors import InputError, UnreadableSourceError
from cohortlens.events.readers.csv import NO_REJECTS, column_plan, int64_array
from cohortlens.events.source import (
    LINE_COLUMN,
    NativeScan,
    RawBatch,
    ReadOptions,
    Source,
    display_name,
)


def _open(path: Path, name: str) -> pq.ParquetFile:
    """Open the file and read its footer, mapping failures to :class:`UnreadableSourceError`."""
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise UnreadableSourceError(name, f"not a readable Parquet file ({exc})") from exc


def _batches(
    path: Path, name: str, plan: tuple[tuple[str, str], ...], batch_rows: int
) -> Iterator[RawBatch]:
    """Stream ``batch_rows`` records at a time, renamed to canonical names, with ``_line``."""
    sources = list(dict.fromkeys(src for _, src in plan))
    file = _open(path, name)
    first = 1
    try:
        for batch in file.iter_batches(batch_size=batch_rows, columns=sources, use_threads=True):
            n = batch.num_rows
            if n == 0:
                continue
            arrays = [batch.column(src) for _, src in plan]
            lines = int64_array(np.arange(first, first + n, dtype=np.int64))
            table = pa.Table.from_arrays(
                [*arrays, lines], names=[*(c for c, _ in plan), LINE_COLUMN]
            )
            first += n
            yield RawBatch(name, table, NO_REJECTS)
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise UnreadableSourceError(name, f"failed near record {first}: {exc}") from exc
    finally:
        file.close()


def open_source(path: Path, options: ReadOptions) -> Source:
    """Open a Parquet file; its schema is checked for the required columns before returning.

    Raises :class:`~cohortlens.errors.UnreadableSourceError` when the footer cannot be read and
    :class:`~cohortlens.errors.MissingColumnsError` when a required column (after
    ``options.mapping``) is absent. Only top-level columns can be mapped.
    """
    name = display_name(path)
    if options.batch_rows < 1:
        raise InputError(f"{name}: batch_rows must be >= 1, not {options.batch_rows}")
    file = _open(path, name)
    try:
        schema = file.schema_arrow
        available = list(schema.names)
    except (pa.ArrowException, UnicodeDecodeError) as exc:  # a damaged footer
        raise UnreadableSourceError(name, f"not a readable Parquet schema ({exc})") from exc
    finally:
        file.close()
    plan = column_plan(name, available, options.mapping)
    if len(set(available)) != len(available):
        dup = sorted({c for c in available if available.count(c) > 1} & {s for _, s in plan})
        if dup:
            raise UnreadableSourceError(name, f"column(s) {', '.join(dup)} appear twice")
    flat = all(not pa.types.is_nested(schema.field(src).type) for _, src in plan)
    return Source(
        name=name,
        columns=tuple(c for c, _ in plan),
        batches=partial(_batches, path, name, plan, options.batch_rows),
        native=NativeScan("parquet", path, plan, {c: schema.field(src).type for c, src in plan})
        if flat
        else None,
    )
