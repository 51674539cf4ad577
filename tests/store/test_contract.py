"""The store contract (models, routing, rollout state, leases) on DuckDB and PostgreSQL alike."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from cohortlens.errors import InputError, StoreError
from cohortlens.events.schema import QUARANTINE_SCHEMA, outcome_schema
from cohortlens.events.session import OutcomeCounts, RejectExample
from cohortlens.store import ConflictError, DuckDBStore, RolloutEvent, open_store
from cohortlens.store.migrations import DUCKDB, POSTGRES

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["duckdb", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "duckdb":
        s: Any = DuckDBStore(tmp_path / "s.duckdb")
    else:
        s = open_store(request.getfixturevalue("pg_url"))
    try:
        yield s
    finally:
        s.close()


def _statuses(store: Any) -> dict[int, str]:
    return {m["model_id"]: m["status"] for m in store.models()}


def _routing_fields(store: Any) -> tuple[Any, ...]:
    r = store.routing()
    return (r.stable_model_id, r.candidate_model_id, r.candidate_weight, r.release_id, r.revision)


# -- schema -------------------------------------------------------------------------------------


def test_both_dialects_define_the_same_versions() -> None:
    assert sorted(DUCKDB) == sorted(POSTGRES) == [1, 2, 3, 4, 5, 6]
    tables = {
        "model_routing",
        "routing_log",
        "rollouts",
        "rollout_status",
        "rollout_events",
        "leases",
    }
    for dialect in (DUCKDB, POSTGRES):
        created = {
            m.group(1) for s in dialect[4] for m in [re.match(r"CREATE TABLE (\w+)", s)] if m
        }
        assert created == tables


def test_migrations_reach_version_6_once(store: Any) -> None:
    assert store.schema_version() == 6
    assert store._q("SELECT count(*), min(version), max(version) FROM schema_migrations") == [
        (6, 1, 6)
    ]


# -- what the service reads and writes beside its snapshot --------------------------------------


def _exposure_rows(learners: list[str]) -> Any:
    import pyarrow as pa

    from cohortlens.experiments.assignment import EXPOSURE_SCHEMA

    n = len(learners)
    return pa.table(
        {
            "learner_id": learners,
            "experiment": ["e"] * n,
            "variant": ["a"] * n,
            "layer": pa.nulls(n, pa.string()),
            "bucket": pa.array([1] * n, pa.int32()),
            "hash_version": ["v1"] * n,
            "exposed_at": pa.array([T0] * n, pa.timestamp("us", tz="UTC")),
        },
        schema=EXPOSURE_SCHEMA,
    )


def test_a_spool_segment_is_applied_once(store: Any) -> None:
    assert store.spool_applied(["seg-1"]) == set()
    assert store.log_exposures(_exposure_rows(["a", "b"]), spool_segment="seg-1") == 2
    assert store.log_exposures(_exposure_rows(["a", "b"]), spool_segment="seg-1") == 0
    assert store.spool_applied(["seg-1", "seg-2"]) == {"seg-1"}
    assert store.read_exposures("e").column("learner_id").to_pylist() == ["a", "b"]


def test_learners_without_an_assignment_and_their_events(store: Any) -> None:
    import pyarrow as pa

    from cohortlens.events import ingest_sources
    from cohortlens.serve.service import raw_events_table, source_of

    assert store.max_ingest_id() == 0

    def post(learners: list[str], name: str) -> None:
        rows = [
            {"learner_id": lid, "ts": f"2025-03-0{d}T10:00:00Z", "item_id": "q", "outcome": 1}
            for lid in learners
            for d in (2, 1)
        ]
        ingest_sources(store, [source_of(raw_events_table(rows), name)], now=T0)

    post(["m1", "n1"], "one")
    first = store.max_ingest_id()
    model = store.save_model({"k": 1}, feature_run_id=None, activate=True)
    store.save_assignments(
        model,
        pa.table(
            {
                "learner_id": ["m1"],
                "cohort_id": pa.array([0], pa.int32()),
                "archetype": ["x"],
                "distance": [0.0],
            }
        ),
    )
    post(["n2", "m1"], "two")
    assert store.max_ingest_id() > first
    assert store.unassigned_learners([model]).to_pylist() == ["n1", "n2"]
    assert store.unassigned_learners([model], after_ingest_id=first).to_pylist() == ["n2"]
    assert store.unassigned_learners([model], limit=1).to_pylist() == ["n1"]
    events = store.learner_events(pa.array(["n2", "n1"]))
    assert events.column("learner_id").to_pylist() == ["n1", "n1", "n2", "n2"]
    assert [t.day for t in events.column("ts").to_pylist()] == [1, 2, 1, 2]


def test_events_stream_unsorted_with_chosen_columns(store: Any) -> None:
    """The feature pipeline's read: only some columns, in storage order, in small batches."""
    import pyarrow.compute as pc

    from cohortlens.events import ingest_sources
    from cohortlens.serve.service import raw_events_table, source_of

    assert store.max_learner_events() == 0
    rows = [
        {"learner_id": lid, "ts": f"2025-03-0{d}T10:00:00Z", "item_id": f"q{d}", "outcome": 1}
        for lid, days in (("b", (3, 1, 2)), ("a", (2,)), ("c", (1, 2)))
        for d in days
    ]
    ingest_sources(store, [source_of(raw_events_table(rows), "one")], now=T0)
    assert store.max_learner_events() == 3
    columns = ["learner_id", "ts", "item_id", "outcome"]
    reader = store.events_reader(sort=False, batch_rows=2, columns=columns)
    assert reader.schema.names == columns
    batches = list(reader)
    assert max(b.num_rows for b in batches) <= 2
    got = pa.Table.from_batches(batches, schema=reader.schema)
    full = pa.Table.from_batches(list(store.events_reader()))
    assert full.column_names[0] == "event_id"
    order = [("learner_id", "ascending"), ("ts", "ascending")]
    assert got.take(pc.sort_indices(got, order)).equals(full.select(columns))
    with pytest.raises(ValueError, match="not event columns"):
        store.events_reader(sort=False, columns=["nope"])


