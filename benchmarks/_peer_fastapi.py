"""The serving benchmark's peer: a plain FastAPI handler over a dict of learners.

What a competent engineer writes first: ``async def`` route, path parameter, dict look-up,
a dict response (FastAPI's JSON encoding), uvicorn with httptools + uvloop, no access log.

Usage: ``python -m benchmarks._peer_fastapi ASSIGNMENTS.parquet PORT``.
"""

from __future__ import annotations

import sys

import pyarrow.parquet as pq
import uvicorn
from fastapi import FastAPI, HTTPException


def make_app(path: str) -> FastAPI:
    table = pq.read_table(path)
    rows = {
        r["learner_id"]: {
            "learner_id": r["learner_id"],
            "cohort_id": r["cohort_id"],
            "archetype": r["archetype"],
            "model_version": 1,
            "model_role": "stable",
        }
        for r in table.to_pylist()
    }
    app = FastAPI()

    @app.get("/v1/learners/{learner_id}/cohort")
    async def cohort(learner_id: str) -> dict[str, object]:
        found = rows.get(learner_id)
        if found is None:
            raise HTTPException(404, "unknown learner")
        return found

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

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
