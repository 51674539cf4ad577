"""The API in process (Starlette's TestClient, the same ASGI app `cohortlens serve` runs).

Covers issue 13's service items: ids with reserved characters, one look-up implementation and
one credential check shared by the edge and the routes, optional admin bodies, weights in
percent (and the 422 for the old unit), and /docs + /redoc without a CDN.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.serve._server import ADMIN_TOKEN
from tests.serve.conftest import Built, fresh_copy

from cohortlens.rollout.routers import AdminApiRouter
from cohortlens.serve import ServeSettings, create_app
from cohortlens.serve.service import MAX_LEARNER_ID_CHARS
from cohortlens.store import open_store

with warnings.catch_warnings():
    # Starlette asks for its httpx fork (httpx2) and warns when it falls back on httpx, which
    # is what we install; the client behaves the same.
    warnings.filterwarnings("ignore", message=".*httpx2")
    from starlette.testclient import TestClient

API_KEY = "read-key-42"


def encode_id(learner_id: str) -> str:
    """A learner id as one path segment: every reserved byte percent-encoded, dots too (a
    client drops ``.`` and ``..`` segments before sending)."""
    return quote(learner_id, safe="").replace(".", "%2E")


@contextmanager
def in_process(db: Path, **overrides: Any) -> Iterator[tuple[TestClient, Any]]:
    """The app over ``db`` with its lifespan run (store opened, models loaded)."""
    values: dict[str, Any] = {"admin_token": ADMIN_TOKEN, "access_log": False}
    values.update(overrides)
    app = create_app(ServeSettings(db=str(db), **values))
    with TestClient(app) as client:
        yield client, app


@pytest.fixture(scope="module")
def served(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("api")
    (d / "e.yaml").write_text(
        "experiments:\n"
        "  - {name: onboarding, variants: {a: 1, b: 1}}\n"
        "  - {name: team/onboarding, variants: {a: 1, b: 1}}\n"
    )
    with in_process(fresh_copy(built, d), experiments_path=d / "e.yaml") as (client, app):
        yield client, app


def _stable(built: Built) -> dict[str, dict[str, Any]]:
    return {r["learner_id"]: r for r in built.stable.to_pylist()}


# -- learner ids with reserved characters ----------------------------------------------------
@settings(
    deadline=None, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(learner_id=st.text(min_size=1, max_size=MAX_LEARNER_ID_CHARS))
def test_any_learner_id_url_encoded_is_found(served: Any, built: Built, learner_id: str) -> None:
    """encode -> GET -> the service looks up exactly that id (edge and route alike)."""
    client, app = served
    snap = app.state.service.snapshot
    known = str(built.stable.column("learner_id")[0])
    rows = snap.learners.rows
    rows.setdefault(learner_id, rows[known])  # serve the id with a known row
    url = f"/v1/learners/{encode_id(learner_id)}/cohort"
    r = client.get(url)
    assert r.status_code == 200, (learner_id, r.text)
    assert r.json()["learner_id"] == learner_id
    # The FastAPI route (no edge in front) gives the same answer: one implementation.
    inner = TestClient(app.fastapi).get(url)
    assert (inner.status_code, inner.content) == (r.status_code, r.content)


@settings(
    deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(learner_id=st.text(min_size=1, max_size=MAX_LEARNER_ID_CHARS))
def test_any_learner_id_in_the_experiment_query(served: Any, learner_id: str) -> None:
    client, _ = served
    r = client.get(f"/v1/experiments/onboarding/assignment?learner_id={quote(learner_id, safe='')}")
    assert r.status_code == 200, r.text
    assert r.json()["learner_id"] == learner_id


def test_experiment_names_with_a_slash(served: Any) -> None:
    client, _ = served
    r = client.get("/v1/experiments/team%2Fonboarding/assignment", params={"learner_id": "L/1"})
    assert r.status_code == 200, r.text
    assert (r.json()["experiment"], r.json()["learner_id"]) == ("team/onboarding", "L/1")


def test_malformed_ids_get_a_clear_answer(served: Any, built: Built) -> None:
    client, app = served
    inner = TestClient(app.fastapi)
    for c in (client, inner):
        r = c.get("/v1/learners/a/b/cohort")  # a literal '/' splits the path
        assert r.status_code == 404
        assert "%2F" in r.json()["message"]
        r = c.get("/v1/learners/%FF%FE/cohort")
        assert r.status_code == 422
        assert r.json()["field"] == "path.learner_id"
        assert "UTF-8" in r.json()["message"]
        r = c.get("/v1/learners/" + "x" * (MAX_LEARNER_ID_CHARS + 1) + "/cohort")
        assert (r.status_code, r.json()["field"]) == (422, "path.learner_id")
        r = c.get("/v1/learners/nobody%20here/cohort")
        assert (r.status_code, r.json()["error"]) == (404, "not_found")
    lid, row = next(iter(_stable(built).items()))
    assert client.get(f"/v1/learners/{lid}/cohort").json()["cohort_id"] == row["cohort_id"]


def test_openapi_documents_the_lookup_route(served: Any) -> None:
    client, _ = served
    doc = client.get("/openapi.json").json()
    op = doc["paths"]["/v1/learners/{learner_id}/cohort"]["get"]
    (param,) = op["parameters"]
    assert (param["name"], param["in"], param["required"]) == ("learner_id", "path", True)
    assert param["schema"]["maxLength"] == MAX_LEARNER_ID_CHARS
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/LearnerCohort"
    }
    assert "/v1/experiments/{key}/assignment" in doc["paths"]
    assert not any(":" in p for p in doc["paths"])


# -- one credential check ------------------------------------------------------------------
def test_edge_and_routes_accept_the_same_credentials(built: Built, tmp_path: Path) -> None:
    lid = str(built.stable.column("learner_id")[0])
    with in_process(fresh_copy(built, tmp_path), api_key=API_KEY) as (client, app):
        inner = TestClient(app.fastapi)
        cases = {
            "none": ({}, 401),
            "x-api-key": ({"X-API-Key": API_KEY}, 200),
            "bearer": ({"Authorization": f"Bearer {API_KEY}"}, 200),
            "bearer, any case": ({"Authorization": f"bEaReR   {API_KEY}"}, 200),
            "wrong key": ({"X-API-Key": API_KEY + "x"}, 401),
            "admin token is not the API key": ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, 401),
        }
        for name, (headers, want) in cases.items():
            for c, path in (
                (client, f"/v1/learners/{lid}/cohort"),  # the edge
                (inner, f"/v1/learners/{lid}/cohort"),  # the FastAPI route
                (client, "/v1/cohorts"),
                (client, "/v1/models"),
            ):
                r = c.get(path, headers=headers)
                assert r.status_code == want, (name, path, r.text)
                if want == 401:
                    assert r.headers["www-authenticate"] == "Bearer"
                    assert r.json()["error"] == "unauthorized"
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert client.get("/v1/admin/routing", headers=admin).status_code == 200
        assert client.get("/v1/admin/routing", headers={"X-API-Key": ADMIN_TOKEN}).status_code == (
            401
        )
        assert client.get("/healthz").status_code == 200  # ops routes stay open


# -- admin bodies and weights ----------------------------------------------------------------
def test_admin_post_routes_accept_an_empty_body(built: Built, tmp_path: Path) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with in_process(fresh_copy(built, tmp_path)) as (client, _):
        for start, body in ((1, None), (2, b""), (3, b"{}")):
            r = client.put(
                "/v1/admin/routing/candidate",
                json={"model_id": built.candidate_id},
                headers=admin,
            )
            assert r.status_code == 200, r.text
            kwargs: dict[str, Any] = {"headers": admin}
            if body is not None:
                kwargs = {"headers": {**admin, "Content-Type": "application/json"}, "content": body}
            r = client.post("/v1/admin/routing/clear", **kwargs)
            assert r.status_code == 200, (start, r.text)
            assert r.json()["candidate_model_id"] is None
            assert r.json()["reason"] is None
        client.put(
            "/v1/admin/routing/candidate", json={"model_id": built.candidate_id}, headers=admin
        )
        r = client.post("/v1/admin/routing/promote", headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["stable_model_id"] == built.candidate_id
        r = client.post("/v1/admin/reload", headers=admin)
        assert r.status_code == 200, r.text
        # A reason is still recorded when given; a wrong type still names the field.
        client.put("/v1/admin/routing/candidate", json={"model_id": built.stable_id}, headers=admin)
        r = client.post("/v1/admin/routing/clear", json={"reason": "bad cards"}, headers=admin)
        assert r.json()["reason"] == "bad cards"
        r = client.post("/v1/admin/routing/clear", json={"reason": 7}, headers=admin)
        assert (r.status_code, r.json()["field"]) == (422, "body.reason")


def test_weights_are_percent_and_the_old_unit_is_named(built: Built, tmp_path: Path) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    db = fresh_copy(built, tmp_path)
    with in_process(db) as (client, _):
        client.put(
            "/v1/admin/routing/candidate", json={"model_id": built.candidate_id}, headers=admin
        )
        r = client.put("/v1/admin/routing/weight", json={"weight_percent": 10}, headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["candidate_weight_percent"] == 10
        assert client.get("/v1/models").json()["routing"]["candidate_weight_percent"] == 10
        assert client.get("/metrics").text.count(
            'cohortlens_routing_weight{model_role="candidate"} 0.1'
        )
        for sent in (10, 0.1):  # either unit under the old name: refused, the field named
            r = client.put("/v1/admin/routing/weight", json={"weight": sent}, headers=admin)
            assert r.status_code == 422
            assert r.json()["field"] == "body.weight"
            assert "weight_percent" in r.json()["message"]
            assert "percent" in r.json()["message"]
        for bad in (-1, 100.5, "ten"):
            r = client.put("/v1/admin/routing/weight", json={"weight_percent": bad}, headers=admin)
            assert (r.status_code, r.json()["field"]) == (422, "body.weight_percent")
        doc = client.get("/openapi.json").json()["components"]["schemas"]
        assert set(doc["WeightRequest"]["properties"]) == {
            "weight_percent",
            "expected_revision",
            "reason",
        }
        assert doc["WeightRequest"]["properties"]["weight_percent"]["maximum"] == 100
        # The rollout controller's admin-API router speaks fractions to the controller and
        # percent to the API.
        router = AdminApiRouter("http://testserver", ADMIN_TOKEN, client=client)
        view = router.set_weight(0.05, reason="canary", expected_revision=None)
        assert view.candidate_weight == 0.05
        assert router.routing().candidate_weight == 0.05
    with open_store(str(db)) as store:
        assert store.routing().candidate_weight == 0.05


def test_override_learners_get_the_candidate_whatever_the_weight(
    built: Built, tmp_path: Path
) -> None:
    """Argo-style override routes: an allow-list (QA, pilots) on the candidate at weight 0,
    labelled ``override`` in answers and metrics, set through the admin API and the rollout
    controller's admin-API router alike, gone when the release is cleared."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    db = fresh_copy(built, tmp_path)
    pilot, other = (str(x) for x in built.stable.column("learner_id").to_pylist()[:2])
    with in_process(db) as (client, _):
        r = client.put("/v1/admin/routing/overrides", json={"learner_ids": [pilot]}, headers=admin)
        assert r.status_code == 409  # no candidate yet: nothing to route them to
        client.put(
            "/v1/admin/routing/candidate", json={"model_id": built.candidate_id}, headers=admin
        )
        router = AdminApiRouter("http://testserver", ADMIN_TOKEN, client=client)
        view = router.set_overrides((pilot,), reason="QA", expected_revision=None)
        assert view.overrides == (pilot,)
        assert view.candidate_weight == 0.0
        got = client.get(f"/v1/learners/{pilot}/cohort").json()
        assert (got["model_role"], got["model_version"]) == ("override", built.candidate_id)
        assert client.get(f"/v1/learners/{other}/cohort").json()["model_role"] == "stable"
        rows = built.features.filter(
            pc.is_in(built.features.column("learner_id"), value_set=pa.array([pilot, other]))
        )
        body = {"features": [_feature_row(r) for r in rows.to_pylist()]}
        assigned = client.post("/v1/cohorts/assign", json=body).json()
        roles = {a["learner_id"]: a["model_role"] for a in assigned["assignments"]}
        assert roles == {pilot: "override", other: "stable"}
        assert assigned["routed"] == {"stable": 1, "candidate": 0, "override": 1}
        assert 'model_role="override"' in client.get("/metrics").text
        stale = client.put(
            "/v1/admin/routing/overrides",
            json={"learner_ids": [], "expected_revision": 0},
            headers=admin,
        )
        assert stale.status_code == 409
        client.post("/v1/admin/routing/clear", headers=admin)
        assert client.get("/v1/models").json()["routing"]["overrides"] == []
        assert client.get(f"/v1/learners/{pilot}/cohort").json()["model_role"] == "stable"