# -- models and routing -------------------------------------------------------------------------


def test_routing_is_created_on_first_use_and_kept(store: Any) -> None:
    assert store.routing_revision() == 0
    first = store.routing()
    assert (first.stable_model_id, first.candidate_model_id) == (None, None)
    assert (first.candidate_weight, first.release_id, first.revision) == (0.0, 0, 0)
    assert first.updated_by == "system"
    assert first.reason is None
    assert re.fullmatch(r"[0-9a-f]{16}", first.salt)
    assert first.updated_at.tzinfo is not None
    assert store.routing() == first
    assert store.routing_history() == []


def test_routing_created_later_mirrors_an_already_active_model(store: Any) -> None:
    # A database migrated to version 4 may hold an active model from before routing existed.
    store._q(
        "INSERT INTO cohort_models (model_id, created_at, feature_run_id, status, artifact) "
        "VALUES (7, ?, NULL, 'active', ?)",
        [T0, json.dumps({"k": 1})],
    )
    r = store.routing()
    assert (r.stable_model_id, r.revision, r.release_id) == (7, 0, 0)


def test_saving_an_active_model_moves_the_stable_model(store: Any) -> None:
    m1 = store.save_model({"k": 3}, feature_run_id=None, activate=True)
    assert _routing_fields(store) == (m1, None, 0.0, 0, 1)
    m2 = store.save_model({"k": 4}, feature_run_id=None, activate=False)
    assert store.routing_revision() == 1  # a non-active model is not a routing change
    m3 = store.save_model({"k": 5}, feature_run_id=None, activate=True)
    assert _routing_fields(store) == (m3, None, 0.0, 0, 2)
    assert _statuses(store) == {m1: "retired", m2: "candidate", m3: "active"}
    assert store.active_model() == (m3, {"k": 5})
    assert store.model(m2) == {"k": 4}
    with pytest.raises(StoreError, match="no cohort model 99"):
        store.model(99)


def test_nan_in_a_model_artifact_round_trips(store: Any) -> None:
    m = store.save_model({"se": float("nan"), "x": [1.5]}, feature_run_id=7, activate=False)
    got = store.model(m)
    assert got["x"] == [1.5]
    assert got["se"] != got["se"]  # NaN
    assert store.models()[0]["feature_run_id"] == 7


