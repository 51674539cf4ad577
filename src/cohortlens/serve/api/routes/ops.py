"""Operations: liveness, readiness and Prometheus metrics (no credentials needed)."""

from __future__ import annotations

import functools
import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from cohortlens.serve import schemas as s
from cohortlens.serve.api.deps import MaybeServiceDep
from cohortlens.serve.api.errors import json_error, responses
from cohortlens.serve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from cohortlens.store.base import StoreBusyError

log = logging.getLogger("cohortlens.serve")

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=s.Status, summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=s.Status,
    responses=responses(503),
    summary="Readiness: a stable model is loaded and the store answers",
)
async def readyz(svc: MaybeServiceDep) -> Response:
    if svc is None or not svc.ready:
        return json_error(503, "unavailable", "no active cohort model loaded")
    try:
        await run_in_threadpool(
            functools.partial(
                svc.with_store, lambda st: st.routing_revision(), read_only=True, wait_s=0.5
            )
        )
    except StoreBusyError:  # another process's turn: the loaded state still answers
        return JSONResponse({"status": "ready", "store": "busy"})
    except Exception as exc:  # the store went away
        log.warning("readiness: store unreachable: %s", type(exc).__name__)
        return json_error(503, "unavailable", "the store does not answer")
    return JSONResponse({"status": "ready"})


@router.get(
    "/metrics",
    summary="Prometheus metrics (text format)",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format 0.0.4",
            "content": {METRICS_CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(svc: MaybeServiceDep) -> Response:
    body = svc.metrics.render() if svc is not None else b""
    return Response(body, media_type=METRICS_CONTENT_TYPE)
