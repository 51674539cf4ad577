"""Two real server replicas sharing a PostgreSQL store: a weight set through one is in force
on both within 5 s, and they answer identically."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.serve._server import running_server
from tests.serve.conftest import Built, build_store
from tests.store.conftest import PG_URL, _admin, with_schema

from cohortlens.experiments.assignment import bucket_of


@pytest.fixture(scope="module")
def pg_built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Built]]:
    schema = f"cl_serve_{uuid.uuid4().hex[:8]}"
    url = with_schema(PG_URL, schema)
    conn = _admin()
    try:
        yield url, build_store(tmp_path_factory.mktemp("pg"), url)
    finally:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()


def test_two_replicas_share_routing_and_exposures(
    pg_built: tuple[str, Built], tmp_path: Path
) -> None:
    url, built = pg_built
    ids = [str(x) for x in built.stable.column("learner_id").to_pylist()][:200]
    experiments = tmp_path / "e.yaml"
    experiments.write_text("experiments:\n  - {name: exp1, variants: {a: 1, b: 1}}\n")
    common = ("--routing-poll-s", "1", "--experiments", str(experiments))
    with (
        running_server(url, tmp_path, *common) as one,
        running_server(url, tmp_path, *common) as two,
        one.admin() as admin,
        one.client() as c1,
        two.client() as c2,
    ):
        for lid in ids[:20]:
            a = c1.get(f"/v1/learners/{lid}/cohort").json()
            assert a == c2.get(f"/v1/learners/{lid}/cohort").json()
            assert a["model_role"] == "stable"
        salt = admin.put(
            "/v1/admin/routing/candidate", json={"model_id": built.candidate_id}
        ).json()["salt"]
        routing = admin.put("/v1/admin/routing/weight", json={"weight_percent": 50}).json()
        changed_at = time.monotonic()
        expected = {lid for lid in ids if bucket_of(lid, salt) < 5000}
        assert expected
        assert len(expected) < len(ids)
        seen_by_two = None
        while time.monotonic() - changed_at < 5.0:
            got = {
                lid
                for lid in ids
                if c2.get(f"/v1/learners/{lid}/cohort").json()["model_role"] == "candidate"
            }
            if got == expected:
                seen_by_two = time.monotonic() - changed_at
                break
            time.sleep(0.1)
        assert seen_by_two is not None, "replica two did not apply the weight within 5 s"
        for lid in ids[:50]:
            assert c1.get(f"/v1/learners/{lid}/cohort").json() == (
                c2.get(f"/v1/learners/{lid}/cohort").json()
            )
        r1 = c1.get("/v1/models").json()["routing"]
        r2 = c2.get("/v1/models").json()["routing"]
        assert r1["revision"] == r2["revision"] == routing["revision"]
        # Exposures from both replicas reach the one shared store.
        for c in (c1, c2):
            for lid in ids[:5]:
                assert c.get(
                    "/v1/experiments/exp1/assignment", params={"learner_id": lid}
                ).is_success
        deadline = time.monotonic() + 10
        from cohortlens.store import open_store

        with open_store(url) as store:
            while time.monotonic() < deadline:
                if store.read_exposures("exp1").num_rows >= 10:
                    break
                time.sleep(0.3)
            assert store.read_exposures("exp1").num_rows == 10
