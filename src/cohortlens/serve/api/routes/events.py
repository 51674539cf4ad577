"""Event intake: ``POST /v1/events`` validates and stores a small batch of events."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from cohortlens.serve import schemas as s
from cohortlens.serve.api.deps import ReadAccess, ServiceDep, SettingsDep
from cohortlens.serve.api.errors import responses
from cohortlens.serve.service import FieldError

router = APIRouter(tags=["events"], dependencies=[ReadAccess])


@router.post(
    "/v1/events",
    response_model=s.EventsResponse,
    responses={
        **responses(401, 413, 422, 503),
        202: {
            "model": s.EventsResponse,
            "description": "Another process holds the store: the rows wait in the service's "
            "spool and are stored when it is free (duplicates not known yet)",
        },
    },
    summary="Validate and store a small batch of events",
)
async def post_events(req: s.EventsRequest, svc: ServiceDep, settings: SettingsDep) -> Response:
    if len(req.events) > settings.max_events:
        raise FieldError(
            "body.events",
            f"{len(req.events)} rows in one request; at most {settings.max_events}",
        )
    status, report = await run_in_threadpool(
        svc.ingest_events, [e.model_dump() for e in req.events]
    )
    return JSONResponse(report, status_code=status)
