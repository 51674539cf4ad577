"""The real server on 127.0.0.1: every endpoint, error path and auth rule (DuckDB store)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from tests.serve._server import ADMIN_TOKEN, Server, running_server
from tests.serve.conftest import Built, fresh_copy

from cohortlens.experiments.assignment import bucket_of

EXPERIMENTS = """
experiments:
  - name: onboarding
    variants: {control: 1, treatment: 1}
  - name: half
    variants: {a: 1, b: 1}
    traffic_fraction: 0.5
"""


@pytest.fixture(scope="module")
def server(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("http")
    (d / "experiments.yaml").write_text(EXPERIMENTS)
    db = fresh_copy(built, d)
    with running_server(
        str(db),
        d,
        "--experiments",
        str(d / "experiments.yaml"),
        "--routing-poll-s",
        "0.2",
        "--enable-fault-injection",
    ) as srv:
        yield srv


def _ids(table: pa.Table) -> list[str]:
    return [str(x) for x in table.column("learner_id").to_pylist()]


def test_lookup_returns_the_stored_assignment(server: Server, built: Built) -> None:
    stable = built.stable.to_pylist()
    with server.client() as c:
        for row in stable[:25]:
            r = c.get(f"/v1/learners/{row['learner_id']}/cohort")
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/json"
            assert r.json() == {
                "learner_id": row["learner_id"],
                "cohort_id": row["cohort_id"],
                "archetype": row["archetype"],
                "model_version": built.stable_id,
                "model_role": "stable",
            }


def test_lookup_errors_are_json_without_trace(server: Server) -> None:
    with server.client() as c:
        r = c.get("/v1/learners/nobody-like-this/cohort")
        assert r.status_code == 404
        assert r.json()["error"] == "not_found"
        r = c.get("/v1/learners/" + "x" * 300 + "/cohort")
        assert r.status_code == 422
        assert r.json()["field"] == "path.learner_id"
        r = c.get("/v1/no/such/route")
        assert r.status_code == 404
        assert r.json()["error"] == "not_found"
        r = c.delete("/v1/models")
        assert r.status_code == 405
        for resp in (r,):
            assert "Traceback" not in resp.text


def test_assign_feature_rows_json(server: Server, built: Built) -> None:
    rows = built.features.slice(0, 50).to_pylist()
    payload = {"features": [{k: v for k, v in r.items() if not isinstance(v, dict)} for r in rows]}
    with server.client() as c:
        r = c.post("/v1/cohorts/assign", content=json.dumps(payload, default=str))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["routed"] == {"stable": 50, "candidate": 0}
    expected = {x["learner_id"]: x["cohort_id"] for x in built.stable.to_pylist()}
    got = [(a["learner_id"], a["cohort_id"]) for a in body["assignments"]]
    assert [g[0] for g in got] == [r["learner_id"] for r in rows]
    assert all(expected[lid] == cid for lid, cid in got)


def test_assign_arrow_stream_round_trip(server: Server, built: Built) -> None:
    feats = built.features.slice(0, 300)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, feats.schema) as w:
        w.write_table(feats)
    arrow = "application/vnd.apache.arrow.stream"
    with server.client() as c:
        r = c.post(
            "/v1/cohorts/assign",
            content=sink.getvalue().to_pybytes(),
            headers={"content-type": arrow, "accept": arrow},
        )
    assert r.status_code == 200, r.text
    table = pa.ipc.open_stream(r.content).read_all()
    assert _ids(table) == _ids(feats)
    expected = {x["learner_id"]: x["cohort_id"] for x in built.stable.to_pylist()}
    assert [expected[x] for x in _ids(table)] == table.column("cohort_id").to_pylist()


def test_assign_from_events_uses_the_stored_global_stats(server: Server, built: Built) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(built.events)
    learners = sorted(set(table.column("learner_id").to_pylist()))[:5]
    mask = pa.compute.is_in(table.column("learner_id"), pa.array(learners))
    sub = table.filter(mask).to_pylist()
    rows = [
        {
            "learner_id": str(e["learner_id"]),
            "ts": e["ts"].isoformat(),
            "domain": e["domain"],
            "item_id": str(e["item_id"]),
            "outcome": e["outcome"],
            "duration_s": e["duration_s"],
        }
        for e in sub
    ]
    rows.append({"learner_id": "x", "ts": "yesterday", "item_id": "i"})
    with server.client() as c:
        r = c.post("/v1/cohorts/assign", json={"events": rows})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["events"]["rejected"] == 1
    assert body["events"]["rejected_by_reason"] == {"bad_timestamp": 1}
    expected = {x["learner_id"]: x["cohort_id"] for x in built.stable.to_pylist()}
    # The same events and the same global statistics give the same features, hence cohorts.
    assert {a["learner_id"]: a["cohort_id"] for a in body["assignments"]} == {
        lid: expected[lid] for lid in learners
    }


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "body"),
        ({"features": [{"velocity": 1.0}]}, "body.features.0.learner_id"),
        (
            {"features": [{"learner_id": "a", "velocity_logit_per_week": "fast"}]},
            "body.features.0.velocity_logit_per_week",
        ),
        ({"features": [{"learner_id": "a", "velocity": 1.0}]}, "body.features.0.velocity"),
        ({"features": []}, "body.features"),
        ({"features": [], "events": []}, "body"),
        ({"events": [{"learner_id": ["a"]}]}, "body.events.0.learner_id"),
    ],
)
def test_assign_rejects_malformed_input_naming_the_field(
    server: Server, payload: dict[str, object], field: str
) -> None:
    with server.client() as c:
        r = c.post("/v1/cohorts/assign", json=payload)
    assert r.status_code == 422, r.text
    assert r.json()["field"].startswith(field)


def test_assign_limits(server: Server) -> None:
    with server.client() as c:
        rows = [{"learner_id": f"l{i}"} for i in range(10_001)]
        r = c.post("/v1/cohorts/assign", json={"features": rows})
        assert r.status_code == 413
        assert r.json()["error"] == "too_many_learners"
        r = c.post("/v1/cohorts/assign", content=b"x" * (17 * 1024 * 1024))
        assert r.status_code == 413
        assert r.json()["error"] == "body_too_large"
        r = c.post("/v1/cohorts/assign", content=b"a,b", headers={"content-type": "text/csv"})
        assert r.status_code == 415
        r = c.post(
            "/v1/cohorts/assign",
            content=b"not arrow",
            headers={"content-type": "application/vnd.apache.arrow.stream"},
        )
        assert r.status_code == 422
        assert "Arrow" in r.json()["message"]


def test_cards_and_models(server: Server, built: Built) -> None:
    with server.client() as c:
        cards = c.get("/v1/cohorts").json()
        models = c.get("/v1/models").json()
    assert cards["model_id"] == built.stable_id
    assert len(cards["cohorts"]) >= 3
    roles = {m["model_id"]: m["role"] for m in models["models"]}
    assert roles[built.stable_id] == "stable"
    assert models["routing"]["stable_model_id"] == built.stable_id


def test_experiment_assignment_is_deterministic_and_logged(server: Server) -> None:
    with server.client() as c:
        first = c.get("/v1/experiments/onboarding/assignment", params={"learner_id": "L1"}).json()
        again = c.get("/v1/experiments/onboarding/assignment", params={"learner_id": "L1"}).json()
        assert first == again
        assert first["variant"] in ("control", "treatment")
        assert first["bucket"] == bucket_of("L1", "onboarding")
        assert (
            c.get("/v1/experiments/nope/assignment", params={"learner_id": "L1"}).status_code == 404
        )
        r = c.get("/v1/experiments/onboarding/assignment")
        assert r.status_code == 422
        assert r.json()["field"] == "query.learner_id"
        outside = [
            c.get("/v1/experiments/half/assignment", params={"learner_id": f"u{i}"}).json()
            for i in range(40)
        ]
        assert {o["status"] for o in outside} == {"assigned", "outside_traffic"}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = c.get("/metrics").text
            if _sample(text, "cohortlens_exposures_logged_total") >= 2:
                break
            time.sleep(0.2)
    assert _sample(text, "cohortlens_exposures_logged_total") >= 2


def test_post_events_counts_every_row(server: Server) -> None:
    events = [
        {"learner_id": "new1", "ts": "2025-03-01T10:00:00Z", "item_id": "q1", "outcome": 1},
        {"learner_id": "new1", "ts": 1740823200, "item_id": "q2", "outcome": 0.5, "domain": "math"},
        {"learner_id": "new1", "ts": "2025-03-01T10:00:00Z", "item_id": "q1", "outcome": 1},
        {"learner_id": "", "ts": "2025-03-01T10:00:00Z", "item_id": "q3"},
        {"learner_id": "new2", "ts": "2025-03-01T10:00:00Z", "item_id": "q3", "outcome": 7},
    ]
    with server.client() as c:
        r = c.post("/v1/events", json={"events": events})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["rows_read"] == 5
        assert body["accepted"] == 2
        assert body["duplicates"] == 1
        assert body["rejected"] == 2
        assert body["rows_read"] == body["accepted"] + body["rejected"] + body["duplicates"]
        assert set(body["rejected_by_reason"]) == {"missing_learner_id", "outcome_out_of_range"}
        again = c.post("/v1/events", json={"events": events[:2]}).json()
        assert (again["accepted"], again["duplicates"]) == (0, 2)
        assert c.post("/v1/events", json={"events": []}).status_code == 422
        r = c.post("/v1/events", json={"events": [{"learner": "x"}]})
        assert r.status_code == 422
        assert r.json()["field"] == "body.events.0.learner"


def test_health_ready_metrics_openapi(server: Server) -> None:
    with server.client() as c:
        assert c.get("/healthz").json()["status"] == "ok"
        assert c.get("/readyz").json()["status"] == "ready"
        c.get("/v1/learners/nobody/cohort")
        text = c.get("/metrics").text
        spec = c.get("/openapi.json").json()
    assert 'route="/v1/learners/{learner_id}/cohort"' in text
    assert "cohortlens_http_request_duration_seconds_bucket" in text
    assert "cohortlens_routing_revision" in text
    for path in (
        "/v1/learners/{learner_id}/cohort",
        "/v1/cohorts/assign",
        "/v1/cohorts",
        "/v1/models",
        "/v1/experiments/{key}/assignment",
        "/v1/events",
        "/v1/admin/routing/weight",
    ):
        assert path in spec["paths"], path


def test_admin_requires_the_bearer_token(server: Server) -> None:
    with server.client() as c:
        assert c.get("/v1/admin/routing").status_code == 401
        r = c.put("/v1/admin/routing/weight", json={"weight_percent": 50})
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        wrong = {"Authorization": "Bearer " + ADMIN_TOKEN[:-1] + "x"}
        assert c.get("/v1/admin/routing", headers=wrong).status_code == 401
    with server.admin() as a:
        assert a.get("/v1/admin/routing").status_code == 200


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def test_routing_weight_candidate_failure_and_promotion(built: Built, tmp_path: Path) -> None:
    db = fresh_copy(built, tmp_path)
    with (
        running_server(
            str(db), tmp_path, "--routing-poll-s", "0.2", "--enable-fault-injection"
        ) as srv,
        srv.admin() as a,
        srv.client() as c,
    ):
        ids = [str(x) for x in built.stable.column("learner_id").to_pylist()]
        r = a.put("/v1/admin/routing/candidate", json={"model_id": built.candidate_id})
        assert r.status_code == 200, r.text
        salt = r.json()["salt"]
        on_candidate: dict[float, set[str]] = {}
        for weight in (0.1, 0.5):
            r = a.put(
                "/v1/admin/routing/weight",
                json={"weight_percent": weight * 100, "reason": "test"},
            )
            assert r.json()["candidate_weight_percent"] == weight * 100
            got = {lid: c.get(f"/v1/learners/{lid}/cohort").json() for lid in ids[:300]}
            on_candidate[weight] = {k for k, v in got.items() if v["model_role"] == "candidate"}
            assert on_candidate[weight] == {
                lid for lid in ids[:300] if bucket_of(lid, salt) < round(weight * 10_000)
            }
            assert all(
                v["model_version"] == built.candidate_id
                for k, v in got.items()
                if k in on_candidate[weight]
            )
        assert on_candidate[0.1] <= on_candidate[0.5]
        stale = a.put(
            "/v1/admin/routing/weight", json={"weight_percent": 20, "expected_revision": 0}
        )
        assert stale.status_code == 409
        # Faults: every candidate look-up fails over to the stable model and is counted.
        assert a.put("/v1/admin/faults", json={"candidate_error_rate": 1.0}).status_code == 200
        lid = next(iter(on_candidate[0.5]))
        body = c.get(f"/v1/learners/{lid}/cohort").json()
        assert body["model_role"] == "stable"
        assert body["model_version"] == built.stable_id
        failures = _sample(
            c.get("/metrics").text, "cohortlens_model_failures_total", model_role="candidate"
        )
        assert failures >= 1
        a.put("/v1/admin/faults", json={"candidate_error_rate": 0.0})
        r = a.post("/v1/admin/routing/promote", json={"reason": "healthy"})
        assert r.json()["stable_model_id"] == built.candidate_id
        assert r.json()["candidate_model_id"] is None
        body = c.get(f"/v1/learners/{ids[0]}/cohort").json()
        assert (body["model_version"], body["model_role"]) == (built.candidate_id, "stable")
        assert c.get("/v1/models").json()["routing"]["stable_model_id"] == built.candidate_id
    assert ids[0] not in srv.log()  # learner ids are hashed in the access log


def test_admin_routes_absent_without_token_and_api_key_enforced(
    built: Built, tmp_path: Path
) -> None:
    db = fresh_copy(built, tmp_path)
    lid = str(built.stable.column("learner_id")[0])
    with running_server(
        str(db),
        tmp_path,
        env={"COHORTLENS_ADMIN_TOKEN": None, "COHORTLENS_API_KEY": "k3y"},
    ) as srv:
        with srv.client() as c:
            assert c.get(f"/v1/learners/{lid}/cohort").status_code == 401
            assert c.get("/v1/cohorts").status_code == 401
            assert c.get("/healthz").status_code == 200
        with srv.client(**{"X-API-Key": "k3y"}) as c:
            assert c.get(f"/v1/learners/{lid}/cohort").status_code == 200
            assert c.get("/v1/cohorts").status_code == 200
        with srv.client(Authorization=f"Bearer {ADMIN_TOKEN}", **{"X-API-Key": "k3y"}) as c:
            assert c.get("/v1/admin/routing").status_code == 404
            assert c.put("/v1/admin/faults", json={}).status_code == 404
        assert "admin routes are not mounted" in srv.log()


def test_server_without_model_is_live_but_not_ready(tmp_path: Path) -> None:
    with (
        running_server(str(tmp_path / "empty.duckdb"), tmp_path, ready=False) as srv,
        srv.client() as c,
    ):
        assert c.get("/readyz").status_code == 503
        r = c.get("/v1/learners/a/cohort")
        assert r.status_code == 503
        assert r.json()["error"] == "unavailable"


def test_serve_rejects_bad_options(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "x.yaml"
    bad.write_text("experiments:\n  - name: e\n    variants: {a: 1}\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cohortlens",
            "serve",
            "--db",
            str(tmp_path / "d.duckdb"),
            "--experiments",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2
    assert "experiments.0.variants" in r.stderr
    assert "Traceback" not in r.stderr
