"""DuckDB store: the embedded default (one file; one process holds it at a time).

DuckDB locks the file for the lifetime of a connection, across processes. A process that finds
it held waits (up to ``wait_s``, retrying with back-off) instead of failing at once, so short
commands, the service (which opens the file only for short transactions) and the rollout
controller can take turns on one file (docs/DESIGN.md, "Sharing the embedded store").
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cohortlens.budget import MemoryBudget
from cohortlens.errors import StoreError
from cohortlens.events.schema import DEFAULT_DOMAIN, EVENT_SCHEMA, OUTCOME_SCHEMA, QUARANTINE_SCHEMA
from cohortlens.events.session import CommitCounts, OutcomeCounts, RejectExample
from cohortlens.events.source import LINE_COLUMN, NativeScan, RawBatch, TimestampUnit
from cohortlens.events.validate import (
    NO_FILTER_PUSHDOWN,
    build_query,
    prepare,
    validation_params,
)
from cohortlens.store._ingest_sql import (
    REJECT_EXAMPLES_SQL,
    merge_outcomes_sql,
    outcome_columns,
)
from cohortlens.store._state_sql import SharedState, quarantine_query
from cohortlens.store.base import (
    ConflictError,
    StoreBusyError,
    require_existing,
    with_quarantine_total,
)
from cohortlens.store.migrations import DUCKDB as MIGRATIONS

_EVENT_COLUMNS = ", ".join(EVENT_SCHEMA.names)
#: Environment variable: seconds a process waits for another one to release the DuckDB file.
LOCK_WAIT_ENV = "COHORTLENS_LOCK_WAIT_S"
#: Default of that wait.
DEFAULT_LOCK_WAIT_S = 60.0
_HOLDER_PID = re.compile(r"\(PID (\d+)\)")


def lock_wait_s(explicit: float | None = None) -> float:
    """Seconds to wait for the file lock: ``explicit``, else ``$COHORTLENS_LOCK_WAIT_S``, else 60."""
    if explicit is not None:
        return max(0.0, float(explicit))
    text = os.environ.get(LOCK_WAIT_ENV)
    if not text:
        return DEFAULT_LOCK_WAIT_S
    try:
        value = float(text)
    except ValueError:
        raise StoreError(f"${LOCK_WAIT_ENV}={text!r}: expected a number of seconds") from None
    if not value >= 0:
        raise StoreError(f"${LOCK_WAIT_ENV}={text!r}: expected a number of seconds >= 0")
    return value


def is_lock_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is DuckDB refusing the file because another process holds it."""
    return isinstance(exc, duckdb.IOException) and "Could not set lock" in str(exc)


def lock_holder(exc: BaseException) -> str:
    """The process named in a lock-conflict message, with its command line when readable."""
    found = _HOLDER_PID.search(str(exc))
    if found is None:
        return "another process"
    pid = found.group(1)
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return f"process {pid}"
    command = " ".join(argv[1:4]) if argv and "python" in Path(argv[0]).name else " ".join(argv[:3])
    return f"process {pid} ({command})" if command else f"process {pid}"


def apply_budget(con: duckdb.DuckDBPyConnection, budget: MemoryBudget) -> None:
    """DuckDB's ``memory_limit`` (its share of ``budget``) and, when the budget names one, its
    ``temp_directory``: past the limit DuckDB spills to disk instead of growing (by default
    it may take 80 % of the RAM, and an ingest's hash joins and uncommitted rows did)."""
    _exec(con, f"SET memory_limit = '{budget.duckdb_limit_bytes}B'")
    if budget.temp_dir is not None:
        _exec(con, "SET temp_directory = ?", [str(budget.temp_dir)])


def _spill_failure(con: duckdb.DuckDBPyConnection, url: str, exc: duckdb.Error) -> str:
    """The message of an ingest that ran out of memory or of temporary disk (rolled back)."""
    limit, temp = _exec(
        con, "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
    )[0]
    return (
        f"ingest into {url} ran out of memory or of temporary disk space (DuckDB memory_limit "
        f"{limit}, temp_directory {temp or '(none)'}): {str(exc).splitlines()[0]}; nothing was "
        "written. Free disk space there, or raise --memory-limit"
    )


