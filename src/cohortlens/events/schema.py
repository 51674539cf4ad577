"""The canonical Arrow schemas every reader converges on (documented in docs/DATA.md)."""

from __future__ import annotations

from enum import StrEnum

import pyarrow as pa

#: One row per learner interaction.
EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("learner_id", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("outcome", pa.float64(), nullable=True),
        pa.field("duration_s", pa.float64(), nullable=True),
    ]
)

#: One row per learner: what happened to them (for outcome checks and experiments).
OUTCOME_SCHEMA = pa.schema(
    [
        pa.field("learner_id", pa.string(), nullable=False),
        pa.field("completed", pa.bool_(), nullable=True),
        pa.field("churned", pa.bool_(), nullable=True),
        pa.field("revenue", pa.float64(), nullable=True),
        pa.field("as_of", pa.timestamp("us", tz="UTC"), nullable=True),
    ]
)

#: The outcome columns (all of ``OUTCOME_SCHEMA`` but ``learner_id``); a table may carry any.
OUTCOME_COLUMNS: tuple[str, ...] = tuple(n for n in OUTCOME_SCHEMA.names if n != "learner_id")


def outcome_schema(columns: list[str] | tuple[str, ...]) -> pa.Schema:
    """``OUTCOME_SCHEMA`` restricted to ``learner_id`` and the outcome ``columns`` (its order)."""
    keep = {"learner_id", *columns}
    return pa.schema([f for f in OUTCOME_SCHEMA if f.name in keep])


#: One row per rejected input row: nothing is dropped without a reason.
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=True),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=True),
        pa.field("raw", pa.string(), nullable=True),
    ]
)

#: Columns a source must provide (after --map); the others are optional.
REQUIRED_COLUMNS: tuple[str, ...] = ("learner_id", "ts", "item_id")
OPTIONAL_COLUMNS: tuple[str, ...] = ("domain", "outcome", "duration_s", "event_id")
CANONICAL_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

#: Domain given to events whose source has no domain (documented in docs/DATA.md).
DEFAULT_DOMAIN = "unknown"


class RejectReason(StrEnum):
    """Stable reason codes of the quarantine table (machine-readable; see docs/DATA.md)."""

    MISSING_LEARNER_ID = "missing_learner_id"
    MISSING_ITEM_ID = "missing_item_id"
    MISSING_TIMESTAMP = "missing_timestamp"
    BAD_TIMESTAMP = "bad_timestamp"
    TIMESTAMP_TOO_OLD = "timestamp_before_2000"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    BAD_OUTCOME = "bad_outcome"
    OUTCOME_OUT_OF_RANGE = "outcome_out_of_range"
    BAD_DURATION = "bad_duration"
    MALFORMED_JSON = "malformed_json"
    WRONG_FIELD_COUNT = "wrong_field_count"
    MALFORMED_RECORD = "malformed_record"
