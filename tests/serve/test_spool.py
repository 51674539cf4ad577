"""The spool: every crash point between "handed out" and "deleted" applies a record once."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from cohortlens.events import ingest_sources
from cohortlens.serve.service import CohortService, raw_events_table, source_of
from cohortlens.serve.settings import ServeSettings
from cohortlens.serve.spool import Spool, SpoolFullError
from cohortlens.store import DuckDBStore, open_shared

AT = datetime(2025, 3, 1, 10, tzinfo=UTC)


def _service(db: Path) -> CohortService:
    return CohortService(ServeSettings(db=str(db)), open_shared(db))


def _exposures(db: Path) -> list[str]:
    with DuckDBStore(db, read_only=True) as store:
        return sorted(store.read_exposures().column("learner_id").to_pylist())


def test_the_journal_survives_a_killed_process(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    svc = _service(db)
    assert svc.spool is not None
    for lid in ("a", "b"):
        svc.spool.record_exposure(lid, "exp", "control", 7, AT)
    # The process dies here: its journal stays open. Make it look like another, dead process's.
    journal = next(svc.spool.directory.glob("*.exposures.open"))
    dead = journal.with_name(journal.name.replace(f"-{os.getpid()}-", "-999999999-"))
    os.replace(journal, dead)
    after = _service(db)  # the next service seals the orphan and applies it
    assert after.drain()["exposures"] == 2
    assert _exposures(db) == ["a", "b"]
    assert after.drain()["exposures"] == 0
    assert _exposures(db) == ["a", "b"]


def test_a_segment_committed_but_not_deleted_is_not_applied_twice(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    svc = _service(db)
    assert svc.spool is not None
    svc.spool.record_exposure("a", "exp", "control", 7, AT)
    segment = svc.spool.seal()
    assert segment is not None
    table, _ = svc.spool.read(segment) or (None, None)
    assert table is not None
    # Crash point: the transaction committed, the file was not deleted yet.
    with DuckDBStore(db) as store:
        assert store.log_exposures(table, spool_segment=segment.name) == 1
        assert store.log_exposures(table, spool_segment=segment.name) == 0  # idempotent
    assert segment.path.exists()
    assert svc.drain()["exposures"] == 0
    assert not segment.path.exists()
    assert _exposures(db) == ["a"]


def test_a_posted_batch_committed_but_not_deleted_is_not_ingested_twice(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    svc = _service(db)
    assert svc.spool is not None
    rows = [{"learner_id": "p1", "ts": "2025-03-01T10:00:00Z", "item_id": "q1", "outcome": 1}]
    raw = raw_events_table(rows)
    segment = svc.spool.put_events(raw, {"now": AT.isoformat(), "source": "api:test"})
    with DuckDBStore(db) as store:
        ingest_sources(store, [source_of(raw, "api:test")], now=AT, spool_segment=segment.name)
        logs = store.ingest_log().num_rows
    assert svc.drain()["events"] == 0
    with DuckDBStore(db, read_only=True) as store:
        assert store.count_events() == 1
        assert store.ingest_log().num_rows == logs  # no second ingest, not even of duplicates
    assert svc.spool.pending() == []


def test_torn_and_unreadable_segments_are_kept_not_lost(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.record_exposure("a", "exp", "control", 1, AT)
    spool.record_exposure("b", "exp", "control", 2, AT)
    segment = spool.seal()
    assert segment is not None
    with open(segment.path, "ab") as fh:
        fh.write(b'["c","exp","cont')  # a power loss mid-write: never acknowledged
    read = spool.read(segment)
    assert read is not None
    assert read[0].column("learner_id").to_pylist() == ["a", "b"]
    bad = spool.put_events(pa.table({"x": [1]}), {"now": AT.isoformat(), "source": "s"})
    bad.path.write_bytes(b"not arrow at all")
    assert spool.read(bad) is None
    assert (spool.directory / "bad" / bad.path.name).exists()  # set aside for a human


def test_a_full_spool_refuses_rather_than_drops(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1)
    spool.record_exposure("a", "exp", "control", 1, AT)
    spool.seal()
    with pytest.raises(SpoolFullError, match=r"spool .* holds 1 bytes already"):
        spool.put_events(raw_events_table([{"learner_id": "x"}]), {"now": "", "source": "s"})
