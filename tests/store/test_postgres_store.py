"""PostgresStore: ingest equal to DuckDB's, bulk paths, schema handling, and real races."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from tests.store.conftest import PG_URL, with_schema

from cohortlens.errors import StoreError
from cohortlens.events.ingest import ingest
from cohortlens.events.schema import EVENT_SCHEMA, OUTCOME_SCHEMA
from cohortlens.events.source import RawBatch
from cohortlens.events.validate import validate_batch
from cohortlens.experiments.assignment import EXPOSURE_SCHEMA
from cohortlens.store import ConflictError, DuckDBStore, open_store
from cohortlens.store.migrations import POSTGRES
from cohortlens.store.postgres import PostgresStore, _first_schema, redact

NOW = datetime(2026, 1, 1, tzinfo=UTC)

EVENTS_CSV = """learner_id,ts,item_id,outcome,duration_s,domain
a,2024-01-01T00:00:00Z,i1,1,3.5,math
a,2024-01-01T00:00:00Z,i1,1,3.5,math
b,2024-01-02T00:00:00.123456+02:00,"i,2",0.5,,
c,not-a-time,i3,,,
d,2024-01-03T00:00:00Z,,1,,
"",2024-01-03T00:00:00Z,x,1,,
é,2024-01-03T00:00:00Z,"q""uote",1,,sci
a,2024-01-01T00:00:01Z,"multi
line",0,1e-3,math
b,1704067200,i9,,7,""
b,2024-01-01T00:00:00Z,i9,2,,math
"""
MORE_CSV = """learner_id,ts,item_id,outcome,duration_s,domain
a,2024-01-01T00:00:00Z,i1,1,3.5,math
z,2024-02-01T00:00:00Z,i1,,,
"""
OUTCOMES_CSV = """learner_id,completed,churned,revenue
a,true,false,1.25
b,0,1,
a,false,true,2
"""


@pytest.fixture
def pg(pg_url: str) -> Iterator[PostgresStore]:
    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    try:
        yield store
    finally:
        store.close()


def _events(rows: list[tuple[str, str, str, float | None]]) -> pa.Table:
    """Canonical events with explicit event ids: (event_id, learner, ts, outcome)."""
    t = pa.table(
        {
            "event_id": pa.array([r[0] for r in rows], pa.string()),
            "learner_id": pa.array([r[1] for r in rows], pa.string()),
            "ts": pa.array([r[2] for r in rows], pa.string()),
            "item_id": pa.array(["i"] * len(rows), pa.string()),
            "outcome": pa.array([None if r[3] is None else str(r[3]) for r in rows], pa.string()),
            "_line": pa.array(range(2, len(rows) + 2), pa.int64()),
        }
    )
    return validate_batch(RawBatch("x", t), now=NOW).accepted


def _snapshot(store: Any) -> dict[str, Any]:
    return {
        "events": pa.Table.from_batches(list(store.read_events()), schema=EVENT_SCHEMA).to_pylist(),
        "quarantine": store.read_quarantine().to_pylist(),
        "outcomes": store.read_outcomes().to_pylist(),
        "count": store.count_events(),
    }


# -- ingest --------------------------------------------------------------------------------------


def test_ingest_twice_matches_duckdb_and_adds_nothing_the_second_time(
    pg: PostgresStore, tmp_path: Path
) -> None:
    events, more, outcomes = tmp_path / "e.csv", tmp_path / "more.csv", tmp_path / "o.csv"
    events.write_text(EVENTS_CSV, encoding="utf-8")
    more.write_text(MORE_CSV)
    outcomes.write_text(OUTCOMES_CSV)
    duck = DuckDBStore(tmp_path / "d.duckdb")
    reports: dict[str, list[dict[str, Any]]] = {}
    for name, store in (("duckdb", duck), ("postgres", pg)):
        reports[name] = [
            ingest(store, [events, more], outcomes=[outcomes], now=NOW).to_dict(),
            ingest(store, [events], now=NOW).to_dict(),
        ]
    assert reports["postgres"] == reports["duckdb"]
    first, second = reports["postgres"]
    assert (first["rows_read"], first["accepted"], first["rejected"], first["duplicates"]) == (
        12,
        6,
        4,
        2,
    )
    assert first["rejected_by_reason"] == {
        "bad_timestamp": 1,
        "missing_item_id": 1,
        "missing_learner_id": 1,
        "outcome_out_of_range": 1,
    }
    assert (second["accepted"], second["rejected"], second["duplicates"]) == (0, 4, 6)
    assert _snapshot(pg) == _snapshot(duck)
    assert pg.count_events() == 6
    by_learner = {r["learner_id"]: r for r in pg.read_outcomes().to_pylist()}
    assert (by_learner["a"]["completed"], by_learner["a"]["revenue"]) == (False, 2.0)
    assert (by_learner["b"]["churned"], by_learner["b"]["revenue"]) == (True, None)
    log = pg.ingest_log()
    assert log.column_names == duck.ingest_log().column_names
    assert log["accepted"].to_pylist() == [6, 0]
    duck.close()


def test_the_first_occurrence_of_an_event_id_wins(pg: PostgresStore) -> None:
    with pg.ingest_session() as s:
        s.stage(_events([("e1", "a", "2024-01-01T00:00:00Z", 0.1)]), "old")
        s.resolve()
        s.commit({"totals": {}})
    with pg.ingest_session() as s:
        s.stage(
            _events(
                [
                    ("e2", "a", "2024-01-02T00:00:00Z", 0.2),
                    ("e2", "a", "2024-01-02T00:00:00Z", 0.3),
                    ("e1", "a", "2024-01-01T00:00:00Z", 0.9),
                ]
            ),
            "x",
        )
        s.stage(_events([("e2", "b", "2024-01-03T00:00:00Z", 0.4)]), "y")
        s.stage(_events([]), "empty")
        counts = s.resolve()
        s.commit({"totals": {}})
    assert {k: (c.inserted, c.duplicates) for k, c in counts.items()} == {
        "x": (1, 2),
        "y": (0, 1),
        "empty": (0, 0),
    }
    rows = {r["event_id"]: r["outcome"] for r in _snapshot(pg)["events"]}
    assert rows == {"e1": 0.1, "e2": 0.2}


def test_a_failure_before_commit_leaves_the_previous_state(pg: PostgresStore) -> None:
    with pg.ingest_session() as s:
        s.stage(_events([("e1", "a", "2024-01-01T00:00:00Z", None)]), "0")
        s.resolve()
        s.commit({"totals": {}})

    def crash() -> None:
        with pg.ingest_session() as s:
            s.stage(_events([("e2", "b", "2024-01-01T00:00:00Z", None)]), "0")
            s.put_outcomes(
                pa.table(
                    {
                        "learner_id": ["b"],
                        "completed": [True],
                        "churned": [None],
                        "revenue": [1.0],
                        "as_of": [None],
                    },
                    schema=OUTCOME_SCHEMA,
                )
            )
            s.resolve()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        crash()
    assert pg.count_events() == 1
    assert pg.read_outcomes().num_rows == 0
    assert pg.ingest_log().num_rows == 1
    # The connection is usable again and a new session works.
    with pg.ingest_session() as s:
        s.stage(_events([("e3", "c", "2024-01-01T00:00:00Z", None)]), "0")
        s.resolve()
        s.commit({"totals": {}})
    assert pg.count_events() == 2


def test_nul_characters_are_stored_as_replacement_characters(pg: PostgresStore) -> None:
    rejected = pa.table(
        {
            "source": ["s"],
            "line": [3],
            "reason": ["bad_timestamp"],
            "detail": [None],
            "raw": ["a\x00b"],
        }
    )
    with pg.ingest_session() as s:
        s.quarantine(rejected)
        s.resolve()
        s.commit({"totals": {}})
    assert pg.read_quarantine().to_pylist() == [
        {"source": "s", "line": 3, "reason": "bad_timestamp", "detail": None, "raw": "a\ufffdb"}
    ]


# -- reads ---------------------------------------------------------------------------------------


def _app_connections(url: str) -> int:
    name = url.rsplit("application_name=", 1)[1]
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [name]
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_events_stream_sorted_in_bounded_batches_on_their_own_connection(
    pg: PostgresStore, pg_url: str
) -> None:
    rows = [
        (f"e{i}", f"l{i % 7}", f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}Z", None)
        for i in range(300)
    ]
    with pg.ingest_session() as s:
        s.stage(_events(rows), "0")
        s.resolve()
        s.commit({"totals": {}})
    batches = list(pg.read_events(batch_rows=50))
    assert max(b.num_rows for b in batches) <= 50
    assert sum(b.num_rows for b in batches) == 300
    table = pa.Table.from_batches(batches)
    assert table.schema == EVENT_SCHEMA
    keys = list(zip(table["learner_id"].to_pylist(), table["ts"].to_pylist(), strict=True))
    assert keys == sorted(keys)
    assert pg.events_reader().read_all().num_rows == 300
    # An abandoned stream closes its connection; the store's own one stays usable.
    before = _app_connections(pg_url)
    stream = pg.read_events(batch_rows=10)
    next(stream)
    assert _app_connections(pg_url) == before + 1
    stream.close()
    assert _app_connections(pg_url) == before
    assert pg.count_events() == 300


def test_an_empty_store_reads_empty_tables(pg: PostgresStore) -> None:
    assert list(pg.read_events()) == []
    assert pg.read_outcomes().schema == OUTCOME_SCHEMA
    assert pg.read_outcomes().num_rows == 0
    assert pg.read_quarantine(limit=5).num_rows == 0
    assert pg.read_exposures().num_rows == 0
    with pytest.raises(StoreError, match="no feature run yet"):
        pg.read_features()


def test_feature_runs_assignments_and_exposures_match_duckdb(
    pg: PostgresStore, tmp_path: Path
) -> None:
    duck = DuckDBStore(tmp_path / "d.duckdb")
    features = pa.table({"learner_id": ["a", "b"], "x": [1.5, None], "s": ["p", ""]})
    assign = pa.table(
        {
            "learner_id": ["y", "x", "z"],
            "cohort_id": pa.array([1, 0, 2], pa.int32()),
            "archetype": ["q", "p, with comma", ""],
            "distance": [0.25, None, 1e-300],
        }
    )
    t = datetime(2026, 2, 1, tzinfo=UTC)
    exposures = pa.table(
        {
            "learner_id": ["a", "b", "a", "c"],
            "experiment": ["e", "e", "e", "f"],
            "variant": ["treat", "control", "control", "treat"],
            "layer": [None, "l1", None, None],
            "bucket": pa.array([1, 2, 3, 4], pa.int32()),
            "hash_version": ["v1"] * 4,
            "exposed_at": pa.array(
                [t + timedelta(seconds=5), t, t + timedelta(seconds=1), t],
                pa.timestamp("us", tz="UTC"),
            ),
        },
        schema=EXPOSURE_SCHEMA,
    )
    outcomes = pa.table(
        {
            "learner_id": ["a", "b"],
            "completed": [True, None],
            "churned": [False, True],
            "revenue": [3.0, None],
            "as_of": [None, t],
        },
        schema=OUTCOME_SCHEMA,
    )
    got = {}
    for name, store in (("duckdb", duck), ("postgres", pg)):
        r1 = store.save_feature_run(features, {"half_life_weeks": 4}, "test")
        r2 = store.save_feature_run(features.slice(0, 1), {"half_life_weeks": 2}, "test")
        assert (r1, r2) == (1, 2)
        assert store.read_features() == (2, features.slice(0, 1))
        assert store.read_features(1)[1].equals(features)
        store.save_assignments(5, assign)
        store.save_assignments(5, assign.slice(0, 2))
        assert store.log_exposures(exposures) == 4
        assert store.log_exposures(exposures.slice(0, 0)) == 0
        with store.ingest_session() as s:
            s.put_outcomes(outcomes)
            s.resolve()
            s.commit({"totals": {}})
        got[name] = (
            [{k: v for k, v in r.items() if k != "created_at"} for r in store.feature_runs()],
            store.read_assignments(5),
            store.read_assignments(6).num_rows,
            store.read_exposures(),
            store.read_exposures("f"),
            store.experiment_outcomes("e"),
        )
    for mine, theirs in zip(got["postgres"], got["duckdb"], strict=True):
        if isinstance(mine, pa.Table):
            assert mine.schema == theirs.schema
            assert mine.to_pylist() == theirs.to_pylist()
        else:
            assert mine == theirs
    assert got["postgres"][5].to_pylist()[0] == {
        "learner_id": "a",
        "variant": "control",
        "exposed_at": t + timedelta(seconds=1),
        "completed": 1,
        "churned": 0,
        "revenue": 3.0,
    }
    duck.close()


# -- schema and connection -----------------------------------------------------------------------


def test_the_schema_is_created_migrated_and_reopened(pg_url: str) -> None:
    first = open_store(pg_url)
    assert isinstance(first, PostgresStore)
    schema = first.schema
    assert schema in pg_url
    assert first.schema_version() == max(POSTGRES)
    first.close()
    with open_store(pg_url, read_only=True) as again:
        assert again.schema_version() == max(POSTGRES)
        assert again._q("SELECT count(*) FROM schema_migrations") == [(len(POSTGRES),)]
        with pytest.raises(StoreError, match="read-only"):
            again.put_rollout_spec("r", {})


def test_two_processes_opening_a_fresh_schema_migrate_it_once(pg_url: str) -> None:
    results: list[Any] = []

    def open_it() -> None:
        try:
            with open_store(pg_url) as s:
                results.append(s.schema_version())
        except Exception as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    latest = max(POSTGRES)
    assert results == [latest] * 3
    with open_store(pg_url) as s:
        assert s._q("SELECT count(*) FROM schema_migrations") == [(latest,)]


def test_a_newer_schema_is_refused(pg: PostgresStore, pg_url: str) -> None:
    pg._q("INSERT INTO schema_migrations VALUES (999, now())")
    with pytest.raises(StoreError, match="newer than this release"):
        open_store(pg_url)


def test_a_missing_schema_is_not_created_read_only(pg_prefix: str) -> None:
    url = with_schema(PG_URL, f"{pg_prefix}_absent")
    with pytest.raises(StoreError, match="does not exist"):
        open_store(url, read_only=True)


def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    with pytest.raises(StoreError, match="cannot connect") as info:
        open_store("postgresql://u:s3cret@127.0.0.1:1/db?connect_timeout=3")
    assert "s3cret" not in str(info.value)
    assert "u:***@127.0.0.1" in str(info.value)


def test_urls_are_redacted_and_search_paths_parsed() -> None:
    assert redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert redact("postgresql://h/db?password=pw&x=1") == "postgresql://h/db?password=***&x=1"
    assert redact("postgresql://h/db") == "postgresql://h/db"
    assert _first_schema('"$user", public') == "public"
    assert _first_schema('"My ""Schema""", public') == 'My "Schema"'
    assert _first_schema("cl_x") == "cl_x"
    assert _first_schema('"$user"') is None


