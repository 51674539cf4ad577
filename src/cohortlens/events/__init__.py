"""Stage 1: raw inputs -> validated canonical events (+ quarantine).

The public names load on first use (the readers, DuckDB and numba stay unloaded until a
command reads events), so ``import cohortlens.events.schema`` and the CLI start fast.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from cohortlens._lazy import lazy_getattr

if TYPE_CHECKING:
    from cohortlens.events.ingest import IngestReport, SourceReport, ingest, ingest_sources
    from cohortlens.events.readers import FORMATS, open_source
    from cohortlens.events.schema import (
        EVENT_SCHEMA,
        OUTCOME_SCHEMA,
        QUARANTINE_SCHEMA,
        RejectReason,
    )
    from cohortlens.events.session import IngestSession, IngestTarget
    from cohortlens.events.source import RawBatch, ReadOptions, Source
    from cohortlens.events.validate import Validated, validate_batch

#: Public name -> the module defining it.
_LAZY = {
    "EVENT_SCHEMA": "schema",
    "FORMATS": "readers",
    "OUTCOME_SCHEMA": "schema",
    "QUARANTINE_SCHEMA": "schema",
    "IngestReport": "ingest",
    "IngestSession": "session",
    "IngestTarget": "session",
    "RawBatch": "source",
    "ReadOptions": "source",
    "RejectReason": "schema",
    "Source": "source",
    "SourceReport": "ingest",
    "Validated": "validate",
    "ingest": "ingest",
    "ingest_sources": "ingest",
    "open_source": "readers",
    "validate_batch": "validate",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


class _Package(ModuleType):
    """``cohortlens.events.ingest`` is the function (as before), even after the module of the
    same name is imported: the import system's binding of the submodule is ignored."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, ModuleType) and _LAZY.get(name) == name:
            return  # a public name shadowing its own module: the public name wins
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "EVENT_SCHEMA",
    "FORMATS",
    "OUTCOME_SCHEMA",
    "QUARANTINE_SCHEMA",
    "IngestReport",
    "IngestSession",
    "IngestTarget",
    "RawBatch",
    "ReadOptions",
    "RejectReason",
    "Source",
    "SourceReport",
    "Validated",
    "ingest",
    "ingest_sources",
    "open_source",
    "validate_batch",
]
