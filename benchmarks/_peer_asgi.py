"""The serving benchmark's second peer: a bare ASGI callable over a dict of learners.

Our look-up is answered by a raw ASGI layer (``serve/edge.py``) before FastAPI, so the peer
that does the same kind of work is ASGI with no framework: split the path, look the learner
up in a dict, encode the same JSON body as :mod:`benchmarks._peer_fastapi` with
:func:`json.dumps` per request, and send it; same uvicorn (httptools + uvloop), no access log.
It has no credential check, no routing between models, no metrics: a ceiling, not a rival.

Usage: ``python -m benchmarks._peer_asgi ASSIGNMENTS.parquet PORT``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import pyarrow.parquet as pq
import uvicorn

Message = MutableMapping[str, Any]
_PREFIX, _SUFFIX = "/v1/learners/", "/cohort"
_JSON = [(b"content-type", b"application/json")]


def make_app(path: str) -> Callable[..., Awaitable[None]]:
    rows = {
        r["learner_id"]: {
            "learner_id": r["learner_id"],
            "cohort_id": r["cohort_id"],
            "archetype": r["archetype"],
            "model_version": 1,
            "model_role": "stable",
        }
        for r in pq.read_table(path).to_pylist()
    }
    health = json.dumps({"status": "ok"}).encode()
    missing = json.dumps({"detail": "unknown learner"}).encode()

    async def app(
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":  # nothing to start or stop
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        p: str = scope["path"]
        if p.startswith(_PREFIX) and p.endswith(_SUFFIX):
            found = rows.get(p[len(_PREFIX) : -len(_SUFFIX)])
            status, body = (200, json.dumps(found).encode()) if found else (404, missing)
        elif p == "/healthz":
            status, body = 200, health
        else:
            status, body = 404, missing
        headers = [*_JSON, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


if __name__ == "__main__":
    uvicorn.run(
        make_app(sys.argv[1]),
        host="127.0.0.1",
        port=int(sys.argv[2]),
        access_log=False,
        log_level="warning",
        loop="uvloop",
        http="httptools",
    )
