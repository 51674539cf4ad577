"""Stage 1: raw inputs -> validated canonical events (+ quarantine)."""

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