def test_a_release_from_start_to_promotion(store: Any) -> None:
    m1 = store.save_model({"v": 1}, feature_run_id=None, activate=True)
    m2 = store.save_model({"v": 2}, feature_run_id=None, activate=False)
    before = store.routing()
    r = store.start_release(m2, actor="ctl", reason="canary v2")
    assert (r.stable_model_id, r.candidate_model_id, r.candidate_weight) == (m1, m2, 0.0)
    assert (r.release_id, r.revision, r.updated_by, r.reason) == (1, 2, "ctl", "canary v2")
    assert r.salt != before.salt
    assert re.fullmatch(r"[0-9a-f]{16}", r.salt)
    assert _statuses(store) == {m1: "active", m2: "candidate"}
    assert store.routing() == r

    w = store.set_candidate_weight(0.05, actor="ctl", expected_revision=2)
    assert (w.candidate_weight, w.revision, w.salt, w.release_id) == (0.05, 3, r.salt, 1)
    w = store.set_candidate_weight(1, actor="op", reason="full")
    assert (w.candidate_weight, w.revision, w.updated_by, w.reason) == (1.0, 4, "op", "full")

    p = store.promote_candidate(actor="ctl", reason="healthy")
    assert (p.stable_model_id, p.candidate_model_id, p.candidate_weight) == (m2, None, 0.0)
    assert (p.release_id, p.revision, p.salt) == (1, 5, r.salt)
    assert _statuses(store) == {m1: "retired", m2: "active"}
    assert store.active_model() == (m2, {"v": 2})

    history = store.routing_history()
    assert [h["revision"] for h in history] == [1, 2, 3, 4, 5]
    assert [h["actor"] for h in history] == ["system", "ctl", "ctl", "op", "ctl"]
    assert [h["routing"]["candidate_weight"] for h in history] == [0.0, 0.0, 0.05, 1.0, 0.0]
    assert history[-1]["routing"] == p.to_dict()
    assert history[-1]["at"] == p.updated_at
    assert history[1]["reason"] == "canary v2"
    assert [h["revision"] for h in store.routing_history(limit=2)] == [4, 5]
    assert store.routing_history(limit=0) == []


def test_every_release_has_its_own_salt_and_clearing_keeps_it(store: Any) -> None:
    store.save_model({"v": 1}, feature_run_id=None, activate=True)
    m2 = store.save_model({"v": 2}, feature_run_id=None, activate=False)
    m3 = store.save_model({"v": 3}, feature_run_id=None, activate=False)
    salts = [store.routing().salt]
    r = store.start_release(m2, actor="a")
    salts.append(r.salt)
    cleared = store.clear_candidate(actor="a", reason="rollback")
    assert (cleared.candidate_model_id, cleared.candidate_weight) == (None, 0.0)
    assert (cleared.salt, cleared.release_id, cleared.revision) == (r.salt, 1, 3)
    assert _statuses(store)[m2] == "retired"
    again = store.start_release(m3, actor="a")
    salts.append(again.salt)
    assert (again.release_id, again.revision, again.candidate_model_id) == (2, 4, m3)
    assert len(set(salts)) == 3
    # Restarting a release of the same model is a new release too.
    restart = store.start_release(m3, actor="a")
    assert (restart.release_id, restart.revision) == (3, 5)
    assert restart.salt not in salts


def test_clearing_without_a_candidate_changes_nothing(store: Any) -> None:
    store.save_model({"v": 1}, feature_run_id=None, activate=True)
    before = store.routing()
    assert store.clear_candidate(actor="a") == before
    assert store.routing_revision() == before.revision
    assert len(store.routing_history()) == 1


def test_clearing_without_retiring_leaves_the_model_a_candidate(store: Any) -> None:
    store.save_model({"v": 1}, feature_run_id=None, activate=True)
    m2 = store.save_model({"v": 2}, feature_run_id=None, activate=False)
    store.start_release(m2, actor="a")
    store.set_candidate_weight(0.3, actor="a")
    r = store.clear_candidate(actor="a", retire=False)
    assert (r.candidate_model_id, r.candidate_weight, r.revision) == (None, 0.0, 4)
    assert _statuses(store)[m2] == "candidate"


