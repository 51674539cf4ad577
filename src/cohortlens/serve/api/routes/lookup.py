"""Look-ups: one learner's cohort, the stable model's cohort cards, the stored models.

:func:`answer_lookup` is the single implementation of ``GET /v1/learners/{learner_id}/cohort``:
the edge fast path (:mod:`cohortlens.serve.edge`) calls it for every look-up, and the FastAPI
route below (which also documents the route in the OpenAPI document) calls the same function
when the application runs without the edge.

The learner id is read from the raw, still percent-encoded path (``scope["raw_path"]``) and
decoded once, so ids holding ``/``, ``?``, ``#``, ``%``, spaces or any Unicode work when
URL-encoded (``a%2Fb`` is the learner ``a/b``).
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from cohortlens.serve import schemas as s
from cohortlens.serve.api.auth import READ_REFUSED, Credentials, Headers
from cohortlens.serve.api.deps import ReadAccess, ServiceDep
from cohortlens.serve.api.errors import responses
from cohortlens.serve.service import (
    MAX_LEARNER_ID_CHARS,
    CohortService,
    Lookup,
    UnavailableError,
    error_body,
    routing_to_dict,
)

#: The documented route template (the metrics' ``route`` label).
LOOKUP_ROUTE = "/v1/learners/{learner_id}/cohort"
_PREFIX = b"/v1/learners/"
_SUFFIX = b"/cohort"

Scope = MutableMapping[str, Any]


def _refused(status: int, body: bytes) -> tuple[Lookup, None]:
    return Lookup(status, body, "none", "none"), None


def raw_path(scope: Scope) -> bytes:
    """The request path as sent (percent-encoding kept); rebuilt from ``path`` when the
    server gives no ``raw_path``."""
    raw = scope.get("raw_path")
    return raw if raw else quote(scope["path"]).encode()


def is_lookup_path(raw: bytes) -> bool:
    """Whether a raw path is ``/v1/learners/<segment>/cohort``."""
    return (
        len(raw) >= len(_PREFIX) + len(_SUFFIX)
        and raw.startswith(_PREFIX)
        and raw.endswith(_SUFFIX)
    )


def answer_lookup(
    credentials: Credentials, svc: CohortService | None, raw: bytes, headers: Headers
) -> tuple[Lookup, str | None]:
    """Check the API key, decode the learner id from the raw path ``raw`` (one for which
    :func:`is_lookup_path` holds) and look it up; ``svc`` is None while the process starts.

    Returns the answer (status, JSON body, routed role and version, and the ``delay_s`` the
    caller waits before answering: injected candidate latency) and the decoded learner id
    (None when the path held none). Synchronous and allocation-light: the hot path.
    """
    if credentials.api_key is not None and not credentials.read_ok(headers):
        return _refused(401, error_body("unauthorized", READ_REFUSED))
    if svc is None:
        return _refused(503, error_body("unavailable", "the service is starting"))
    segment = raw[len(_PREFIX) : -len(_SUFFIX)]
    if b"/" in segment:
        return _refused(
            404,
            error_body(
                "not_found",
                "no such route; a learner id containing '/' must be URL-encoded (%2F)",
            ),
        )
    try:
        learner_id = (unquote_to_bytes(segment) if b"%" in segment else segment).decode("utf-8")
    except UnicodeDecodeError as exc:
        return _refused(
            422,
            error_body(
                "invalid_request",
                f"learner_id: not UTF-8 once percent-decoded (byte {exc.start})",
                field="path.learner_id",
            ),
        )
    return svc.lookup(learner_id), learner_id


router = APIRouter()


@router.get(
    "/v1/learners/{learner_id:anything}/cohort",
    response_model=s.LearnerCohort,
    responses=responses(401, 404, 422, 503),
    tags=["cohorts"],
    summary="The cohort of one learner",
    description="The learner's cohort under the routing in force, and the model that "
    "answered. The id is one URL-encoded path segment: `/`, `?`, `#`, `%`, spaces and "
    "non-ASCII characters percent-encoded (UTF-8), `.` and `..` as `%2E` and `%2E%2E`.",
    openapi_extra={
        "parameters": [
            {
                "name": "learner_id",
                "in": "path",
                "required": True,
                "description": "The learner id, URL-encoded (a learner `a/b` is `a%2Fb`).",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_LEARNER_ID_CHARS,
                    "title": "Learner Id",
                },
            }
        ]
    },
)
async def learner_cohort(request: Request) -> Response:
    # In a running service the edge answers every look-up; this route answers when the
    # FastAPI application runs without it, through the same answer_lookup.
    state, scope = request.app.state, request.scope
    found, _ = answer_lookup(state.credentials, state.service, raw_path(scope), scope["headers"])
    if found.delay_s:
        await asyncio.sleep(found.delay_s)
    request.scope["cohortlens.role"] = found.role
    request.scope["cohortlens.version"] = found.version
    headers = {"WWW-Authenticate": "Bearer"} if found.status == 401 else None
    return Response(
        found.body, status_code=found.status, media_type="application/json", headers=headers
    )


reads = APIRouter(dependencies=[ReadAccess])


@reads.get(
    "/v1/cohorts",
    responses=responses(401, 503),
    tags=["cohorts"],
    summary="Cohort cards of the stable model",
)
async def cohort_cards(svc: ServiceDep) -> dict[str, Any]:
    from cohortlens.cohorts.cards import model_cards

    snap = svc.snapshot
    if snap is None or snap.stable is None:
        raise UnavailableError("no active cohort model")
    return model_cards(snap.stable.model, snap.stable.model_id)


@reads.get(
    "/v1/models",
    response_model=s.ModelsResponse,
    responses=responses(401, 503),
    tags=["models"],
    summary="Stored models and the routing in force",
)
async def list_models(svc: ServiceDep) -> dict[str, Any]:
    routing, models = await run_in_threadpool(
        svc.with_store, lambda st: (st.routing(), st.models())
    )
    roles = {routing.stable_model_id: "stable", routing.candidate_model_id: "candidate"}
    return {
        "routing": routing_to_dict(routing),
        "models": [
            {
                "model_id": m["model_id"],
                "created_at": m["created_at"].isoformat() if m["created_at"] else None,
                "feature_run_id": m["feature_run_id"],
                "status": m["status"],
                "role": roles.get(m["model_id"], "none"),
            }
            for m in models
        ],
    }


router.include_router(reads)
