"""Readers: one module per input layout, each exposing ``open_source(path, options) -> Source``.

``open_source`` must check the header (required columns, readability) before returning, and
raise :class:`~cohortlens.errors.MissingColumnsError` or
:class:`~cohortlens.errors.UnreadableSourceError` so that a bad file fails whole.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Literal

from cohortlens.errors import InputError
from cohortlens.events.source import ReadOptions, Source

Format = Literal["csv", "parquet", "jsonl", "xapi", "oulad", "ednet", "kddcup2015"]
FORMATS: tuple[str, ...] = ("csv", "parquet", "jsonl", "xapi", "oulad", "ednet", "kddcup2015")

_MODULES: dict[str, str] = {
    "csv": "cohortlens.events.readers.csv",
    "parquet": "cohortlens.events.readers.parquet",
    "jsonl": "cohortlens.events.readers.jsonl",
    "xapi": "cohortlens.events.readers.xapi",
    "oulad": "cohortlens.events.readers.oulad",
    "ednet": "cohortlens.events.readers.ednet",
    "kddcup2015": "cohortlens.events.readers.kddcup2015",
}


def detect_format(path: Path) -> str:
    """Guess a source's format from its name (directories: from the dataset's known files)."""
    if path.is_dir():
        if (path / "studentAssessment.csv").exists():
            return "oulad"
        if (path / "KT1").is_dir():
            return "ednet"
        if (path / "daily_activity.csv.gz").exists() or (path / "daily_activity.csv").exists():
            return "kddcup2015"
        raise InputError(f"{path}: a directory, but not a known dataset layout; pass --format")
    name = path.name.lower()
    for suffix, fmt in (
        (".csv", "csv"),
        (".csv.gz", "csv"),
        (".tsv", "csv"),
        (".tsv.gz", "csv"),
        (".txt", "csv"),
        (".parquet", "parquet"),
        (".pq", "parquet"),
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".jsonl.gz", "jsonl"),
        (".ndjson.gz", "jsonl"),
        (".json", "xapi"),
    ):
        if name.endswith(suffix):
            return fmt
    raise InputError(
        f"{path}: cannot tell the format from the name; pass --format ({', '.join(FORMATS)})"
    )


def open_source(path: Path, fmt: str | None = None, options: ReadOptions | None = None) -> Source:
    """Open ``path`` with the reader for ``fmt`` (detected from the name when ``None``)."""
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    fmt = fmt or detect_format(path)
    if fmt not in _MODULES:
        raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    module = importlib.import_module(_MODULES[fmt])
    source: Source = module.open_source(path, options or ReadOptions())
    return source


__all__ = ["FORMATS", "Format", "detect_format", "open_source"]