def test_batch_assignment_says_when_learners_are_unlike_the_training_data(served: Any) -> None:
    """The model's own training learners: about 1 % beyond its training 99th-percentile
    distance, no warning. The same learners with every engagement figure ×50: most lie beyond
    it, the response warns and the metrics count it."""
    client, app = served
    svc = app.state.service
    feats = model_training_features(svc).slice(0, 2000)
    rows = [_feature_row(r) for r in feats.to_pylist()]
    same = client.post("/v1/cohorts/assign", json={"features": rows}).json()["ood"]["stable"]
    assert same["warning"] is False
    assert same["share_beyond"] < 0.05
    shifted = [
        r | {k: v * 50 for k, v in r.items() if k.startswith("engagement") and v is not None}
        for r in rows
    ]
    far = client.post("/v1/cohorts/assign", json={"features": shifted}).json()["ood"]["stable"]
    assert far["warning"] is True
    assert far["share_beyond"] > 0.10
    assert "farther from every cohort centre" in far["message"]
    assert "engagement_events_per_week" in far["message"]
    metrics = client.get("/metrics").text
    assert 'cohortlens_ood_warnings_total{model_role="stable"' in metrics
    assert "cohortlens_ood_beyond_learners_total" in metrics


def model_training_features(svc: Any) -> pa.Table:
    run = int(svc.snapshot.stable.model.feature_run_)
    return svc.with_store(lambda st: st.read_features(run)[1], read_only=True)


def _feature_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not isinstance(v, str) or k == "learner_id"} | {
        k: None for k, v in row.items() if hasattr(v, "isoformat")
    }


# -- /docs and /redoc offline ------------------------------------------------------------------
_LINKS = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""")


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
        ("/redoc", {"redoc.standalone.js", "favicon.png"}),
    ],
)
def test_docs_pages_reference_only_local_assets(served: Any, page: str, assets: set[str]) -> None:
    client, _ = served
    r = client.get(page)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    urls = {a or b for a, b in _LINKS.findall(html)}
    assert "/openapi.json" in urls
    assert not re.search(r"https?://", html), "a page must not load anything from a CDN"
    assert "validatorUrl" not in html or '"validatorUrl": null' in html
    served_assets = {u.rsplit("/", 1)[1] for u in urls if u.startswith("/docs/assets/")}
    assert served_assets == assets
    types = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "json"}
    for url in urls:
        assert url.startswith("/"), url
        got = client.get(url)
        assert got.status_code == 200, url
        want = types[Path(url).suffix]
        assert want in got.headers["content-type"], (url, got.headers["content-type"])
        assert len(got.content) > 100
