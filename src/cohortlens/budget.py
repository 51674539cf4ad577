"""The memory budget every streaming step sizes its work by (the CLI's ``--memory-limit``).

One number drives the partitioning of ``simulate``, ``ingest``, ``features``, ``discover`` and
``assign``: how many learners or events a block holds, how many buckets a spill uses, and
DuckDB's own ``memory_limit`` and ``temp_directory`` (docs/SCALING.md, "Memory budget").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cohortlens.errors import InputError

_GIB = 1 << 30
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10}
_UNITS |= {"m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20, "g": _GIB, "gb": _GIB, "gib": _GIB}
_UNITS |= {"t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}

#: The default budget: 3 GiB, or a third of physical memory on a smaller machine.
DEFAULT_LIMIT_BYTES = 3 * _GIB
#: Share of the budget DuckDB may use for its own buffers (the rest is Arrow/NumPy work).
DUCKDB_SHARE = 0.5
#: DuckDB's share when it only streams a scan to the caller (``features`` from the store).
SCAN_DUCKDB_SHARE = 0.125


def parse_bytes(text: str, option: str) -> int:
    """``4096``, ``16MiB``, ``1g``, ``3GB``: a positive byte count (K/M/G/T are 1024-based)."""
    number, unit = text.strip(), ""
    while number and not number[-1].isdigit():
        number, unit = number[:-1], number[-1] + unit
    factor = _UNITS.get(unit.strip().lower())
    if not number.isdigit() or factor is None or int(number) * factor < 1:
        raise InputError(f"{option} {text!r}: expected a positive number of bytes, e.g. 2GiB")
    return int(number) * factor


def format_bytes(n: int) -> str:
    """``3221225472`` → ``3.0 GiB`` (for messages)."""
    for unit, size in (("GiB", _GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _physical_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class MemoryBudget:
    """How much memory one command may use, and where it spills what does not fit.

    ``limit_bytes`` bounds the process's working memory (peak RSS stays near it, whatever the
    input size); ``temp_dir`` holds spill files (None: the system's temporary directory, or
    next to the store for DuckDB).
    """

    limit_bytes: int = DEFAULT_LIMIT_BYTES
    temp_dir: Path | None = None
    #: Share of the budget that is DuckDB's ``memory_limit`` (a step that only scans the
    #: store gives DuckDB less: its buffer pool caches what it reads up to the limit).
    duckdb_share: float = DUCKDB_SHARE

    @classmethod
    def default(cls, temp_dir: Path | None = None) -> MemoryBudget:
        """3 GiB, or a third of physical memory when that is smaller."""
        physical = _physical_bytes()
        limit = DEFAULT_LIMIT_BYTES if physical is None else min(DEFAULT_LIMIT_BYTES, physical // 3)
        return cls(limit_bytes=limit, temp_dir=temp_dir)

    @classmethod
    def from_option(cls, text: str | None, temp_dir: Path | None = None) -> MemoryBudget:
        """The budget a ``--memory-limit`` value names (None: :meth:`default`)."""
        if text is None:
            return cls.default(temp_dir)
        return cls(limit_bytes=parse_bytes(text, "--memory-limit"), temp_dir=temp_dir)

    @property
    def duckdb_limit_bytes(self) -> int:
        """DuckDB's ``memory_limit``: its share of the budget."""
        return max(int(self.limit_bytes * self.duckdb_share), 64 << 20)