def test_a_new_release_retires_the_abandoned_candidate(store: Any) -> None:
    m1 = store.save_model({"v": 1}, feature_run_id=None, activate=True)
    m2 = store.save_model({"v": 2}, feature_run_id=None, activate=False)
    m3 = store.save_model({"v": 3}, feature_run_id=None, activate=False)
    store.start_release(m2, actor="a")
    store.set_candidate_weight(0.5, actor="a")
    r = store.start_release(m3, actor="a")
    assert (r.candidate_model_id, r.candidate_weight, r.release_id) == (m3, 0.0, 2)
    assert _statuses(store) == {m1: "active", m2: "retired", m3: "candidate"}


def test_start_release_refuses_unknown_and_stable_models(store: Any) -> None:
    m1 = store.save_model({"v": 1}, feature_run_id=None, activate=True)
    before = store.routing()
    with pytest.raises(StoreError, match="no cohort model 42"):
        store.start_release(42, actor="a")
    with pytest.raises(StoreError, match="stable model"):
        store.start_release(m1, actor="a")
    with pytest.raises(InputError, match="actor"):
        store.start_release(m1, actor="")
    assert store.routing() == before
    assert _statuses(store) == {m1: "active"}


def test_a_release_takes_a_given_salt(store: Any) -> None:
    # Simulations supply salts derived from their seed; real releases draw them.
    store.save_model({"v": 1}, feature_run_id=None, activate=True)
    m2 = store.save_model({"v": 2}, feature_run_id=None, activate=False)
    r = store.start_release(m2, actor="sim", salt="0123456789abcdef")
    assert (r.salt, r.release_id, r.candidate_model_id) == ("0123456789abcdef", 1, m2)
    assert store.routing() == r
    assert store.routing_history()[-1]["routing"]["salt"] == "0123456789abcdef"
    drawn = store.start_release(m2, actor="sim", salt=None)
    assert drawn.salt != r.salt
    assert re.fullmatch(r"[0-9a-f]{16}", drawn.salt)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0123456789abcde",
        "0123456789abcdef0",
        "0123456789ABCDEF",
        "0123456789abcdeg",
        "0123456789abcdef\n",
        " 0123456789abcdef",
        0x0123456789ABCDEF,
        b"0123456789abcdef",
    ],
)
def test_a_malformed_salt_is_an_input_error_and_changes_nothing(store: Any, bad: Any) -> None:
    store.save_model({"v": 1}, feature_run_id=None, activate=True)
    m2 = store.save_model({"v": 2}, feature_run_id=None, activate=False)
    before = store.routing()
    with pytest.raises(InputError, match="salt"):
        store.start_release(m2, actor="sim", salt=bad)
    assert store.routing() == before
    assert _statuses(store)[m2] == "candidate"
    assert len(store.routing_history()) == 1


@pytest.mark.parametrize("bad", [-0.01, 1.0000001, float("nan"), float("inf"), True, "0.5"])
def test_weights_outside_0_1_are_input_errors(store: Any, bad: Any) -> None:
    store.save_model({"v": 1}, feature_run_id=None, activate=True)
    m2 = store.save_model({"v": 2}, feature_run_id=None, activate=False)
    store.start_release(m2, actor="a")
    with pytest.raises(InputError, match="weight"):
        store.set_candidate_weight(bad, actor="a")
    assert store.routing().candidate_weight == 0.0


def test_weight_and_promotion_need_a_candidate(store: Any) -> None:
    store.save_model({"v": 1}, feature_run_id=None, activate=True)
    with pytest.raises(InputError, match="no candidate"):
        store.set_candidate_weight(0.1, actor="a")
    with pytest.raises(InputError, match="no candidate"):
        store.promote_candidate(actor="a")
    assert store.routing_revision() == 1


def test_expected_revision_conflicts_write_nothing(store: Any) -> None:
    store.save_model({"v": 1}, feature_run_id=None, activate=True)
    m2 = store.save_model({"v": 2}, feature_run_id=None, activate=False)
    r = store.start_release(m2, actor="a")
    store.set_candidate_weight(0.1, actor="b", expected_revision=r.revision)
    seen = store.routing()
    for call in (
        lambda: store.set_candidate_weight(0.9, actor="a", expected_revision=r.revision),
        lambda: store.promote_candidate(actor="a", expected_revision=r.revision),
        lambda: store.clear_candidate(actor="a", expected_revision=r.revision),
        lambda: store.start_release(m2, actor="a", expected_revision=r.revision),
    ):
        with pytest.raises(ConflictError, match=f"revision is {seen.revision}, not the expected 2"):
            call()
    assert store.routing() == seen
    assert len(store.routing_history()) == seen.revision
    assert isinstance(ConflictError("x"), StoreError)


