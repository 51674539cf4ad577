"""PostgreSQL store: one database shared by service replicas, a rollout controller and the CLI.

Open it with ``open_store("postgresql://user@host:5432/db")``. A schema other than the default
is chosen the libpq way, ``?options=-csearch_path%3Dname``; the first schema of the search path
is created when it does not exist yet (like a new DuckDB file), then migrated.

Bulk data moves with COPY in CSV form, rendered and parsed by Arrow (``_pgcopy``); events are
streamed back over a second connection, so a long read never blocks this store's connection.
Models, routing, rollout state and leases are the SQL shared with DuckDB (``_state_sql``), with
row locks and ``INSERT ... ON CONFLICT`` making every change atomic across processes.

A store object serializes its own calls (one lock around its connection), so threads may share
it; processes each open their own.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import urlsplit

import numpy as np
import psycopg
import psycopg.errors
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from cohortlens.errors import StoreError
from cohortlens.events.schema import EVENT_SCHEMA, OUTCOME_SCHEMA, QUARANTINE_SCHEMA
from cohortlens.events.session import CommitCounts, OutcomeCounts, RejectExample
from cohortlens.store._ingest_sql import (
    REJECT_EXAMPLES_SQL,
    merge_outcomes_sql,
    outcome_columns,
)
from cohortlens.store._pgcopy import copy_in, copy_out, copy_out_table
from cohortlens.store._routing import utc
from cohortlens.store._state_sql import SharedState, quarantine_query
from cohortlens.store.base import ConflictError, with_quarantine_total
from cohortlens.store.migrations import POSTGRES as MIGRATIONS

_EVENT_COLUMNS = ", ".join(EVENT_SCHEMA.names)
_OUTCOME_COLUMNS = ", ".join(OUTCOME_SCHEMA.names)
_QUARANTINE_COLUMNS = ", ".join(QUARANTINE_SCHEMA.names)
_EXPOSURE_COLUMNS = (
    "learner_id",
    "experiment",
    "variant",
    "layer",
    "bucket",
    "hash_version",
    "exposed_at",
)

#: First key of the advisory lock that serializes migrations (the second is the schema's hash).
_MIGRATION_LOCK = 0x636C  # "cl"

#: Seconds to wait for a connection when the URL does not say.
CONNECT_TIMEOUT_S = 10

#: Session settings every connection runs with: the COPY text forms depend on them.
_SESSION = (
    "SET TIME ZONE 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET client_encoding = 'UTF8'",
    # Shortest exact float text on PostgreSQL >= 12, 17 digits before: both round-trip.
    "SET extra_float_digits = 3",
)

_EXPOSURE_SCHEMA = pa.schema(
    [
        ("learner_id", pa.string()),
        ("experiment", pa.string()),
        ("variant", pa.string()),
        ("layer", pa.string()),
        ("bucket", pa.int32()),
        ("hash_version", pa.string()),
        ("exposed_at", pa.timestamp("us", tz="UTC")),
    ]
)
_ASSIGNMENT_SCHEMA = pa.schema(
    [
        ("learner_id", pa.string()),
        ("cohort_id", pa.int32()),
        ("archetype", pa.string()),
        ("distance", pa.float64()),
    ]
)
_EXPERIMENT_OUTCOME_SCHEMA = pa.schema(
    [
        ("learner_id", pa.string()),
        ("variant", pa.string()),
        ("exposed_at", pa.timestamp("us", tz="UTC")),
        ("completed", pa.int32()),
        ("churned", pa.int32()),
        ("revenue", pa.float64()),
    ]
)
_INGEST_LOG_SCHEMA = pa.schema(
    [
        ("ingest_id", pa.int64()),
        ("committed_at", pa.timestamp("us", tz="UTC")),
        ("rows_read", pa.int64()),
        ("accepted", pa.int64()),
        ("rejected", pa.int64()),
        ("duplicates", pa.int64()),
        ("report", pa.string()),
    ]
)


def redact(url: str) -> str:
    """``url`` without its password, for messages and recorded sources."""
    try:
        parts = urlsplit(url)
        if parts.password:
            url = url.replace(f":{parts.password}@", ":***@", 1)
    except ValueError:
        pass
    return re.sub(r"(password=)[^&\s]*", r"\1***", url)


def _first_schema(search_path: str) -> str | None:
    """The first explicit schema of a ``search_path`` setting ("$user" skipped), unquoted."""
    for part in re.findall(r'\s*("(?:[^"]|"")*"|[^,]+)\s*,?', search_path):
        entry = part.strip()
        if entry.startswith('"'):
            entry = entry[1:-1].replace('""', '"')
        if entry and entry != "$user":
            return entry
    return None


class PostgresStore(SharedState):
    """Events, features, models, routing, rollout state and leases in one PostgreSQL schema."""

    _FOR_UPDATE = " FOR UPDATE"

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        self.url = redact(url)
        self._conninfo = url
        self._read_only = read_only
        self._lock = threading.RLock()
        self._conn = self._connect()
        try:
            with self._guard():
                self.schema = self._ensure_schema()
                if read_only:
                    if self.schema_version() > max(MIGRATIONS):
                        self._too_new()
                else:
                    self._migrate()
        except BaseException:
            self._conn.close()
            raise

    # -- connection ---------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection with the session settings the COPY formats rely on."""
        try:
            info = conninfo_to_dict(self._conninfo)
        except psycopg.ProgrammingError as exc:
            raise StoreError(f"{self.url}: not a valid PostgreSQL URL: {exc}") from None
        extra: dict[str, Any] = {}
        if "connect_timeout" not in info:
            extra["connect_timeout"] = CONNECT_TIMEOUT_S
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, **extra)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the PostgreSQL store {self.url}: {exc}") from None
        try:
            for statement in _SESSION:
                conn.execute(statement)
            if self._read_only:
                conn.execute("SET default_transaction_read_only = on")
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"{self.url}: cannot set up the session: {exc}") from None
        return conn

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Hold the store's lock; turn connection-level failures into StoreError/ConflictError."""
        with self._lock:
            try:
                yield
            except psycopg.errors.ReadOnlySqlTransaction as exc:
                raise StoreError(f"{self.url} is open read-only: {exc}") from exc
            except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected) as exc:
                raise ConflictError(f"{self.url}: concurrent change, retry: {exc}") from exc
            except psycopg.OperationalError as exc:
                raise StoreError(f"{self.url}: {exc}".strip()) from exc

    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (``?`` placeholders, as in the shared SQL)."""
        with self._guard(), self._conn.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), list(params) or None)
            return cur.fetchall() if cur.description is not None else []

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction on this store's connection (rolled back when the block raises)."""
        with self._guard(), self._conn.transaction():
            yield

    # -- schema -------------------------------------------------------------------------------
    def _ensure_schema(self) -> str:
        """The schema the store lives in: the search path's first, created when missing."""
        current = self._conn.execute("SELECT current_schema()").fetchone()
        if current is not None and current[0] is not None:
            return str(current[0])
        path = str(self._conn.execute("SHOW search_path").fetchone()[0])  # type: ignore[index]
        wanted = _first_schema(path)
        if wanted is None:
            raise StoreError(f"{self.url}: the search_path {path!r} names no schema")
        if self._read_only:
            raise StoreError(f"{self.url}: schema {wanted!r} does not exist")
        try:
            self._conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(wanted))
            )
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema):
            pass  # another process created it at the same moment
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StoreError(f"{self.url}: cannot create schema {wanted!r}: {exc}") from None
        return wanted

    def _migrate(self) -> None:
        """Apply pending migrations, one transaction each, under an advisory lock per schema."""
        conn = self._conn
        while True:
            with conn.transaction():
                conn.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))",
                    [_MIGRATION_LOCK],
                )
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations "
                    "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
                )
                current = self.schema_version()
                if current > max(MIGRATIONS):
                    self._too_new()
                pending = sorted(v for v in MIGRATIONS if v > current)
                if not pending:
                    return
                for statement in MIGRATIONS[pending[0]]:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (%s, %s)",
                    [pending[0], datetime.now(UTC)],
                )

    def _too_new(self) -> NoReturn:
        raise StoreError(
            f"{self.url} has schema version {self.schema_version()}, newer than this release "
            f"understands ({max(MIGRATIONS)}); upgrade cohortlens"
        )

    def schema_version(self) -> int:
        """The highest applied migration (0 for an empty schema)."""
        with self._guard():
            exists = self._conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
            if exists is None or exists[0] is None:
                return 0
            row = self._conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0]) if row is not None and row[0] is not None else 0

    # -- ingest -------------------------------------------------------------------------------
    @contextmanager
    def ingest_session(self) -> Iterator[_PostgresIngest]:
        """One transaction: staged rows become visible only if ``commit`` is reached."""
        with self._guard():
            conn = self._conn
            conn.execute("BEGIN")
            try:
                session = _PostgresIngest(conn)
                yield session
                if not session.committed:
                    raise RuntimeError("ingest session left without commit")
            except BaseException:
                if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                    with suppress(psycopg.Error):  # a broken connection rolled back already
                        conn.execute("ROLLBACK")
                raise

    # -- reads --------------------------------------------------------------------------------
    def count_events(self) -> int:
        """Number of stored events."""
        return int(self._q("SELECT count(*) FROM events")[0][0])

    def max_learner_events(self) -> int:
        """The largest number of events any one learner has (0 without events)."""
        rows = self._q(
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM events GROUP BY learner_id) t"
        )
        return int(rows[0][0])

    def read_events(
        self,
        *,
        sort: bool = True,
        batch_rows: int = 1 << 20,
        columns: Sequence[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Stream canonical events, sorted by (learner_id, ts, event_id) when ``sort``.

        The rows come through COPY on a connection of their own, closed when the stream ends
        or is abandoned; memory stays bounded by ``batch_rows``. ``columns`` (default all of
        ``EVENT_SCHEMA``) selects what is read.
        """
        schema = EVENT_SCHEMA
        if columns is not None:
            unknown = set(columns) - set(EVENT_SCHEMA.names)
            if unknown:
                raise ValueError(f"not event columns: {sorted(unknown)}")
            schema = pa.schema([f for f in EVENT_SCHEMA if f.name in set(columns)])
        order = " ORDER BY learner_id, ts, event_id" if sort else ""
        query = f"SELECT {', '.join(schema.names)} FROM events{order}"
        return self._stream(query, schema, batch_rows)

    def _stream(self, query: str, schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
        conn = self._connect()
        try:
            yield from copy_out(conn, query, (), schema, batch_rows=batch_rows)
        except psycopg.OperationalError as exc:
            raise StoreError(f"{self.url}: reading events failed: {exc}") from exc
        finally:
            conn.close()

    def events_reader(
        self,
        *,
        sort: bool = True,
        batch_rows: int = 1 << 20,
        columns: Sequence[str] | None = None,
    ) -> pa.RecordBatchReader:
        """The events as one Arrow stream (see :meth:`read_events`)."""
        schema = EVENT_SCHEMA
        if columns is not None:
            schema = pa.schema([f for f in EVENT_SCHEMA if f.name in set(columns)])
        return pa.RecordBatchReader.from_batches(
            schema, self.read_events(sort=sort, batch_rows=batch_rows, columns=columns)
        )

    def _table(self, query: str, params: Sequence[Any], schema: pa.Schema) -> pa.Table:
        with self._guard():
            return copy_out_table(self._conn, query, params, schema)

    def read_outcomes(self) -> pa.Table:
        """All learner outcomes."""
        q = f"SELECT {_OUTCOME_COLUMNS} FROM outcomes ORDER BY learner_id"
        return self._table(q, (), OUTCOME_SCHEMA)

    def read_quarantine(
        self, limit: int | None = None, *, reason: str | None = None, source: str | None = None
    ) -> pa.Table:
        """Quarantined rows, newest ingest first, filtered; the matching total in the metadata."""
        query, params = quarantine_query(QUARANTINE_SCHEMA.names, limit, reason, source, "%s")
        with_total = QUARANTINE_SCHEMA.append(pa.field("_total", pa.int64()))
        rows = self._table(query, params, with_total)
        return with_quarantine_total(rows, QUARANTINE_SCHEMA, limit)

    def ingest_log(self) -> pa.Table:
        """One row per committed ingest (``report`` as JSON text)."""
        q = (
            "SELECT ingest_id, committed_at, rows_read, accepted, rejected, duplicates, "
            "report::text FROM ingest_log ORDER BY ingest_id"
        )
        return self._table(q, (), _INGEST_LOG_SCHEMA)

    # -- feature runs -------------------------------------------------------------------------
    def save_feature_run(self, features: pa.Table, params: dict[str, Any], source: str) -> int:
        """Store one run's feature table (a Parquet BYTEA) with its parameters; its run id."""
        sink = pa.BufferOutputStream()
        pq.write_table(features, sink, compression="zstd")
        blob = sink.getvalue().to_pybytes()
        with self._transaction():
            run_id = int(self._q("SELECT nextval('feature_run_seq')")[0][0])
            self._q(
                "INSERT INTO feature_runs VALUES (?, ?, ?, ?, ?)",
                [run_id, datetime.now(UTC), source, json.dumps(params), features.num_rows],
            )
            self._q("INSERT INTO feature_blobs VALUES (?, ?)", [run_id, blob])
        return run_id

    def read_features(self, run_id: int | None = None) -> tuple[int, pa.Table]:
        """A feature run's table (the latest run when ``run_id`` is None)."""
        if run_id is None:
            rows = self._q("SELECT max(run_id) FROM feature_runs")
            if rows[0][0] is None:
                raise StoreError(f"{self.url} has no feature run yet; run `cohortlens features`")
            run_id = int(rows[0][0])
        with self._guard(), self._conn.cursor(binary=True) as cur:
            cur.execute("SELECT parquet FROM feature_blobs WHERE run_id = %s", [int(run_id)])
            blob = cur.fetchone()
        if blob is None:
            raise StoreError(f"{self.url} has no feature run {run_id}")
        return run_id, pq.read_table(pa.BufferReader(blob[0]))

    def feature_runs(self) -> list[dict[str, Any]]:
        """Every feature run: id, time, source, parameters, learners."""
        rows = self._q(
            "SELECT run_id, created_at, source, params, n_learners FROM feature_runs ORDER BY run_id"
        )
        return [
            {
                "run_id": int(r[0]),
                "created_at": utc(r[1]),
                "source": r[2],
                "params": json.loads(r[3]),
                "n_learners": int(r[4]),
            }
            for r in rows
        ]

    # -- cohort models (save_model, active_model, model, models: SharedState) ----------------
    def save_assignments(self, model_id: int, assignments: pa.Table) -> None:
        """Replace the stored assignments of ``model_id`` (one COPY)."""
        table = assignments.select(_ASSIGNMENT_SCHEMA.names).cast(_ASSIGNMENT_SCHEMA)
        ids = pa.array(np.full(table.num_rows, int(model_id), dtype=np.int64))
        with self._transaction():
            self._q("DELETE FROM assignments WHERE model_id = ?", [int(model_id)])
            copy_in(
                self._conn,
                "assignments (model_id, learner_id, cohort_id, archetype, distance)",
                table.add_column(0, "model_id", ids),
            )

    def read_assignments(self, model_id: int) -> pa.Table:
        """All assignments of ``model_id``."""
        q = (
            "SELECT learner_id, cohort_id, archetype, distance FROM assignments "
            "WHERE model_id = %s ORDER BY learner_id"
        )
        return self._table(q, [int(model_id)], _ASSIGNMENT_SCHEMA)

    # -- experiments --------------------------------------------------------------------------
    def log_exposures(self, exposures: pa.Table, *, spool_segment: str | None = None) -> int:
        """Append exposure records (``EXPOSURE_SCHEMA``) with one COPY; returns rows added.

        With ``spool_segment``, the rows and the segment's ``spool_applied`` entry are written
        in one transaction; a segment applied before adds nothing (returns 0).
        """
        if exposures.num_rows == 0 and spool_segment is None:
            return 0
        table = exposures.select(list(_EXPOSURE_COLUMNS))
        with self._transaction():
            if spool_segment is not None:
                claimed = self._conn.execute(
                    "INSERT INTO spool_applied VALUES (%s, 'exposures', %s, %s) "
                    "ON CONFLICT (segment) DO NOTHING RETURNING segment",
                    [spool_segment, exposures.num_rows, datetime.now(UTC)],
                ).fetchall()
                if not claimed:
                    return 0
            if exposures.num_rows:
                copy_in(self._conn, f"exposures ({', '.join(_EXPOSURE_COLUMNS)})", table)
        return exposures.num_rows

    def spool_applied(self, segments: list[str]) -> set[str]:
        """Which of ``segments`` this store has applied already."""
        if not segments:
            return set()
        rows = self._q("SELECT segment FROM spool_applied WHERE segment = ANY(?)", [segments])
        return {str(r[0]) for r in rows}

    # -- learners the served models have not seen ---------------------------------------------
    def max_ingest_id(self) -> int:
        """The newest committed ingest (0 before the first)."""
        return int(self._q("SELECT coalesce(max(ingest_id), 0) FROM ingest_log")[0][0])

    def unassigned_learners(
        self, model_ids: list[int], *, after_ingest_id: int = 0, limit: int | None = None
    ) -> pa.Array:
        """Learners with events from ingests after ``after_ingest_id`` that none of
        ``model_ids`` assigned (sorted; at most ``limit``)."""
        lim = f" LIMIT {int(limit)}" if limit is not None else ""
        rows = self._q(
            "SELECT DISTINCT e.learner_id FROM events e WHERE e.ingest_id > ? AND NOT EXISTS "
            "(SELECT 1 FROM assignments a WHERE a.model_id = ANY(?) "
            f"AND a.learner_id = e.learner_id) ORDER BY e.learner_id{lim}",
            [int(after_ingest_id), [int(m) for m in model_ids]],
        )
        return pa.array([str(r[0]) for r in rows], pa.string())

    def learner_events(self, learner_ids: pa.Array) -> pa.Table:
        """All events of ``learner_ids``, sorted by (learner_id, ts, event_id)."""
        ids = [str(x) for x in learner_ids.to_pylist()]
        return self._table(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE learner_id = ANY(%s) "
            "ORDER BY learner_id, ts, event_id",
            [ids],
            EVENT_SCHEMA,
        )

    def read_exposures(self, experiment: str | None = None) -> pa.Table:
        """Exposure records, optionally of one experiment, in logging order."""
        where = " WHERE experiment = %s" if experiment is not None else ""
        params = [experiment] if experiment is not None else []
        q = f"SELECT {', '.join(_EXPOSURE_COLUMNS)} FROM exposures{where} ORDER BY seq"
        return self._table(q, params, _EXPOSURE_SCHEMA)

    def experiment_outcomes(self, experiment: str) -> pa.Table:
        """Per-learner rows of an experiment: first exposure's variant joined with outcomes.

        Columns: learner_id, variant, exposed_at, completed, churned (0/1, null when unknown),
        revenue (as :meth:`DuckDBStore.experiment_outcomes`).
        """
        q = """WITH first AS (
                   SELECT DISTINCT ON (learner_id) learner_id, variant, exposed_at
                   FROM exposures WHERE experiment = %s
                   ORDER BY learner_id, exposed_at, seq)
               SELECT f.learner_id, f.variant, f.exposed_at,
                      o.completed::integer AS completed, o.churned::integer AS churned,
                      o.revenue
               FROM first f LEFT JOIN outcomes o USING (learner_id)
               ORDER BY f.learner_id"""
        return self._table(q, [experiment], _EXPERIMENT_OUTCOME_SCHEMA)

    @property
    def connection(self) -> NoReturn:
        """Not available: SQL stages that need a DuckDB connection must use a DuckDB store."""
        raise StoreError(
            f"{self.url} is a PostgreSQL store; this step needs a DuckDB connection "
            "(use a DuckDB file with --db)"
        )

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _PostgresIngest:
    """One ingest transaction: events are COPYed into a temporary staging table, then moved.

    ``resolve`` inserts the staged rows in staging order with ``ON CONFLICT (event_id) DO
    NOTHING``: a row whose event_id is stored already, or was staged earlier in this ingest,
    is a duplicate (the first occurrence wins). A concurrent ingest of the same events waits
    on the primary key and then counts them as duplicates.
    """

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        row = conn.execute("SELECT nextval('ingest_id_seq')").fetchone()
        assert row is not None
        self.ingest_id = int(row[0])
        self.committed = False
        self._sources: list[str] = []
        self._staged: dict[str, int] = {}
        conn.execute(
            "CREATE TEMP TABLE _staged ("
            " seq BIGINT GENERATED ALWAYS AS IDENTITY, event_id TEXT, learner_id TEXT,"
            " ts TIMESTAMPTZ, domain TEXT, item_id TEXT, outcome DOUBLE PRECISION,"
            " duration_s DOUBLE PRECISION, source_no INTEGER) ON COMMIT DROP"
        )

    def stage(self, events: pa.Table, source: str) -> None:
        """COPY validated events of ``source`` into the staging table."""
        n = events.num_rows
        self._staged[source] = self._staged.get(source, 0) + n
        if n == 0:
            return
        if source not in self._sources:
            self._sources.append(source)
        number = pa.array(np.full(n, self._sources.index(source) + 1, dtype=np.int32))
        table = events.select(EVENT_SCHEMA.names).append_column("source_no", number)
        copy_in(self._conn, f"_staged ({_EVENT_COLUMNS}, source_no)", table)

    def quarantine(self, rejected: pa.Table) -> None:
        """COPY rejected rows into the quarantine table (same transaction)."""
        if rejected.num_rows == 0:
            return
        table = rejected.select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA)
        ids = pa.array(np.full(table.num_rows, self.ingest_id, dtype=np.int64))
        copy_in(
            self._conn,
            f"quarantine (ingest_id, {_QUARANTINE_COLUMNS})",
            table.add_column(0, "ingest_id", ids),
        )

    def put_outcomes(self, outcomes: pa.Table) -> OutcomeCounts:
        """Merge outcomes column by column (see :meth:`IngestSession.put_outcomes`)."""
        columns = outcome_columns(outcomes.column_names)
        if outcomes.num_rows == 0:
            return OutcomeCounts(0, 0, 0)
        schema = pa.schema([OUTCOME_SCHEMA.field(n) for n in ("learner_id", *columns)])
        conn = self._conn
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS _outcomes_in ("
            " seq BIGINT GENERATED ALWAYS AS IDENTITY, learner_id TEXT, completed BOOLEAN,"
            " churned BOOLEAN, revenue DOUBLE PRECISION, as_of TIMESTAMPTZ) ON COMMIT DROP"
        )
        copy_in(
            conn,
            f"_outcomes_in ({', '.join(schema.names)})",
            outcomes.select(schema.names).cast(schema),
        )
        count, upsert = merge_outcomes_sql(columns, "_outcomes_in")
        row = conn.execute(count).fetchone()
        assert row is not None
        conn.execute(upsert.replace("?", "%s"), [self.ingest_id])
        conn.execute("TRUNCATE _outcomes_in")
        return OutcomeCounts(int(row[0]), int(row[1]), int(row[2]))

    def reject_examples(self, source: str, per_reason: int) -> list[RejectExample]:
        """The first ``per_reason`` quarantined rows of each reason of ``source``, this ingest."""
        rows = self._conn.execute(
            REJECT_EXAMPLES_SQL.replace("?", "%s"), [self.ingest_id, source, per_reason]
        ).fetchall()
        return [RejectExample(*r) for r in rows]

    def resolve(self) -> dict[str, CommitCounts]:
        """Insert staged events not stored yet (first occurrence wins); per-source counts."""
        rows = self._conn.execute(
            f"WITH ins AS (INSERT INTO events ({_EVENT_COLUMNS}, ingest_id, source) "
            f"SELECT {_EVENT_COLUMNS}, %s, (%s::text[])[source_no] FROM _staged ORDER BY seq "
            "ON CONFLICT (event_id) DO NOTHING RETURNING source) "
            "SELECT source, count(*) FROM ins GROUP BY source",
            [self.ingest_id, self._sources],
        ).fetchall()
        inserted = {str(source): int(n) for source, n in rows}
        return {
            src: CommitCounts(inserted=inserted.get(src, 0), duplicates=n - inserted.get(src, 0))
            for src, n in self._staged.items()
        }

    def commit(self, report: dict[str, object], *, spool_segment: str | None = None) -> None:
        """Log the ingest with its ``report`` (and the spool segment it applies) and commit."""
        totals = report.get("totals", {})
        assert isinstance(totals, dict)
        if spool_segment is not None:
            self._conn.execute(
                "INSERT INTO spool_applied VALUES (%s, 'events', %s, %s)",
                [spool_segment, int(totals.get("rows_read", 0)), datetime.now(UTC)],
            )
        self._conn.execute(
            "INSERT INTO ingest_log VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [
                self.ingest_id,
                datetime.now(UTC),
                int(totals.get("rows_read", 0)),
                int(totals.get("accepted", 0)),
                int(totals.get("rejected", 0)),
                int(totals.get("duplicates", 0)),
                json.dumps(report),
            ],
        )
        self._conn.execute("COMMIT")
        self.committed = True
