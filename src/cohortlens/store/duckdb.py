"""DuckDB store: the embedded default (one file, one writer process)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cohortlens.errors import StoreError
from cohortlens.events.schema import DEFAULT_DOMAIN, EVENT_SCHEMA, OUTCOME_SCHEMA, QUARANTINE_SCHEMA
from cohortlens.events.source import LINE_COLUMN, NativeScan, RawBatch, TimestampUnit
from cohortlens.events.validate import build_query, prepare, validation_params
from cohortlens.store.base import CommitCounts
from cohortlens.store.migrations import DUCKDB as MIGRATIONS

_EVENT_COLUMNS = ", ".join(EVENT_SCHEMA.names)


def _exec(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | dict[str, Any] | None = None
) -> list[tuple[Any, ...]]:
    """Run one statement to completion (DuckDB refuses new work while a result is pending)."""
    return con.execute(sql, params or []).fetchall()


class DuckDBStore:
    """Events, quarantine, outcomes and run metadata in one DuckDB file (or ``:memory:``)."""

    def __init__(self, path: str | Path = "cohortlens.duckdb", *, read_only: bool = False) -> None:
        self.url = str(path)
        try:
            self._con = duckdb.connect(self.url, read_only=read_only)
        except (duckdb.IOException, duckdb.Error) as exc:
            raise StoreError(f"cannot open the DuckDB store {self.url}: {exc}") from exc
        _exec(self._con, "SET TimeZone = 'UTC'")
        if not read_only:
            self._migrate()
        elif self.schema_version() > max(MIGRATIONS):
            self._too_new()

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
        except BaseException:
            _exec(con, "ROLLBACK")
            raise
        finally:
            _exec(con, "SET preserve_insertion_order = true")

    # -- reads ------------------------------------------------------------------------------
    def count_events(self) -> int:
        """Number of stored events."""
        return int(_exec(self._con, "SELECT count(*) FROM events")[0][0])

    def read_events(
        self, *, sort: bool = True, batch_rows: int = 1 << 20
    ) -> Iterator[pa.RecordBatch]:
        """Stream canonical events, sorted by (learner_id, ts, event_id) when ``sort``."""
        order = " ORDER BY learner_id, ts, event_id" if sort else ""
        reader = self._con.sql(f"SELECT {_EVENT_COLUMNS} FROM events{order}").to_arrow_reader(
            batch_rows
        )
        for batch in reader:
            yield batch.cast(EVENT_SCHEMA)

    def events_reader(
        self, *, sort: bool = True, batch_rows: int = 1 << 20
    ) -> pa.RecordBatchReader:
        """The events as one Arrow stream (see :meth:`read_events`)."""
        return pa.RecordBatchReader.from_batches(
            EVENT_SCHEMA, self.read_events(sort=sort, batch_rows=batch_rows)
        )

    def read_outcomes(self) -> pa.Table:
        """All learner outcomes."""
        cols = ", ".join(OUTCOME_SCHEMA.names)
        table = self._con.sql(f"SELECT {cols} FROM outcomes ORDER BY learner_id").to_arrow_table()
        return table.cast(OUTCOME_SCHEMA)

    def read_quarantine(self, limit: int | None = None) -> pa.Table:
        """Quarantined rows in ingest order."""
        cols = ", ".join(QUARANTINE_SCHEMA.names)
        lim = f" LIMIT {int(limit)}" if limit is not None else ""
        q = f"SELECT {cols} FROM quarantine ORDER BY ingest_id, source, line{lim}"
        return self._con.sql(q).to_arrow_table().cast(QUARANTINE_SCHEMA)

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

    # -- cohort models --------------------------------------------------------------------------
    def save_model(
        self, artifact: dict[str, Any], *, feature_run_id: int | None, activate: bool
    ) -> int:
        """Store a cohort-model artifact; with ``activate`` it becomes the one active model."""
        con = self._con
        _exec(con, "BEGIN TRANSACTION")
        try:
            model_id = int(_exec(con, "SELECT nextval('cohort_model_seq')")[0][0])
            if activate:
                _exec(con, "UPDATE cohort_models SET status = 'retired' WHERE status = 'active'")
            _exec(
                con,
                "INSERT INTO cohort_models VALUES (?, ?, ?, ?, ?)",
                [
                    model_id,
                    datetime.now(UTC),
                    feature_run_id,
                    "active" if activate else "candidate",
                    json.dumps(artifact),
                ],
            )
            _exec(con, "COMMIT")
        except BaseException:
            _exec(con, "ROLLBACK")
            raise
        return model_id

    def active_model(self) -> tuple[int, dict[str, Any]] | None:
        """The active model's id and artifact, or None when no model was activated."""
        rows = _exec(
            self._con,
            "SELECT model_id, artifact FROM cohort_models WHERE status = 'active' "
            "ORDER BY model_id DESC LIMIT 1",
        )
        return (int(rows[0][0]), json.loads(rows[0][1])) if rows else None

    def models(self) -> list[dict[str, Any]]:
        """Every stored model: id, time, feature run, status."""
        rows = _exec(
            self._con,
            "SELECT model_id, created_at, feature_run_id, status FROM cohort_models ORDER BY model_id",
        )
        keys = ("model_id", "created_at", "feature_run_id", "status")
        return [dict(zip(keys, r, strict=True)) for r in rows]

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
    def log_exposures(self, exposures: pa.Table) -> int:
        """Append exposure records (``experiments.assignment.EXPOSURE_SCHEMA``); returns rows added."""
        if exposures.num_rows == 0:
            return 0
        con = self._con
        con.register("_exposures", exposures)
        try:
            _exec(
                con,
                "INSERT INTO exposures SELECT learner_id, experiment, variant, layer, bucket, "
                "hash_version, exposed_at FROM _exposures",
            )
        finally:
            con.unregister("_exposures")
        return exposures.num_rows

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
        self._con.register("_incoming", events)
        try:
            _exec(
                self._con,
                f"INSERT INTO events SELECT {_EVENT_COLUMNS}, ?, ? FROM _incoming",
                [self.ingest_id, source],
            )
        finally:
            self._con.unregister("_incoming")

    def stage_raw(
        self, batch: RawBatch, source: str, *, ts_unit: TimestampUnit, now: datetime
    ) -> tuple[int, dict[str, int]]:
        """Validate ``batch`` inside this database and write both parts; no Arrow round trip.

        Returns the accepted row count and the rejected rows per reason (reader rejects
        included). Equivalent to :func:`validate_batch` + :meth:`stage` + :meth:`quarantine`.
        """
        table, query, params = prepare(batch, ts_unit, now=now)
        con = self._con
        con.register("batch", table)
        try:
            _exec(con, f"CREATE OR REPLACE TEMP TABLE _validated AS {query}", params)
        finally:
            con.unregister("batch")
        accepted, counts = self._split_validated(source)
        self.quarantine(batch.rejects)
        for pair in pc.value_counts(batch.rejects["reason"]).to_pylist():
            counts[pair["values"]] = counts.get(pair["values"], 0) + pair["counts"]
        return accepted, counts

    def stage_native(
        self, scan: NativeScan, source: str, *, ts_unit: TimestampUnit, now: datetime
    ) -> tuple[int, int, dict[str, int]]:
        """Read, validate and write a whole file in DuckDB's own parallel scan.

        Returns rows read, rows accepted and rejected rows per reason. The rows and their
        ``_line`` (record numbers) are those ``Source.batches()`` would give.
        """
        path = "'" + str(scan.path).replace("'", "''") + "'"
        cols = ", ".join(f'"{src}" AS {canonical}' for canonical, src in scan.plan)
        con = self._con
        _exec(
            con,
            f"CREATE OR REPLACE TEMP VIEW batch AS SELECT {cols}, "
            f"CAST(file_row_number + 1 AS BIGINT) AS {LINE_COLUMN} "
            f"FROM read_parquet({path}, file_row_number = true)",
        )
        types = dict(scan.types) | {LINE_COLUMN: pa.int64()}
        query = build_query(types, ts_unit, DEFAULT_DOMAIN)
        try:
            _exec(
                con, f"CREATE OR REPLACE TEMP TABLE _validated AS {query}", validation_params(now)
            )
        finally:
            _exec(con, "DROP VIEW IF EXISTS batch")
        rows = int(_exec(con, "SELECT count(*) FROM _validated")[0][0])
        accepted, counts = self._split_validated(source)
        return rows, accepted, counts

    def _split_validated(self, source: str) -> tuple[int, dict[str, int]]:
        """Move ``_validated`` into events and quarantine; accepted count and rejects by reason."""
        con = self._con
        _exec(
            con,
            f"INSERT INTO events SELECT {_EVENT_COLUMNS}, ?, ? FROM _validated "
            "WHERE reason IS NULL",
            [self.ingest_id, source],
        )
        cols = ", ".join(QUARANTINE_SCHEMA.names[1:])
        _exec(
            con,
            f"INSERT INTO quarantine SELECT ?, ?, {cols} FROM _validated WHERE reason IS NOT NULL",
            [self.ingest_id, source],
        )
        counts: dict[Any, int] = dict(
            _exec(con, "SELECT reason, count(*) FROM _validated GROUP BY reason")
        )
        _exec(con, "DROP TABLE _validated")
        accepted = int(counts.pop(None, 0))
        self._staged[source] = self._staged.get(source, 0) + accepted
        return accepted, {str(k): int(v) for k, v in counts.items()}

    def quarantine(self, rejected: pa.Table) -> None:
        """Write rejected rows into the quarantine table (same transaction)."""
        if rejected.num_rows == 0:
            return
        self._con.register("_rejected", rejected)
        try:
            cols = ", ".join(QUARANTINE_SCHEMA.names)
            _exec(
                self._con,
                f"INSERT INTO quarantine SELECT ?, {cols} FROM _rejected",
                [self.ingest_id],
            )
        finally:
            self._con.unregister("_rejected")

    def put_outcomes(self, outcomes: pa.Table) -> None:
        """Upsert outcomes; within one table the last row per learner wins."""
        if outcomes.num_rows == 0:
            return
        table = outcomes.cast(OUTCOME_SCHEMA)
        idx = pa.array(np.arange(table.num_rows, dtype=np.int64))
        self._con.register("_outcomes", table.append_column("_i", idx))
        try:
            _exec(
                self._con,
                "INSERT OR REPLACE INTO outcomes "
                "SELECT learner_id, completed, churned, revenue, as_of, ? FROM _outcomes "
                "QUALIFY row_number() OVER (PARTITION BY learner_id ORDER BY _i DESC) = 1",
                [self.ingest_id],
            )
        finally:
            self._con.unregister("_outcomes")

    def resolve(self) -> dict[str, CommitCounts]:
        """Delete this ingest's rows whose event_id is already stored or repeated (first wins)."""
        con, cur = self._con, self.ingest_id
        deleted: dict[str, int] = {}
        # Copies of events stored by earlier ingests.
        earlier = _exec(
            con,
            "DELETE FROM events WHERE ingest_id = $cur AND event_id IN "
            "(SELECT event_id FROM events WHERE ingest_id < $cur AND event_id IN "
            " (SELECT event_id FROM events WHERE ingest_id = $cur)) RETURNING source",
            {"cur": cur},
        )
        # Repeats within this ingest: keep the first inserted row of each event_id.
        within = _exec(
            con,
            "DELETE FROM events WHERE ingest_id = $cur AND rowid IN ("
            " SELECT rowid FROM events WHERE ingest_id = $cur AND event_id IN ("
            "  SELECT event_id FROM events WHERE ingest_id = $cur "
            "  GROUP BY event_id HAVING count(*) > 1)"
            " QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY rowid) > 1"
            ") RETURNING source",
            {"cur": cur},
        )
        for (source,) in earlier + within:
            deleted[source] = deleted.get(source, 0) + 1
        return {
            src: CommitCounts(inserted=n - deleted.get(src, 0), duplicates=deleted.get(src, 0))
            for src, n in self._staged.items()
        }

    def commit(self, report: dict[str, object]) -> None:
        """Log the ingest with its ``report`` and commit the transaction."""
        totals = report.get("totals", {})
        assert isinstance(totals, dict)
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
