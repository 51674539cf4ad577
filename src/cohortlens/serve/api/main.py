"""Assemble the API from its routers (the FastAPI full-stack template's ``api/main.py``)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi

from cohortlens.serve import schemas as s
from cohortlens.serve.api.routes import admin, assign, events, experiments, lookup, ops
from cohortlens.serve.settings import ADMIN_TOKEN_ENV, ServeSettings

log = logging.getLogger("cohortlens.serve")


def api_router(settings: ServeSettings) -> APIRouter:
    """Every route of one process: admin routes only with an admin token, the fault route
    only with fault injection enabled."""
    router = APIRouter()
    for area in (lookup, assign, experiments, events, ops):
        router.include_router(area.router)
    if settings.admin_token:
        router.include_router(admin.router)
        if settings.fault_injection:
            router.include_router(admin.faults_router)
    else:
        log.warning("%s is not set: admin routes are not mounted", ADMIN_TOKEN_ENV)
    return router


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the schemas of the hand-parsed assign body."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    body = s.AssignRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in body.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    schemas["AssignRequest"] = body
    app.openapi_schema = doc
    return doc
