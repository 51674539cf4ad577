"""Versioned schema migrations, applied in order inside one transaction each.

Append new steps; never edit an applied one. Each backend has its own SQL dialect list, with
the same version numbers and tables (PostgreSQL types where DuckDB's differ).
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
    4: [
        # Exactly one row: the stable model (mirrors the 'active' cohort model) and the
        # candidate on a fraction of learners; ``revision`` moves on every change.
        """CREATE TABLE model_routing (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            stable_model_id BIGINT,
            candidate_model_id BIGINT,
            candidate_weight DOUBLE NOT NULL DEFAULT 0
                CHECK (candidate_weight >= 0 AND candidate_weight <= 1),
            salt VARCHAR NOT NULL,
            release_id BIGINT NOT NULL,
            revision BIGINT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            updated_by VARCHAR NOT NULL,
            reason VARCHAR
        )""",
        """CREATE TABLE routing_log (
            revision BIGINT PRIMARY KEY,
            changed_at TIMESTAMPTZ NOT NULL,
            actor VARCHAR NOT NULL,
            reason VARCHAR,
            routing JSON NOT NULL
        )""",
        """CREATE TABLE rollouts (
            name VARCHAR PRIMARY KEY,
            spec JSON NOT NULL,
            spec_hash VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        )""",
        """CREATE TABLE rollout_status (
            name VARCHAR PRIMARY KEY,
            revision BIGINT NOT NULL,
            status JSON NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        )""",
        """CREATE TABLE rollout_events (
            name VARCHAR NOT NULL,
            seq BIGINT NOT NULL,
            recorded_at TIMESTAMPTZ NOT NULL,
            kind VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            detail JSON NOT NULL,
            PRIMARY KEY (name, seq)
        )""",
        """CREATE TABLE leases (
            name VARCHAR PRIMARY KEY,
            holder VARCHAR NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL
        )""",
    ],
    5: [
        # Segments of a service's on-disk spool (exposures, posted events) applied to the
        # store: written in the transaction that applies the segment, so a segment is applied
        # exactly once even when the service dies between commit and deleting the file.
        """CREATE TABLE spool_applied (
            segment VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            rows BIGINT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL
        )""",
    ],
    6: [
        # Learner ids routed to the candidate whatever the weight (QA, pilots): a JSON list.
        "ALTER TABLE model_routing ADD COLUMN overrides JSON DEFAULT '[]'",
        # Lifetime counters of each rollout (completed, aborted), bumped in the transaction
        # that records the transition, so they survive controller restarts.
        """CREATE TABLE rollout_counters (
            name VARCHAR NOT NULL,
            counter VARCHAR NOT NULL,
            value BIGINT NOT NULL,
            PRIMARY KEY (name, counter)
        )""",
    ],
}

#: PostgreSQL migrations (same versions and meaning). Identifier-like text is ``COLLATE "C"``
#: so sorting matches DuckDB's byte order whatever the database's collation. Model artifacts
#: and feature parameters are TEXT: Python's JSON may carry NaN, which PostgreSQL's JSON types
#: reject. ``events.event_id`` is the primary key: concurrent ingests resolve duplicates on it.
POSTGRES: dict[int, list[str]] = {
    1: [
        """CREATE TABLE events (
            event_id TEXT COLLATE "C" PRIMARY KEY,
            learner_id TEXT COLLATE "C" NOT NULL,
            ts TIMESTAMPTZ NOT NULL,
            domain TEXT COLLATE "C" NOT NULL,
            item_id TEXT COLLATE "C" NOT NULL,
            outcome DOUBLE PRECISION,
            duration_s DOUBLE PRECISION,
            ingest_id BIGINT NOT NULL,
            source TEXT COLLATE "C" NOT NULL
        )""",
        """CREATE TABLE quarantine (
            ingest_id BIGINT NOT NULL,
            source TEXT COLLATE "C" NOT NULL,
            line BIGINT,
            reason TEXT NOT NULL,
            detail TEXT,
            raw TEXT
        )""",
        "CREATE INDEX quarantine_order ON quarantine (ingest_id, source, line)",
        """CREATE TABLE outcomes (
            learner_id TEXT COLLATE "C" PRIMARY KEY,
            completed BOOLEAN,
            churned BOOLEAN,
            revenue DOUBLE PRECISION,
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
            report JSONB NOT NULL
        )""",
        "CREATE SEQUENCE ingest_id_seq START 1",
    ],
    2: [
        """CREATE TABLE feature_runs (
            run_id BIGINT PRIMARY KEY,
            created_at TIMESTAMPTZ NOT NULL,
            source TEXT NOT NULL,
            params TEXT NOT NULL,
            n_learners BIGINT NOT NULL
        )""",
        "CREATE SEQUENCE feature_run_seq START 1",
        """CREATE TABLE feature_blobs (
            run_id BIGINT PRIMARY KEY REFERENCES feature_runs (run_id),
            parquet BYTEA NOT NULL
        )""",
        # The blob is compressed Parquet already: keep TOAST from trying again.
        "ALTER TABLE feature_blobs ALTER COLUMN parquet SET STORAGE EXTERNAL",
        """CREATE TABLE cohort_models (
            model_id BIGINT PRIMARY KEY,
            created_at TIMESTAMPTZ NOT NULL,
            feature_run_id BIGINT,
            status TEXT NOT NULL,
            artifact TEXT NOT NULL
        )""",
        "CREATE SEQUENCE cohort_model_seq START 1",
        """CREATE TABLE assignments (
            model_id BIGINT NOT NULL,
            learner_id TEXT COLLATE "C" NOT NULL,
            cohort_id INTEGER NOT NULL,
            archetype TEXT NOT NULL,
            distance DOUBLE PRECISION
        )""",
        "CREATE INDEX assignments_model ON assignments (model_id, learner_id)",
    ],
    3: [
        """CREATE TABLE exposures (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            learner_id TEXT COLLATE "C" NOT NULL,
            experiment TEXT COLLATE "C" NOT NULL,
            variant TEXT NOT NULL,
            layer TEXT,
            bucket INTEGER NOT NULL,
            hash_version TEXT NOT NULL,
            exposed_at TIMESTAMPTZ NOT NULL
        )""",
        "CREATE INDEX exposures_experiment ON exposures (experiment, learner_id)",
    ],
    4: [
        """CREATE TABLE model_routing (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            stable_model_id BIGINT,
            candidate_model_id BIGINT,
            candidate_weight DOUBLE PRECISION NOT NULL DEFAULT 0
                CHECK (candidate_weight >= 0 AND candidate_weight <= 1),
            salt TEXT NOT NULL,
            release_id BIGINT NOT NULL,
            revision BIGINT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            updated_by TEXT NOT NULL,
            reason TEXT
        )""",
        """CREATE TABLE routing_log (
            revision BIGINT PRIMARY KEY,
            changed_at TIMESTAMPTZ NOT NULL,
            actor TEXT NOT NULL,
            reason TEXT,
            routing JSONB NOT NULL
        )""",
        """CREATE TABLE rollouts (
            name TEXT COLLATE "C" PRIMARY KEY,
            spec JSONB NOT NULL,
            spec_hash TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        )""",
        """CREATE TABLE rollout_status (
            name TEXT COLLATE "C" PRIMARY KEY,
            revision BIGINT NOT NULL,
            status JSONB NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        )""",
        """CREATE TABLE rollout_events (
            name TEXT COLLATE "C" NOT NULL,
            seq BIGINT NOT NULL,
            recorded_at TIMESTAMPTZ NOT NULL,
            kind TEXT NOT NULL,
            reason TEXT NOT NULL,
            detail JSONB NOT NULL,
            PRIMARY KEY (name, seq)
        )""",
        """CREATE TABLE leases (
            name TEXT COLLATE "C" PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL
        )""",
        # Replicas must never see two stable models, whatever the writers do.
        "CREATE UNIQUE INDEX cohort_models_one_active ON cohort_models (status) "
        "WHERE status = 'active'",
    ],
    5: [
        """CREATE TABLE spool_applied (
            segment TEXT COLLATE "C" PRIMARY KEY,
            kind TEXT NOT NULL,
            rows BIGINT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL
        )""",
    ],
    6: [
        "ALTER TABLE model_routing ADD COLUMN overrides JSONB NOT NULL DEFAULT '[]'::jsonb",
        """CREATE TABLE rollout_counters (
            name TEXT COLLATE "C" NOT NULL,
            counter TEXT COLLATE "C" NOT NULL,
            value BIGINT NOT NULL,
            PRIMARY KEY (name, counter)
        )""",
    ],
}