def test_set_model_status_keeps_routing_consistent(store: Any) -> None:
    m1 = store.save_model({"v": 1}, feature_run_id=None, activate=True)
    m2 = store.save_model({"v": 2}, feature_run_id=None, activate=False)
    m3 = store.save_model({"v": 3}, feature_run_id=None, activate=False)
    store.start_release(m2, actor="a")
    store.set_candidate_weight(0.2, actor="a")
    # Activating the candidate directly is a promotion.
    r = store.set_model_status(m2, "active", actor="op", reason="manual")
    assert (r.stable_model_id, r.candidate_model_id, r.candidate_weight, r.revision) == (
        m2,
        None,
        0.0,
        4,
    )
    assert (r.updated_by, r.reason) == ("op", "manual")
    assert _statuses(store) == {m1: "retired", m2: "active", m3: "candidate"}
    # A status change that does not touch routing is not a routing change.
    assert store.set_model_status(m1, "candidate").revision == 4
    # Retiring the candidate clears it; retiring the stable model leaves none.
    store.start_release(m3, actor="a")
    r = store.set_model_status(m3, "retired")
    assert (r.candidate_model_id, r.revision) == (None, 6)
    r = store.set_model_status(m2, "retired")
    assert (r.stable_model_id, r.revision) == (None, 7)
    assert store.active_model() is None
    with pytest.raises(InputError, match="status"):
        store.set_model_status(m1, "live")
    with pytest.raises(StoreError, match="no cohort model 9"):
        store.set_model_status(9, "retired")


# -- rollout state ------------------------------------------------------------------------------


def test_rollout_specs_upsert_with_their_hash(store: Any) -> None:
    assert store.rollout_spec("b") is None
    assert store.rollout_names() == []
    spec = {"steps": [0.01, 0.1, 1.0], "model": 2, "gates": {"srm_p": 0.001}}
    store.put_rollout_spec("b", spec)
    store.put_rollout_spec("a", {"steps": [1.0]})
    assert store.rollout_spec("b") == spec
    assert store.rollout_names() == ["a", "b"]
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    (hash1, created1, updated1) = store._q(
        "SELECT spec_hash, created_at, updated_at FROM rollouts WHERE name = ?", ["b"]
    )[0]
    assert hash1 == hashlib.sha256(canonical.encode()).hexdigest()
    store.put_rollout_spec("b", spec | {"model": 3})
    (hash2, created2, updated2) = store._q(
        "SELECT spec_hash, created_at, updated_at FROM rollouts WHERE name = ?", ["b"]
    )[0]
    assert hash2 != hash1
    assert created2 == created1
    assert updated2 >= updated1
    assert store.rollout_spec("b")["model"] == 3
    with pytest.raises(InputError, match="spec"):
        store.put_rollout_spec("c", {"x": float("nan")})
    assert store.rollout_names() == ["a", "b"]


def test_record_rollout_revisions_and_event_sequence(store: Any) -> None:
    assert store.rollout_status("r") is None
    rev = store.record_rollout(
        "r",
        {"phase": "canary"},
        [("started", "spec applied", {"w": 0.01})],
        expected_revision=None,
        at=T0,
    )
    assert rev == 1
    assert store.rollout_status("r") == (1, {"phase": "canary"})
    rev = store.record_rollout(
        "r",
        {"phase": "ramp"},
        [("weight", "gate passed", {"w": 0.1}), ("weight", "gate passed", {"w": 0.5})],
        expected_revision=1,
        at=T0 + timedelta(minutes=5),
    )
    assert rev == 2
    assert store.record_rollout("r", {"phase": "ramp"}, [], expected_revision=2, at=T0) == 3
    store.record_rollout("other", {}, [("started", "", {})], expected_revision=None, at=T0)
    events = store.rollout_events("r")
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[0] == RolloutEvent("r", 1, T0, "started", "spec applied", {"w": 0.01})
    assert events[2].detail == {"w": 0.5}
    assert events[2].at == T0 + timedelta(minutes=5)
    assert [e.seq for e in store.rollout_events("r", since_seq=1)] == [2, 3]
    assert store.rollout_events("r", since_seq=3) == []
    assert [(e.name, e.seq) for e in store.rollout_events("other")] == [("other", 1)]
    assert store.rollout_status("r") == (3, {"phase": "ramp"})


