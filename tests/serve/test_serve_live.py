"""The real `cohortlens serve` (uvicorn + httptools) on 127.0.0.1: learner ids with reserved
characters stored in the model's assignments, and the docs pages rendered by headless
Chromium with every host but 127.0.0.1 unresolvable (no CDN can answer)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa
import pytest
from tests.cohorts.headless import CHROMIUM, load_page
from tests.serve._server import Server, running_server
from tests.serve.conftest import Built, fresh_copy
from tests.serve.test_serve_api import encode_id

from cohortlens.store import open_store

#: Ids a platform may well use: path and query delimiters, '%', spaces, dots, Unicode.
ODD_IDS = [
    "team/alice",
    "a/b/c",
    "what?",
    "#7",
    "100%",
    "%2F",
    "with space",
    " lead and trail ",
    "plus+sign",
    "ünïcødé",
    "学习者",
    "emoji-🎓",
    ".",
    "..",
    "semi;colon,comma",
    "back\\slash",
    'quote"s',
    "tab\there",
]


@pytest.fixture(scope="module")
def live(
    built: Built, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, pa.Table]]:
    d = tmp_path_factory.mktemp("live")
    db = fresh_copy(built, d)
    with open_store(str(db)) as store:  # the first learners get the odd ids
        table = store.read_assignments(built.stable_id)
        ids = table.column("learner_id").to_pylist()
        ids[: len(ODD_IDS)] = ODD_IDS
        table = table.set_column(0, "learner_id", pa.array(ids, pa.string()))
        store.save_assignments(built.stable_id, table)
    with running_server(str(db), d) as srv:
        yield srv, table


def test_reserved_characters_url_encoded(live: tuple[Server, pa.Table]) -> None:
    server, table = live
    stored = {r["learner_id"]: r for r in table.to_pylist()}
    with server.client() as c:
        for lid in ODD_IDS:
            r = c.get(f"/v1/learners/{encode_id(lid)}/cohort")
            assert r.status_code == 200, (lid, r.text)
            body = r.json()
            assert body["learner_id"] == lid
            assert body["cohort_id"] == stored[lid]["cohort_id"]
        r = c.get("/v1/learners/team/alice/cohort")  # not encoded: a path of its own
        assert r.status_code == 404
        assert "%2F" in r.json()["message"]
    assert "team/alice" not in server.log()  # the access log hashes ids


_SWAGGER_OPS = """
new Promise(resolve => {
  const t0 = Date.now();
  (function poll() {
    const ops = [...document.querySelectorAll('.opblock-summary-path')]
      .map(e => e.getAttribute('data-path'));
    if (ops.length > 0 || Date.now() - t0 > 30000) resolve(ops); else setTimeout(poll, 100);
  })();
})
"""

_REDOC_TEXT = """
new Promise(resolve => {
  const t0 = Date.now();
  (function poll() {
    const text = document.body.innerText;
    if (text.includes('The cohort of one learner') || Date.now() - t0 > 30000) resolve(text);
    else setTimeout(poll, 100);
  })();
})
"""


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_render_offline_in_a_browser(live: tuple[Server, pa.Table], page: str) -> None:
    server, _ = live
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (`make browser` installs Debian's chromium as root)")
    with server.client() as c:
        doc = c.get("/openapi.json").json()
    offline = ("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",)
    script = _SWAGGER_OPS if page == "/docs" else _REDOC_TEXT
    result = load_page(server.url + page, script, flags=offline)
    outside = [
        u for u in result.requests if not u.startswith((server.url, "data:", "blob:", "about:"))
    ]
    assert outside == [], f"{page} requested other hosts: {outside}"
    # ReDoc's bundle asks its vendor's CDN for a sidebar logo: the page's CSP stops it in the
    # browser (the logo hides itself); that refusal is the only error allowed.
    assert all(why == "csp" for _, why in result.blocked), result.blocked
    refused = [u for u, _ in result.blocked]
    errors = [e for e in result.console_errors if not any(u in e for u in refused)]
    assert errors == [], result.console_errors
    if page == "/docs":
        assert set(result.evaluated) == set(doc["paths"]), json.dumps(result.evaluated)
    else:
        summaries = [
            op["summary"] for ops in doc["paths"].values() for op in ops.values() if "summary" in op
        ]
        missing = [s for s in summaries if s not in result.evaluated]
        assert missing == [], missing
