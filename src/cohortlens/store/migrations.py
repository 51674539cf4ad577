"""Versioned schema migrations, applied in order inside one transaction each.

Append new steps; never edit an applied one. Each backend has its own SQL dialect list.
"""

from __future__ import annotations

#: DuckDB migrations: version -> statements.
DUCKDB: dict[int, list[str]] = {
    1: [
        """CREATE TABLE events (
            event_id VARCHAR NOT NULL,
            learner_id VARCHAR NOT NULL,
            ts TIMESTAMPTZ NOT NULL,
            domain VARCHAR NOT NULL,
            item_id VARCHAR NOT NULL,
            outcome DOUBLE,
            duration_s DOUBLE,
            ingest_id BIGINT NOT NULL,
            source VARCHAR NOT NULL
        )""",
        """CREATE TABLE quarantine (
            ingest_id BIGINT NOT NULL,
            source VARCHAR NOT NULL,
            line BIGINT,
            reason VARCHAR NOT NULL,
            detail VARCHAR,
            raw VARCHAR
        )""",
        """CREATE TABLE outcomes (
            learner_id VARCHAR PRIMARY KEY,
            completed BOOLEAN,
            churned BOOLEAN,
            revenue DOUBLE,
            as_of TIMESTAMPTZ,
            ingest_id BIGINT NOT NULL
        )""",
        """CREATE TABLE ingest_log (
            ingest_id BIGINT PRIMARY KEY,
            committed_at TIMESTAMPTZ NOT NULL,
            rows_read BIGINT NOT NULL,
            accepted BIGINT NOT NULL,
            rejected BIGINT NOT NULL,
            duplicates BIGINT NOT NULL,
            report JSON NOT NULL
        )""",
        "CREATE SEQUENCE ingest_id_seq START 1",
    ],
}