def test_a_rollout_conflict_writes_neither_status_nor_events(store: Any) -> None:
    store.record_rollout("r", {"n": 1}, [("a", "", {})], expected_revision=None, at=T0)
    with pytest.raises(ConflictError, match="has revision 1, not the expected no status"):
        store.record_rollout("r", {"n": 9}, [("b", "", {})], expected_revision=None, at=T0)
    store.record_rollout("r", {"n": 2}, [("c", "", {})], expected_revision=1, at=T0)
    with pytest.raises(ConflictError, match="has revision 2, not the expected revision 1"):
        store.record_rollout("r", {"n": 9}, [("d", "", {})], expected_revision=1, at=T0)
    with pytest.raises(ConflictError, match="has no status"):
        store.record_rollout("new", {"n": 9}, [("e", "", {})], expected_revision=3, at=T0)
    assert store.rollout_status("r") == (2, {"n": 2})
    assert [e.kind for e in store.rollout_events("r")] == ["a", "c"]
    assert store.rollout_status("new") is None
    assert store.rollout_events("new") == []


def test_a_failure_while_appending_events_rolls_the_status_back(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.record_rollout("r", {"n": 1}, [("a", "", {})], expected_revision=None, at=T0)
    real_q = store._q
    appended: list[str] = []

    def failing_q(sql: str, params: Any = ()) -> Any:
        if sql.startswith("INSERT INTO rollout_events"):
            appended.append(sql)
            if len(appended) == 2:
                raise RuntimeError("disk full")
        return real_q(sql, params)

    monkeypatch.setattr(store, "_q", failing_q)
    with pytest.raises(RuntimeError, match="disk full"):
        store.record_rollout(
            "r", {"n": 2}, [("b", "", {}), ("c", "", {})], expected_revision=1, at=T0
        )
    monkeypatch.undo()
    assert store.rollout_status("r") == (1, {"n": 1})
    assert [e.kind for e in store.rollout_events("r")] == ["a"]


@pytest.mark.parametrize(
    ("events", "field"),
    [
        ([("", "r", {})], "kind"),
        ([("k", None, {})], "reason"),
        ([("k", "r", [1])], "detail"),
        ([("k", "r", {"p": float("nan")})], "detail"),
        ([("k", "r")], "events"),
    ],
)
def test_bad_rollout_events_are_input_errors(store: Any, events: Any, field: str) -> None:
    with pytest.raises(InputError, match=field):
        store.record_rollout("r", {}, events, expected_revision=None, at=T0)
    assert store.rollout_status("r") is None


def test_record_rollout_needs_an_aware_time(store: Any) -> None:
    with pytest.raises(InputError, match="at: expected a timezone-aware"):
        store.record_rollout("r", {}, [], expected_revision=None, at=datetime(2026, 1, 1))


# -- leases -------------------------------------------------------------------------------------


def test_a_lease_has_one_holder_until_it_expires(store: Any) -> None:
    assert store.acquire_lease("controller", "a", 10, T0) is True
    assert store.acquire_lease("controller", "b", 10, T0 + timedelta(seconds=1)) is False
    # The holder renews: the lease now runs until T0 + 5 + 10.
    assert store.acquire_lease("controller", "a", 10, T0 + timedelta(seconds=5)) is True
    late = T0 + timedelta(seconds=15)
    assert store.acquire_lease("controller", "b", 10, late - timedelta(microseconds=1)) is False
    assert store.acquire_lease("controller", "b", 10, late) is True  # expired at expires_at
    assert store.acquire_lease("controller", "a", 10, late) is False
    assert store.acquire_lease("other", "a", 10, late) is True  # leases are independent


def test_release_frees_a_lease_only_for_its_holder(store: Any) -> None:
    assert store.acquire_lease("l", "a", 60, T0)
    store.release_lease("l", "b")
    assert store.acquire_lease("l", "b", 60, T0) is False
    store.release_lease("l", "a")
    assert store.acquire_lease("l", "b", 60, T0) is True


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), True])
def test_lease_ttl_must_be_positive(store: Any, ttl: Any) -> None:
    with pytest.raises(InputError, match="ttl_s"):
        store.acquire_lease("l", "a", ttl, T0)


