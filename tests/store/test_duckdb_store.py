"""DuckDBStore: migrations, transactional and idempotent ingestion."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from cohortlens.errors import StoreError
from cohortlens.events.schema import OUTCOME_SCHEMA
from cohortlens.events.source import RawBatch
from cohortlens.events.validate import validate_batch
from cohortlens.store import DuckDBStore, open_store
from cohortlens.store.migrations import DUCKDB

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _events(n: int, learner: str = "a") -> pa.Table:
    t = pa.table(
        {
            "learner_id": [learner] * n,
            "ts": [f"2024-01-01T00:00:{i:02d}Z" for i in range(n)],
            "item_id": [f"i{i}" for i in range(n)],
            "_line": list(range(2, n + 2)),
        }
    )
    return validate_batch(RawBatch("x", t), now=NOW).accepted


def _ingest(store: DuckDBStore, tables: list[pa.Table]) -> dict[str, tuple[int, int]]:
    with store.ingest_session() as s:
        for i, t in enumerate(tables):
            s.stage(t, str(i))
        counts = s.resolve()
        s.commit({"totals": {}})
    return {k: (c.inserted, c.duplicates) for k, c in counts.items()}


def test_migrations_are_recorded_and_reapplied_idempotently(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    with DuckDBStore(db) as s:
        assert s.schema_version() == max(DUCKDB)
    with DuckDBStore(db) as s:  # reopening applies nothing twice
        assert s.schema_version() == max(DUCKDB)
        n = s.connection.execute("SELECT count(*) FROM schema_migrations").fetchone()
        assert n == (len(DUCKDB),)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    DuckDBStore(db).close()
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO schema_migrations VALUES (999, now())")
    con.close()
    with pytest.raises(StoreError, match="newer than this release"):
        DuckDBStore(db)


def test_ingest_is_idempotent_and_dedups_within_a_run() -> None:
    store = DuckDBStore(":memory:")
    e = _events(5)
    assert _ingest(store, [e, e.slice(0, 2), e.slice(1, 1)]) == {
        "0": (5, 0),
        "1": (0, 2),
        "2": (0, 1),
    }
    assert store.count_events() == 5
    assert _ingest(store, [e]) == {"0": (0, 5)}
    assert store.count_events() == 5


def test_a_failure_before_commit_leaves_the_previous_state() -> None:
    store = DuckDBStore(":memory:")
    _ingest(store, [_events(3)])

    def crash_mid_ingest() -> None:
        with store.ingest_session() as s:
            s.stage(_events(4, learner="b"), "0")
            s.resolve()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        crash_mid_ingest()
    assert store.count_events() == 3
    assert store.ingest_log().num_rows == 1


def test_events_are_read_back_sorted_with_the_canonical_schema() -> None:
    store = DuckDBStore(":memory:")
    _ingest(store, [_events(3, "b"), _events(2, "a")])
    batches = list(store.read_events())
    rows = pa.Table.from_batches(batches).to_pylist()
    assert [(r["learner_id"], r["item_id"]) for r in rows] == [
        ("a", "i0"),
        ("a", "i1"),
        ("b", "i0"),
        ("b", "i1"),
        ("b", "i2"),
    ]


def test_outcomes_upsert_last_wins() -> None:
    store = DuckDBStore(":memory:")
    t1 = pa.table(
        {
            "learner_id": ["a", "b"],
            "completed": [True, False],
            "churned": [False, True],
            "revenue": [1.0, None],
            "as_of": [None, None],
        },
        schema=OUTCOME_SCHEMA,
    )
    t2 = pa.table(
        {
            "learner_id": ["a"],
            "completed": [False],
            "churned": [True],
            "revenue": [2.0],
            "as_of": [None],
        },
        schema=OUTCOME_SCHEMA,
    )
    for t in (t1, t2):
        with store.ingest_session() as s:
            s.put_outcomes(t)
            s.resolve()
            s.commit({"totals": {}})
    got = {r["learner_id"]: r for r in store.read_outcomes().to_pylist()}
    assert got["a"]["revenue"] == 2.0
    assert got["a"]["completed"] is False
    assert got["b"]["churned"] is True


def test_open_store_uses_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COHORTLENS_DB", str(tmp_path / "env.duckdb"))
    with open_store() as s:
        assert s.url == str(tmp_path / "env.duckdb")


def test_feature_runs_round_trip_with_their_parameters() -> None:
    store = DuckDBStore(":memory:")
    t1 = pa.table({"learner_id": ["a", "b"], "x": [1.0, None]})
    t2 = pa.table({"learner_id": ["a"], "x": [3.0]})
    r1 = store.save_feature_run(t1, {"half_life_weeks": 4}, "test")
    r2 = store.save_feature_run(t2, {"half_life_weeks": 2}, "test")
    assert r2 > r1
    assert store.read_features() == (r2, t2)
    assert store.read_features(r1)[1].equals(t1)
    runs = store.feature_runs()
    assert [r["params"] for r in runs] == [{"half_life_weeks": 4}, {"half_life_weeks": 2}]
    assert [r["n_learners"] for r in runs] == [2, 1]


def test_no_feature_run_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="no feature run"):
        DuckDBStore(":memory:").read_features()


def test_activating_a_model_retires_the_previous_one() -> None:
    store = DuckDBStore(":memory:")
    assert store.active_model() is None
    m1 = store.save_model({"k": 3}, feature_run_id=None, activate=True)
    m2 = store.save_model({"k": 4}, feature_run_id=None, activate=False)
    assert store.active_model() == (m1, {"k": 3})
    m3 = store.save_model({"k": 5}, feature_run_id=None, activate=True)
    assert store.active_model() == (m3, {"k": 5})
    assert [m["status"] for m in store.models()] == ["retired", "candidate", "active"]
    assert m2 == m1 + 1


def test_assignments_are_replaced_per_model() -> None:
    store = DuckDBStore(":memory:")
    a = pa.table(
        {
            "learner_id": ["x", "y"],
            "cohort_id": [0, 1],
            "archetype": ["p", "q"],
            "distance": [0.5, 1.5],
        }
    )
    store.save_assignments(1, a)
    store.save_assignments(1, a.slice(0, 1))
    assert store.read_assignments(1).to_pylist() == [
        {"learner_id": "x", "cohort_id": 0, "archetype": "p", "distance": 0.5}
    ]