def connect(
    path: str,
    *,
    read_only: bool = False,
    wait_s: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Connect to the DuckDB file ``path``, waiting up to ``wait_s`` while another process holds it.

    ``on_wait`` receives one message when the wait starts (the CLI prints it on stderr). The
    wait ends in a :class:`StoreError` naming the holder.
    """
    budget = lock_wait_s(wait_s)
    deadline = time.monotonic() + budget
    delay = 0.005
    told = False
    while True:
        try:
            return duckdb.connect(path, read_only=read_only)
        except duckdb.Error as exc:
            if not is_lock_conflict(exc):
                raise StoreError(f"cannot open the DuckDB store {path}: {exc}") from exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StoreBusyError(
                    f"the DuckDB store {path} is held by {lock_holder(exc)}; waited {budget:g} s "
                    f"(set ${LOCK_WAIT_ENV} to wait longer, or use PostgreSQL for many writers)"
                ) from None
            if not told and on_wait is not None:
                on_wait(
                    f"waiting for {path}: held by {lock_holder(exc)}; "
                    f"up to {budget:g} s (${LOCK_WAIT_ENV})"
                )
                told = True
            time.sleep(min(remaining, delay * (0.5 + random.random())))
            delay = min(delay * 2, 0.25)


def _select_schema(columns: Sequence[str] | None) -> pa.Schema:
    """The event schema restricted to ``columns`` (all of them when None), in schema order."""
    if columns is None:
        return EVENT_SCHEMA
    unknown = set(columns) - set(EVENT_SCHEMA.names)
    if unknown:
        raise ValueError(f"not event columns: {sorted(unknown)}")
    return pa.schema([f for f in EVENT_SCHEMA if f.name in set(columns)])


def _exec(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | dict[str, Any] | None = None
) -> list[tuple[Any, ...]]:
    """Run one statement to completion (DuckDB refuses new work while a result is pending)."""
    return con.execute(sql, params or []).fetchall()


@contextmanager
def _arrow_scan(con: duckdb.DuckDBPyConnection, table: pa.Table) -> Iterator[None]:
    """``table`` as the view ``batch``, for one pass.

    Registered as a one-pass reader: a registered Arrow *table* stays referenced until the
    transaction ends, which would keep every batch of an ingest in memory.
    """
    con.register("batch", pa.RecordBatchReader.from_batches(table.schema, table.to_batches()))
    try:
        yield
    finally:
        con.unregister("batch")


@contextmanager
def _view_scan(con: duckdb.DuckDBPyConnection, select: str) -> Iterator[None]:
    """The SQL ``select`` as the view ``batch``."""
    _exec(con, f"CREATE OR REPLACE TEMP VIEW batch AS {select}")
    try:
        yield
    finally:
        # In a transaction a failed statement aborted, only ROLLBACK runs (and drops the view).
        with suppress(duckdb.TransactionException):
            _exec(con, "DROP VIEW IF EXISTS batch")


@contextmanager
def _filter_after_parse(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Run statements that filter validated rows on ``reason`` without filter pushdown.

    Pushed below the parse, the filter would get its own copy of every parse expression.
    """
    previous = _exec(con, "SELECT current_setting('disabled_optimizers')")[0][0]
    _exec(con, NO_FILTER_PUSHDOWN)
    try:
        yield
    finally:
        with suppress(duckdb.TransactionException):  # an aborted transaction: see _view_scan
            _exec(con, "SET disabled_optimizers = ?", [previous])


class DuckDBStore(SharedState):
    """Events, quarantine, outcomes and run metadata in one DuckDB file (or ``:memory:``).

    Models, routing, rollout state and leases come from :class:`SharedState` (SQL shared with
    the PostgreSQL store) through :meth:`_q` and :meth:`_transaction`.
    """

    def __init__(
        self,
        path: str | Path = "cohortlens.duckdb",
        *,
        read_only: bool = False,
        create: bool = True,
        wait_s: float | None = None,
        on_wait: Callable[[str], None] | None = None,
        migrate: bool = True,
        budget: MemoryBudget | None = None,
    ) -> None:
        """Open (and, unless ``read_only``, migrate) the file ``path``.

        ``create=False`` refuses a file that does not exist (commands that only read, or need
        earlier results, never leave an empty store behind a typo). ``wait_s`` and ``on_wait``:
        see :func:`connect`. ``migrate=False`` only checks the schema version (a process that
        reopens a file it has migrated already). ``budget`` sets DuckDB's ``memory_limit`` (its
        share of the budget) and ``temp_directory`` (``budget.temp_dir``, else
        ``<store file>.tmp`` beside the store), so large sorts and joins spill there.
        """
        self.url = str(path)
        self.budget = budget
        if not create or read_only:
            require_existing(self.url)
        self._con = connect(self.url, read_only=read_only, wait_s=wait_s, on_wait=on_wait)
        try:
            _exec(self._con, "SET TimeZone = 'UTC'")
            if budget is not None:
                self._apply_budget(budget)
            if not read_only and (migrate or self.schema_version() < max(MIGRATIONS)):
                self._migrate()
            elif self.schema_version() > max(MIGRATIONS):
                self._too_new()
        except BaseException:
            self._con.close()
            raise

    def _apply_budget(self, budget: MemoryBudget) -> None:
        """DuckDB's memory limit and spill directory from ``budget``."""
        apply_budget(self._con, dataclasses.replace(budget, temp_dir=self.temp_directory))

    @property
    def temp_directory(self) -> Path:
        """Where DuckDB (and the feature pipeline) spill: the budget's, else beside the file."""
        if self.budget is not None and self.budget.temp_dir is not None:
            return Path(self.budget.temp_dir)
        if self.url == ":memory:":
            return Path(tempfile.gettempdir())
        return Path(f"{self.url}.tmp")

    # -- schema -----------------------------------------------------------------------------
    def _migrate(self) -> None:
        con = self._con
        _exec(
            con,
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)",
        )
        current = self.schema_version()
        if current > max(MIGRATIONS):
            self._too_new()
        for version in sorted(v for v in MIGRATIONS if v > current):
            _exec(con, "BEGIN TRANSACTION")
            try:
                for statement in MIGRATIONS[version]:
                    _exec(con, statement)
                _exec(
                    con, "INSERT INTO schema_migrations VALUES (?, ?)", [version, datetime.now(UTC)]
                )
                _exec(con, "COMMIT")
            except duckdb.Error:
                _exec(con, "ROLLBACK")
                raise

    def _too_new(self) -> None:
        raise StoreError(
            f"{self.url} has schema version {self.schema_version()}, newer than this release "
            f"understands ({max(MIGRATIONS)}); upgrade cohortlens"
        )

    def schema_version(self) -> int:
        """The highest applied migration (0 for an empty database)."""
        try:
            rows = _exec(self._con, "SELECT max(version) FROM schema_migrations")
        except duckdb.CatalogException:
            return 0
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    # -- ingest -----------------------------------------------------------------------------
    @contextmanager
    def ingest_session(self) -> Iterator[_DuckDBIngest]:
        """One transaction: staged rows become visible only if ``commit`` is reached."""
        con = self._con
        # Rows of one INSERT may land in any order (about 25 % faster); successive INSERTs
        # still append in order, which is what "the first occurrence wins" relies on.
        _exec(con, "SET preserve_insertion_order = false")
        _exec(con, "BEGIN TRANSACTION")
        session = _DuckDBIngest(con)
        try:
            yield session
            if not session.committed:
                raise RuntimeError("ingest session left without commit")
        except (duckdb.OutOfMemoryException, duckdb.IOException) as exc:
            _exec(con, "ROLLBACK")
            raise StoreError(_spill_failure(con, self.url, exc)) from exc
        except BaseException:
            _exec(con, "ROLLBACK")
            raise
        finally:
            _exec(con, "SET preserve_insertion_order = true")

    # -- reads ------------------------------------------------------------------------------
    def count_events(self) -> int:
        """Number of stored events."""
        return int(_exec(self._con, "SELECT count(*) FROM events")[0][0])

    def max_learner_events(self) -> int:
        """The largest number of events any one learner has (0 without events)."""
        rows = _exec(
            self._con,
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM events GROUP BY learner_id)",
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

        ``columns`` (default all of ``EVENT_SCHEMA``) selects what is read. Unsorted, the scan
        streams in storage order with memory bounded by ``batch_rows``; sorted, DuckDB sorts
        the whole table first (within its ``memory_limit``, spilling to ``temp_directory``).
        """
        schema = _select_schema(columns)
        order = " ORDER BY learner_id, ts, event_id" if sort else ""
        query = f"SELECT {', '.join(schema.names)} FROM events{order}"
        try:
            reader = self._con.sql(query).to_arrow_reader(batch_rows)
            for batch in reader:
                yield batch.cast(schema)
        except duckdb.OutOfMemoryException as exc:
            raise StoreError(
                f"{self.url}: reading events ran out of memory ({exc}); "
                "raise --memory-limit or read them unsorted"
            ) from exc
        except duckdb.IOException as exc:
            raise StoreError(
                f"{self.url}: reading events failed in {self.temp_directory} ({exc})"
            ) from exc

    def events_reader(
        self,
        *,
        sort: bool = True,
        batch_rows: int = 1 << 20,
        columns: Sequence[str] | None = None,
    ) -> pa.RecordBatchReader:
        """The events as one Arrow stream (see :meth:`read_events`)."""
        return pa.RecordBatchReader.from_batches(
            _select_schema(columns),
            self.read_events(sort=sort, batch_rows=batch_rows, columns=columns),
        )

    def read_outcomes(self) -> pa.Table:
        """All learner outcomes."""
        cols = ", ".join(OUTCOME_SCHEMA.names)
        table = self._con.sql(f"SELECT {cols} FROM outcomes ORDER BY learner_id").to_arrow_table()
        return table.cast(OUTCOME_SCHEMA)

    def read_quarantine(
        self, limit: int | None = None, *, reason: str | None = None, source: str | None = None
    ) -> pa.Table:
        """Quarantined rows, newest ingest first, filtered; the matching total in the metadata."""
        query, params = quarantine_query(QUARANTINE_SCHEMA.names, limit, reason, source)
        rows = self._con.sql(query, params=params).to_arrow_table()
        return with_quarantine_total(rows, QUARANTINE_SCHEMA, limit)

    def ingest_log(self) -> pa.Table:
        """One row per committed ingest."""
        return self._con.sql("SELECT * FROM ingest_log ORDER BY ingest_id").to_arrow_table()

    # -- feature runs -----------------------------------------------------------------------
    def save_feature_run(self, features: pa.Table, params: dict[str, Any], source: str) -> int:
        """Store one run's feature table with the parameters used; returns its run id."""
        sink = pa.BufferOutputStream()
        pq.write_table(features, sink, compression="zstd")
        con = self._con
        _exec(con, "BEGIN TRANSACTION")
        try:
            run_id = int(_exec(con, "SELECT nextval('feature_run_seq')")[0][0])
            _exec(
                con,
                "INSERT INTO feature_runs VALUES (?, ?, ?, ?, ?)",
                [run_id, datetime.now(UTC), source, json.dumps(params), features.num_rows],
            )
            _exec(
                con,
                "INSERT INTO feature_blobs VALUES (?, ?)",
                [run_id, sink.getvalue().to_pybytes()],
            )
            _exec(con, "COMMIT")
        except BaseException:
            _exec(con, "ROLLBACK")
            raise
        return run_id

    def read_features(self, run_id: int | None = None) -> tuple[int, pa.Table]:
        """A feature run's table (the latest run when ``run_id`` is None)."""
        if run_id is None:
            rows = _exec(self._con, "SELECT max(run_id) FROM feature_runs")
            if not rows or rows[0][0] is None:
                raise StoreError(f"{self.url} has no feature run yet; run `cohortlens features`")
            run_id = int(rows[0][0])
        blob = _exec(self._con, "SELECT parquet FROM feature_blobs WHERE run_id = ?", [run_id])
        if not blob:
            raise StoreError(f"{self.url} has no feature run {run_id}")
        return run_id, pq.read_table(pa.BufferReader(blob[0][0]))

    def feature_runs(self) -> list[dict[str, Any]]:
        """Every feature run: id, time, source, parameters, learners."""
        rows = _exec(
            self._con,
            "SELECT run_id, created_at, source, params, n_learners FROM feature_runs ORDER BY run_id",
        )
        keys = ("run_id", "created_at", "source", "params", "n_learners")
        return [dict(zip(keys, r, strict=True)) | {"params": json.loads(r[3])} for r in rows]

    # -- cohort models (save_model, active_model, model, models: SharedState) ----------------
    def save_assignments(self, model_id: int, assignments: pa.Table) -> None:
        """Replace the stored assignments of ``model_id`` (learner_id, cohort_id, archetype, distance)."""
        con = self._con
        con.register("_assign", assignments)
        _exec(con, "BEGIN TRANSACTION")
        try:
            _exec(con, "DELETE FROM assignments WHERE model_id = ?", [model_id])
            _exec(
                con,
                "INSERT INTO assignments SELECT ?, learner_id, cohort_id, archetype, distance "
                "FROM _assign",
                [model_id],
            )
            _exec(con, "COMMIT")
        except BaseException:
            _exec(con, "ROLLBACK")
            raise
        finally:
            con.unregister("_assign")

    def read_assignments(self, model_id: int) -> pa.Table:
        """All assignments of ``model_id``."""
        return self._con.sql(
            "SELECT learner_id, cohort_id, archetype, distance FROM assignments "
            f"WHERE model_id = {int(model_id)} ORDER BY learner_id"
        ).to_arrow_table()

    # -- experiments --------------------------------------------------------------------------
    def log_exposures(self, exposures: pa.Table, *, spool_segment: str | None = None) -> int:
        """Append exposure records (``experiments.assignment.EXPOSURE_SCHEMA``); returns rows added.

        With ``spool_segment``, the rows and the segment's ``spool_applied`` entry are written
        in one transaction; a segment applied before adds nothing (returns 0).
        """
        if exposures.num_rows == 0 and spool_segment is None:
            return 0
        con = self._con
        con.register("_exposures", exposures)
        try:
            with self._transaction():
                if spool_segment is not None and self.spool_applied([spool_segment]):
                    return 0
                _exec(
                    con,
                    "INSERT INTO exposures SELECT learner_id, experiment, variant, layer, bucket, "
                    "hash_version, exposed_at FROM _exposures",
                )
                if spool_segment is not None:
                    _mark_applied(con, spool_segment, "exposures", exposures.num_rows)
        finally:
            con.unregister("_exposures")
        return exposures.num_rows

    def spool_applied(self, segments: list[str]) -> set[str]:
        """Which of ``segments`` this store has applied already."""
        if not segments:
            return set()
        rows = _exec(
            self._con,
            "SELECT segment FROM spool_applied WHERE segment IN (SELECT unnest(?))",
            [list(segments)],
        )
        return {str(r[0]) for r in rows}

    # -- learners the served models have not seen ---------------------------------------------
    def max_ingest_id(self) -> int:
        """The newest committed ingest (0 before the first)."""
        return int(_exec(self._con, "SELECT coalesce(max(ingest_id), 0) FROM ingest_log")[0][0])

    def unassigned_learners(
        self, model_ids: list[int], *, after_ingest_id: int = 0, limit: int | None = None
    ) -> pa.Array:
        """Learners with events from ingests after ``after_ingest_id`` that none of
        ``model_ids`` assigned (sorted; at most ``limit``)."""
        lim = f" LIMIT {int(limit)}" if limit is not None else ""
        table = self._con.sql(
            "SELECT DISTINCT learner_id FROM events WHERE ingest_id > ? AND learner_id NOT IN "
            "(SELECT learner_id FROM assignments WHERE model_id IN (SELECT unnest(?))) "
            f"ORDER BY learner_id{lim}",
            params=[int(after_ingest_id), [int(m) for m in model_ids]],
        ).to_arrow_table()
        return table.column("learner_id").combine_chunks().cast(pa.string())

    def learner_events(self, learner_ids: pa.Array) -> pa.Table:
        """All events of ``learner_ids``, sorted by (learner_id, ts, event_id)."""
        con = self._con
        con.register("_wanted", pa.table({"learner_id": learner_ids.cast(pa.string())}))
        try:
            table = con.sql(
                f"SELECT {_EVENT_COLUMNS} FROM events "
                "WHERE learner_id IN (SELECT learner_id FROM _wanted) "
                "ORDER BY learner_id, ts, event_id"
            ).to_arrow_table()
        finally:
            con.unregister("_wanted")
        return table.cast(EVENT_SCHEMA)

    def read_exposures(self, experiment: str | None = None) -> pa.Table:
        """Exposure records, optionally of one experiment, in logging order."""
        where = " WHERE experiment = ?" if experiment is not None else ""
        params = [experiment] if experiment is not None else []
        return self._con.sql(
            "SELECT learner_id, experiment, variant, layer, bucket, hash_version, exposed_at "
            f"FROM exposures{where} ORDER BY rowid",
            params=params,
        ).to_arrow_table()

    def experiment_outcomes(self, experiment: str) -> pa.Table:
        """Per-learner rows of an experiment: first exposure's variant joined with outcomes.

        Columns: learner_id, variant, exposed_at, completed, churned (0/1, null when unknown),
        revenue. Learners exposed but without an outcome row keep nulls.
        """
        return self._con.sql(
            """WITH first AS (
                   SELECT learner_id, arg_min(variant, exposed_at) AS variant,
                          min(exposed_at) AS exposed_at
                   FROM exposures WHERE experiment = ? GROUP BY learner_id)
               SELECT f.learner_id, f.variant, f.exposed_at,
                      CAST(o.completed AS INTEGER) AS completed,
                      CAST(o.churned AS INTEGER) AS churned, o.revenue
               FROM first f LEFT JOIN outcomes o USING (learner_id)
               ORDER BY f.learner_id""",
            params=[experiment],
        ).to_arrow_table()

    # -- SharedState hooks ------------------------------------------------------------------
    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement of the shared SQL (``?`` placeholders)."""
        return _exec(self._con, sql, list(params))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction; a write-write conflict with another connection is a ConflictError."""
        _exec(self._con, "BEGIN TRANSACTION")
        try:
            yield
            _exec(self._con, "COMMIT")
        except duckdb.TransactionException as exc:
            self._rollback_quietly()
            raise ConflictError(f"{self.url}: concurrent change, retry: {exc}") from exc
        except BaseException:
            self._rollback_quietly()
            raise

    def _rollback_quietly(self) -> None:
        with suppress(duckdb.Error):  # a failed COMMIT already ended the transaction
            _exec(self._con, "ROLLBACK")

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The underlying connection, for the stages that query the store in SQL."""
        return self._con

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._con.close()

    def __enter__(self) -> DuckDBStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _mark_applied(con: duckdb.DuckDBPyConnection, segment: str, kind: str, rows: int) -> None:
    """Record a spool segment as applied (inside the caller's transaction)."""
    _exec(
        con,
        "INSERT INTO spool_applied VALUES (?, ?, ?, ?)",
        [segment, kind, int(rows), datetime.now(UTC)],
    )


class _DuckDBIngest:
    """One ingest transaction: rows go straight into ``events``; duplicates are removed at resolve.

    Writing once and deleting the (usually few) duplicates is cheaper than staging every row
    and copying it again.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self.ingest_id = int(_exec(con, "SELECT nextval('ingest_id_seq')")[0][0])
        self.committed = False
        self._staged: dict[str, int] = {}

    def stage(self, events: pa.Table, source: str) -> None:
        """Insert validated events of ``source`` (tagged with this ingest) into ``events``."""
        n = events.num_rows
        self._staged[source] = self._staged.get(source, 0) + n
        if n == 0:
            return
        with _arrow_scan(self._con, events):
            _exec(
                self._con,
                f"INSERT INTO events SELECT {_EVENT_COLUMNS}, ?, ? FROM batch",
                [self.ingest_id, source],
            )

    def stage_raw(
        self,
        batch: RawBatch,
        source: str,
        *,
        ts_unit: TimestampUnit,
        now: datetime,
        ts_format: str | None = None,
    ) -> tuple[int, dict[str, int]]:
        """Validate ``batch`` inside this database and write both parts; no Arrow round trip.

        Returns the accepted row count and the rejected rows per reason (reader rejects
        included). Equivalent to :func:`validate_batch` + :meth:`stage` + :meth:`quarantine`.
        """
        table, query, params = prepare(batch, ts_unit, now=now, ts_format=ts_format)
        accepted, counts = self._insert_validated(
            query, params, source, table.num_rows, partial(_arrow_scan, self._con, table)
        )
        self.quarantine(batch.rejects)
        for pair in pc.value_counts(batch.rejects["reason"]).to_pylist():
            counts[pair["values"]] = counts.get(pair["values"], 0) + pair["counts"]
        return accepted, counts

    def stage_native(
        self,
        scan: NativeScan,
        source: str,
        *,
        ts_unit: TimestampUnit,
        now: datetime,
        ts_format: str | None = None,
    ) -> tuple[int, int, dict[str, int]]:
        """Read, validate and write a whole file in DuckDB's own parallel scan.

        Returns rows read, rows accepted and rejected rows per reason. The rows and their
        ``_line`` (record numbers) are those ``Source.batches()`` would give.
        """
        path = "'" + str(scan.path).replace("'", "''") + "'"
        cols = ", ".join(f'"{src}" AS {canonical}' for canonical, src in scan.plan)
        con = self._con
        rows = int(_exec(con, f"SELECT count(*) FROM read_parquet({path})")[0][0])  # footer
        view = (
            f"SELECT {cols}, CAST(file_row_number + 1 AS BIGINT) AS {LINE_COLUMN} "
            f"FROM read_parquet({path}, file_row_number = true)"
        )
        types = dict(scan.types) | {LINE_COLUMN: pa.int64()}
        query = build_query(types, ts_unit, DEFAULT_DOMAIN, ts_format)
        accepted, counts = self._insert_validated(
            query, validation_params(now), source, rows, partial(_view_scan, con, view)
        )
        return rows, accepted, counts

    @contextmanager
    def progress_tracked(self) -> Iterator[Callable[[], float | None]]:
        """While the block runs, DuckDB tracks how far each statement of this ingest is.

        Yields a function giving the share done (0-1) of the statement running now, or None;
        it may be called from another thread while :meth:`stage_native` runs (DuckDB's own
        estimate, by the rows its scan has read). DuckDB's own bar is never printed (it would
        go to stdout); tracking is off again after the block.
        """
        con = self._con
        _exec(con, "SET enable_progress_bar = true")
        _exec(con, "SET enable_progress_bar_print = false")

        def share() -> float | None:
            value = float(con.query_progress())
            return value / 100.0 if value >= 0 else None

        try:
            yield share
        finally:
            # After a failed statement the transaction refuses everything but ROLLBACK: the
            # failure itself is what the caller must see, not this reset's.
            with suppress(duckdb.TransactionException):
                _exec(con, "RESET enable_progress_bar")
                _exec(con, "RESET enable_progress_bar_print")

    def _insert_validated(
        self,
        query: str,
        params: dict[str, object],
        source: str,
        rows: int,
        scan: Callable[[], AbstractContextManager[None]],
    ) -> tuple[int, dict[str, int]]:
        """Write the ``rows`` rows of a validation ``query`` where they belong.

        ``scan()`` makes the input available as ``batch`` for one pass. One pass inserts the
        accepted rows into ``events``; its count tells whether any row was rejected, and only
        then a second pass writes those to ``quarantine``. No intermediate table: each value
        is parsed once per pass and written once. Returns the accepted count and the
        rejected rows per reason.
        """
        con = self._con
        tagged = params | {"ingest_id": self.ingest_id, "source": source}
        q_cols = ", ".join(QUARANTINE_SCHEMA.names[1:])
        with _filter_after_parse(con), scan():
            accepted = int(
                _exec(
                    con,
                    f"INSERT INTO events SELECT {_EVENT_COLUMNS}, $ingest_id, $source "
                    f"FROM ({query}) WHERE reason IS NULL",
                    tagged,
                )[0][0]
            )
        counts: dict[str, int] = {}
        if accepted < rows:
            with _filter_after_parse(con), scan():
                counts = {
                    str(reason): int(n)
                    for reason, n in _exec(
                        con,
                        f"WITH written AS (INSERT INTO quarantine "
                        f"SELECT $ingest_id, $source, {q_cols} FROM ({query}) "
                        "WHERE reason IS NOT NULL RETURNING reason) "
                        "SELECT reason, count(*) FROM written GROUP BY reason",
                        tagged,
                    )
                }
        self._staged[source] = self._staged.get(source, 0) + accepted
        return accepted, counts

    def quarantine(self, rejected: pa.Table) -> None:
        """Write rejected rows into the quarantine table (same transaction)."""
        if rejected.num_rows == 0:
            return
        with _arrow_scan(self._con, rejected):
            cols = ", ".join(QUARANTINE_SCHEMA.names)
            _exec(
                self._con,
                f"INSERT INTO quarantine SELECT ?, {cols} FROM batch",
                [self.ingest_id],
            )

    def put_outcomes(self, outcomes: pa.Table) -> OutcomeCounts:
        """Merge outcomes column by column (see :meth:`IngestSession.put_outcomes`)."""
        columns = outcome_columns(outcomes.column_names)
        if outcomes.num_rows == 0:
            return OutcomeCounts(0, 0, 0)
        schema = pa.schema([OUTCOME_SCHEMA.field(n) for n in ("learner_id", *columns)])
        table = outcomes.select(schema.names).cast(schema)
        seq = pa.array(np.arange(table.num_rows, dtype=np.int64))
        self._con.register("_outcomes", table.append_column("seq", seq))
        try:
            count, upsert = merge_outcomes_sql(columns, "_outcomes")
            inserted, updated, unchanged = _exec(self._con, count)[0]
            _exec(self._con, upsert, [self.ingest_id])
        finally:
            self._con.unregister("_outcomes")
        return OutcomeCounts(int(inserted), int(updated), int(unchanged))

    def reject_examples(self, source: str, per_reason: int) -> list[RejectExample]:
        """The first ``per_reason`` quarantined rows of each reason of ``source``, this ingest."""
        rows = _exec(self._con, REJECT_EXAMPLES_SQL, [self.ingest_id, source, per_reason])
        return [RejectExample(*row) for row in rows]

    def resolve(self) -> dict[str, CommitCounts]:
        """Delete this ingest's rows whose event_id is already stored or repeated (first wins)."""
        con, cur = self._con, self.ingest_id
        deleted: dict[str, int] = {}
        # Copies of events stored by earlier ingests.
        earlier = _exec(
            con,
            "WITH gone AS (DELETE FROM events WHERE ingest_id = $cur AND event_id IN "
            "(SELECT event_id FROM events WHERE ingest_id < $cur AND event_id IN "
            " (SELECT event_id FROM events WHERE ingest_id = $cur)) RETURNING source) "
            "SELECT source, count(*) FROM gone GROUP BY source",
            {"cur": cur},
        )
        # Repeats within this ingest: keep the first inserted row of each event_id. Usually
        # there are none, and one pass says so (the delete below would read twice). It sorts
        # 64-bit hashes, not the strings, and compares neighbours: equal ids hash equally, so
        # no repeated hash means no repeated id; a collision only runs the exact delete for
        # nothing. Sorting takes half the CPU of grouping the hashes (measured at 24M rows)
        # and spills to disk in order when the rows outgrow DuckDB's memory_limit.
        repeated = _exec(
            con,
            "SELECT count(*) FROM (SELECT h, lag(h) OVER (ORDER BY h) AS before FROM "
            "(SELECT hash(event_id) AS h FROM events WHERE ingest_id = $cur)) WHERE h = before",
            {"cur": cur},
        )[0][0]
        within = []
        if repeated:
            within = _exec(
                con,
                "WITH gone AS (DELETE FROM events WHERE ingest_id = $cur AND rowid IN ("
                " SELECT rowid FROM events WHERE ingest_id = $cur AND event_id IN ("
                "  SELECT event_id FROM events WHERE ingest_id = $cur "
                "  GROUP BY event_id HAVING count(*) > 1)"
                " QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY rowid) > 1"
                ") RETURNING source) SELECT source, count(*) FROM gone GROUP BY source",
                {"cur": cur},
            )
        for source, n in earlier + within:
            deleted[source] = deleted.get(source, 0) + int(n)
        return {
            src: CommitCounts(inserted=n - deleted.get(src, 0), duplicates=deleted.get(src, 0))
            for src, n in self._staged.items()
        }

    def commit(self, report: dict[str, object], *, spool_segment: str | None = None) -> None:
        """Log the ingest with its ``report`` (and the spool segment it applies) and commit."""
        totals = report.get("totals", {})
        assert isinstance(totals, dict)
        if spool_segment is not None:
            _mark_applied(self._con, spool_segment, "events", int(totals.get("rows_read", 0)))
        _exec(
            self._con,
            "INSERT INTO ingest_log VALUES (?, ?, ?, ?, ?, ?, ?)",
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
        _exec(self._con, "COMMIT")
        self.committed = True