def test_lease_times_must_be_aware(store: Any) -> None:
    with pytest.raises(InputError, match="now"):
        store.acquire_lease("l", "a", 1, datetime(2026, 1, 1))


# -- ingest: outcomes merge column by column, reject examples ----------------------------------


def _outcomes(**columns: list[Any]) -> Any:
    """An outcomes table holding ``learner_id`` and exactly the given outcome columns."""
    names = [c for c in columns if c != "learner_id"]
    return pa.table(columns, schema=outcome_schema(names))


def _merge(store: Any, *tables: Any) -> list[Any]:
    """Merge ``tables`` in one committed ingest; the counts of each."""
    with store.ingest_session() as session:
        counts = [session.put_outcomes(t) for t in tables]
        session.resolve()
        session.commit({"totals": {}})
    return counts


def _stored(store: Any) -> dict[str, tuple[Any, ...]]:
    return {
        r["learner_id"]: (r["completed"], r["churned"], r["revenue"], r["as_of"])
        for r in store.read_outcomes().to_pylist()
    }


def test_outcomes_merge_only_the_columns_a_table_carries(store: Any) -> None:
    full = _outcomes(
        learner_id=["a", "b"],
        completed=[True, False],
        churned=[False, True],
        revenue=[10.5, 3.0],
        as_of=[T0, T0],
    )
    assert _merge(store, full) == [OutcomeCounts(inserted=2, updated=0, unchanged=0)]
    # A table with only `completed`: churned, revenue and as_of keep their stored values.
    (counts,) = _merge(store, _outcomes(learner_id=["a", "b", "c"], completed=[False, False, True]))
    assert counts == OutcomeCounts(inserted=1, updated=1, unchanged=1)
    assert _stored(store) == {
        "a": (False, False, 10.5, T0),
        "b": (False, True, 3.0, T0),
        "c": (True, None, None, None),  # a new learner: the columns not given are null
    }


def test_an_explicit_null_in_an_outcomes_table_sets_null(store: Any) -> None:
    _merge(store, _outcomes(learner_id=["a"], churned=[True], revenue=[2.0]))
    (counts,) = _merge(store, _outcomes(learner_id=["a"], revenue=[None]))
    assert counts == OutcomeCounts(inserted=0, updated=1, unchanged=0)
    assert _stored(store) == {"a": (None, True, None, None)}
    (again,) = _merge(store, _outcomes(learner_id=["a"], revenue=[None]))
    assert again == OutcomeCounts(inserted=0, updated=0, unchanged=1)


def test_the_last_row_of_a_learner_wins_and_unchanged_rows_keep_their_ingest(store: Any) -> None:
    _merge(store, _outcomes(learner_id=["a", "b"], completed=[True, True]))
    first = dict(store._q("SELECT learner_id, ingest_id FROM outcomes"))
    counts = _merge(
        store,
        _outcomes(learner_id=["a", "b", "a"], completed=[False, True, True]),
        _outcomes(learner_id=["b"], churned=[True]),  # the same ingest, another table
    )
    assert counts == [
        OutcomeCounts(inserted=0, updated=0, unchanged=2),  # a's last row says True again
        OutcomeCounts(inserted=0, updated=1, unchanged=0),
    ]
    assert _stored(store) == {"a": (True, None, None, None), "b": (True, True, None, None)}
    now = dict(store._q("SELECT learner_id, ingest_id FROM outcomes"))
    assert now["a"] == first["a"]
    assert now["b"] > first["b"]


@pytest.mark.parametrize(
    "columns",
    [
        {"learner_id": ["a"]},  # no outcome column
        {"completed": [True]},  # no learner_id
        {"learner_id": ["a"], "completed": [True], "score": [1.0]},  # not an outcome column
    ],
)
def test_an_outcomes_table_without_usable_columns_writes_nothing(
    store: Any, columns: dict[str, list[Any]]
) -> None:
    _merge(store, _outcomes(learner_id=["a"], completed=[True]))
    with pytest.raises(InputError, match="learner_id and at least one of"):
        _merge(store, pa.table(columns))
    assert _stored(store) == {"a": (True, None, None, None)}


