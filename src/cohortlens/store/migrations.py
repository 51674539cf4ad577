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
    2: [
        """CREATE TABLE feature_runs (
            run_id BIGINT PRIMARY KEY,
            created_at TIMESTAMPTZ NOT NULL,
            source VARCHAR NOT NULL,
            params JSON NOT NULL,
            n_learners BIGINT NOT NULL
        )""",
        "CREATE SEQUENCE feature_run_seq START 1",
        # Feature rows are stored as one Parquet blob per run: the columns belong to the
        # features stage and may grow without a migration here.
        """CREATE TABLE feature_blobs (
            run_id BIGINT PRIMARY KEY,
            parquet BLOB NOT NULL
        )""",
        """CREATE TABLE cohort_models (
            model_id BIGINT PRIMARY KEY,
            created_at TIMESTAMPTZ NOT NULL,
            feature_run_id BIGINT,
            status VARCHAR NOT NULL,
            artifact JSON NOT NULL
        )""",
        "CREATE SEQUENCE cohort_model_seq START 1",
        """CREATE TABLE assignments (
            model_id BIGINT NOT NULL,
            learner_id VARCHAR NOT NULL,
            cohort_id INTEGER NOT NULL,
            archetype VARCHAR NOT NULL,
            distance DOUBLE
        )""",
    ],
    3: [
        """CREATE TABLE exposures (
            learner_id VARCHAR NOT NULL,
            experiment VARCHAR NOT NULL,
            variant VARCHAR NOT NULL,
            layer VARCHAR,
            bucket INTEGER NOT NULL,
            hash_version VARCHAR NOT NULL,
            exposed_at TIMESTAMPTZ NOT NULL
        )""",
    ],
}