def test_duckdb_only_features_fail_with_a_store_error(pg: PostgresStore) -> None:
    with pytest.raises(StoreError, match="PostgreSQL store"):
        _ = pg.connection


# -- races between two connections ---------------------------------------------------------------


@pytest.fixture
def two(pg_url: str) -> Iterator[tuple[Any, Any]]:
    """Two stores on the same schema: two connections, as two replicas would have."""
    a, b = open_store(pg_url), open_store(pg_url)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _race(url: str, blocker_sql: list[str], calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` in threads while a third connection holds a lock, then release it.

    Both calls are waiting on the lock (seen in pg_stat_activity) before it is released, so
    they really run at the same moment.
    """
    name = url.rsplit("application_name=", 1)[1]
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    with psycopg.connect(PG_URL, autocommit=True) as blocker:
        blocker.execute(f"SET search_path = {name}")
        blocker.execute("BEGIN")
        for statement in blocker_sql:
            blocker.execute(statement)  # type: ignore[arg-type]
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while True:
            row = blocker.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                "AND wait_event_type = 'Lock'",
                [name],
            ).fetchone()
            if row is not None and row[0] == len(calls):
                break
            assert time.monotonic() < deadline, "the racing calls never blocked on the lock"
            time.sleep(0.02)
        blocker.execute("ROLLBACK")
        for t in threads:
            t.join(timeout=30)
    return results


def test_racing_weight_changes_with_the_same_expected_revision(
    pg_url: str, two: tuple[Any, Any]
) -> None:
    a, b = two
    a.save_model({"v": 1}, feature_run_id=None, activate=True)
    m2 = a.save_model({"v": 2}, feature_run_id=None, activate=False)
    rev = a.start_release(m2, actor="setup").revision
    results = _race(
        pg_url,
        ["SELECT 1 FROM model_routing WHERE id = 1 FOR UPDATE"],
        [
            lambda: a.set_candidate_weight(0.1, actor="a", expected_revision=rev),
            lambda: b.set_candidate_weight(0.2, actor="b", expected_revision=rev),
        ],
    )
    wins = [r for r in results if not isinstance(r, Exception)]
    losses = [r for r in results if isinstance(r, ConflictError)]
    assert (len(wins), len(losses)) == (1, 1), results
    final = b.routing()
    assert final.revision == rev + 1
    assert final == wins[0]
    assert [h["revision"] for h in a.routing_history()] == [1, 2, 3]


def test_racing_lease_acquisitions_have_one_winner(pg_url: str, two: tuple[Any, Any]) -> None:
    a, b = two
    results = _race(
        pg_url,
        [f"INSERT INTO leases VALUES ('ctl', 'blocker', '{NOW.isoformat()}')"],
        [
            lambda: a.acquire_lease("ctl", "a", 30, NOW),
            lambda: b.acquire_lease("ctl", "b", 30, NOW),
        ],
    )
    assert sorted(results) == [False, True]
    winner = "a" if results[0] else "b"
    loser = a if winner == "b" else b
    assert loser.acquire_lease("ctl", "other", 30, NOW + timedelta(seconds=29)) is False


def test_racing_rollout_records_have_one_winner(pg_url: str, two: tuple[Any, Any]) -> None:
    a, b = two
    a.record_rollout("r", {"n": 0}, [], expected_revision=None, at=NOW)
    results = _race(
        pg_url,
        ["SELECT 1 FROM rollout_status WHERE name = 'r' FOR UPDATE"],
        [
            lambda: a.record_rollout("r", {"n": 1}, [("a", "", {})], expected_revision=1, at=NOW),
            lambda: b.record_rollout("r", {"n": 2}, [("b", "", {})], expected_revision=1, at=NOW),
        ],
    )
    assert [r for r in results if not isinstance(r, Exception)] == [2]
    assert sum(isinstance(r, ConflictError) for r in results) == 1
    revision, status = a.rollout_status("r") or (0, {})
    assert revision == 2
    assert [e.kind for e in a.rollout_events("r")] == ["a" if status == {"n": 1} else "b"]