def test_reject_examples_are_this_ingests_first_rows_per_reason(store: Any) -> None:
    def rejects(source: str, rows: list[tuple[int, str]]) -> Any:
        return pa.table(
            {
                "source": [source] * len(rows),
                "line": [r[0] for r in rows],
                "reason": [r[1] for r in rows],
                "detail": [f"d{r[0]}" for r in rows],
                "raw": [f"r{r[0]}" for r in rows],
            },
            schema=QUARANTINE_SCHEMA,
        )

    with store.ingest_session() as session:
        session.quarantine(rejects("x.csv", [(9, "bad_timestamp")]))
        session.resolve()
        session.commit({"totals": {}})
    with store.ingest_session() as session:
        session.quarantine(
            rejects(
                "x.csv",
                [(7, "bad_timestamp"), (3, "bad_timestamp"), (5, "missing_item_id"), (4, "x")],
            )
        )
        session.quarantine(rejects("y.csv", [(2, "bad_timestamp")]))
        got = session.reject_examples("x.csv", 1)
        assert got == [
            RejectExample("bad_timestamp", 3, "d3", "r3"),
            RejectExample("missing_item_id", 5, "d5", "r5"),
            RejectExample("x", 4, "d4", "r4"),
        ]
        assert [e.line for e in session.reject_examples("x.csv", 5)] == [3, 7, 5, 4]
        session.resolve()
        session.commit({"totals": {}})


# -- override routes and lifetime counters (migration 6) ----------------------------------------


def test_override_learners_ride_on_the_routing_and_leave_with_the_release(store: Any) -> None:
    store.save_model({"m": 1}, feature_run_id=None, activate=True)
    cand = store.save_model({"m": 2}, feature_run_id=None, activate=False)
    with pytest.raises(InputError, match="no candidate model"):
        store.set_overrides(["qa-1"], actor="t")
    assert store.routing().overrides == ()
    store.start_release(cand, actor="t")
    rev = store.routing().revision
    r = store.set_overrides(["qa-2", "qa-1", "qa-2"], actor="t", expected_revision=rev)
    assert r.overrides == ("qa-1", "qa-2")  # sorted, without repeats
    assert store.routing().overrides == ("qa-1", "qa-2")
    assert store.routing().revision == rev + 1
    assert store.routing_history()[-1]["routing"]["overrides"] == ["qa-1", "qa-2"]
    assert store.set_overrides(["qa-1", "qa-2"], actor="t").revision == rev + 1  # no-op
    with pytest.raises(ConflictError):
        store.set_overrides(["qa-3"], actor="t", expected_revision=rev)
    for bad, field in (("qa-1", "learner_ids"), ([""], "learner_ids[0]"), ([3], "learner_ids[0]")):
        with pytest.raises(InputError, match=re.escape(field)):
            store.set_overrides(bad, actor="t")
    store.set_candidate_weight(0.5, actor="t")
    assert store.routing().overrides == ("qa-1", "qa-2")  # a weight change keeps them
    store.promote_candidate(actor="t")
    assert store.routing().overrides == ()
    other = store.save_model({"m": 3}, feature_run_id=None, activate=False)
    store.start_release(other, actor="t")
    store.set_overrides(["qa-1"], actor="t")
    store.clear_candidate(actor="t")
    assert store.routing().overrides == ()


def test_lifetime_counters_move_with_the_recorded_transition(store: Any) -> None:
    assert store.rollout_counters() == {}
    rev = store.record_rollout("r", {"phase": "Pending"}, [], expected_revision=None, at=T0)
    rev = store.record_rollout(
        "r", {"phase": "Aborted"}, [], expected_revision=rev, at=T0, counters=("aborted",)
    )
    rev = store.record_rollout(
        "r",
        {"phase": "Promoted"},
        [],
        expected_revision=rev,
        at=T0,
        counters=("aborted", "completed"),
    )
    assert store.rollout_counters() == {"r": {"aborted": 2, "completed": 1}}
    # A conflicting write counts nothing.
    with pytest.raises(ConflictError):
        store.record_rollout("r", {}, [], expected_revision=rev - 1, at=T0, counters=("aborted",))
    assert store.rollout_counters()["r"]["aborted"] == 2
    with pytest.raises(InputError, match=re.escape("counters[0]")):
        store.record_rollout("r", {}, [], expected_revision=rev, at=T0, counters=("",))
