"""The FastAPI application: routes, auth, errors, and the ASGI wrapper around them.

Every route answers JSON; errors are ``{"error", "message", "field"?}`` and never carry a
stack trace. The outer :class:`_Edge` ASGI layer enforces the body limit, times and counts
every request for Prometheus, writes the access log (learner ids hashed unless configured),
turns unexpected exceptions into a plain 500, and serves single cohort look-ups directly
(the hot path: the same :meth:`CohortService.lookup` as the FastAPI route, without
FastAPI's per-request validation machinery).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Annotated, Any

import pyarrow as pa
from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as FastAPIPath
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.types import DecoratedCallable
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from cohortlens._version import __version__
from cohortlens.errors import CohortlensError, InputError, StoreError
from cohortlens.serve import schemas as s
from cohortlens.serve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from cohortlens.serve.service import (
    BACKGROUND_WAIT_S,
    MAX_LEARNER_ID_CHARS,
    CohortService,
    FieldError,
    NotFoundError,
    StateConflictError,
    UnavailableError,
    error_body,
    events_source,
    routing_to_dict,
)
from cohortlens.serve.settings import ServeSettings
from cohortlens.store.base import StoreBusyError

log = logging.getLogger("cohortlens.serve")
access_log = logging.getLogger("cohortlens.access")

ARROW_STREAM = "application/vnd.apache.arrow.stream"
LOOKUP_ROUTE = "/v1/learners/{learner_id}/cohort"
_LOOKUP_PREFIX = "/v1/learners/"
_LOOKUP_SUFFIX = "/cohort"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ModelId = Annotated[int, FastAPIPath(ge=1, le=2**53)]


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        401: "Missing or wrong credentials",
        403: "Admin routes are disabled",
        404: "Not found",
        409: "Routing changed since expected_revision",
        413: "Body too large",
        415: "Unsupported content type",
        422: "Malformed input (the field is named)",
        503: "Not ready (no active model, or the store is unreachable)",
    }
    return {c: {"model": s.ErrorBody, "description": text[c]} for c in codes}


def _json_error(status: int, code: str, message: str, field: str | None = None) -> Response:
    return Response(
        error_body(code, message, field=field), status_code=status, media_type="application/json"
    )


def _learner_hash(learner_id: str) -> str:
    return "h:" + hashlib.blake2b(learner_id.encode(), digest_size=6).hexdigest()


# -- auth ------------------------------------------------------------------------------------
def _token_ok(presented: str | None, expected: str) -> bool:
    return presented is not None and secrets.compare_digest(presented.encode(), expected.encode())


def _bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


class _AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


def create_app(settings: ServeSettings, *, store_factory: Callable[[], Any] | None = None) -> Any:
    """The ASGI application of one service process (FastAPI wrapped by the edge layer)."""

    def _open() -> Any:
        if store_factory is not None:
            return store_factory()
        from cohortlens.store import open_shared

        return open_shared(settings.db, wait_s=settings.store_wait_s)

    holder: dict[str, CohortService] = {}

    def service() -> CohortService:
        svc = holder.get("service")
        if svc is None:
            raise UnavailableError("the service is starting")
        return svc

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        store = await run_in_threadpool(_open)
        svc = CohortService(settings, store)
        with contextlib.suppress(StoreBusyError):  # spooled by an earlier run: apply it now
            await run_in_threadpool(functools.partial(svc.drain, wait_s=settings.store_wait_s))
        await run_in_threadpool(svc.refresh, force=True)
        seconds = await run_in_threadpool(svc.warm_up)
        log.info("kernels warmed up in %.1f s", seconds)
        # Everything loaded so far (modules, the learner index) lives as long as the process:
        # moving it out of the collector's generations keeps full collections, which would
        # otherwise walk it every time, from stalling requests (the p99 of SERVING.md).
        gc.collect()
        gc.freeze()
        holder["service"] = svc
        tasks = [
            asyncio.create_task(_poll_routing(svc)),
            asyncio.create_task(_flush_exposures(svc)),
        ]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            try:
                await run_in_threadpool(svc.close)
            except StoreBusyError:
                log.warning(
                    "the store is held elsewhere; spooled records are applied at the next start"
                )

    app = FastAPI(
        title="cohortlens",
        version=__version__,
        description="Cohort look-ups, batch assignment, experiment assignment and event "
        "intake for a learning platform (docs/SERVING.md).",
        lifespan=lifespan,
    )

    def read_auth(request: Request) -> None:
        if settings.api_key is None:
            return
        presented = request.headers.get("x-api-key") or _bearer(
            request.headers.get("authorization")
        )
        if not _token_ok(presented, settings.api_key):
            raise _AuthError(401, "missing or wrong API key (X-API-Key header)")

    def admin_auth(request: Request) -> None:
        assert settings.admin_token is not None
        if not _token_ok(_bearer(request.headers.get("authorization")), settings.admin_token):
            raise _AuthError(401, "missing or wrong admin bearer token")

    read_ok = [Depends(read_auth)]
    admin_ok = [Depends(admin_auth)]

    # -- errors ------------------------------------------------------------------------------
    @app.exception_handler(_AuthError)
    async def _auth(_: Request, exc: _AuthError) -> Response:
        resp = _json_error(exc.status, "unauthorized", exc.message)
        resp.headers["WWW-Authenticate"] = "Bearer"
        return resp

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        return _validation_response(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:  # FastAPI's "error parsing the body": malformed JSON
            return _json_error(422, "invalid_request", f"body: {exc.detail}", "body")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        resp = _json_error(exc.status_code, code, str(exc.detail))
        for key, value in (exc.headers or {}).items():
            resp.headers[key] = value
        return resp

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> Response:
        log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
        return _json_error(500, "internal", "internal server error")

    @app.exception_handler(StateConflictError)
    async def _conflict(_: Request, exc: StateConflictError) -> Response:
        return _json_error(409, "conflict", str(exc))

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> Response:
        return _json_error(404, "not_found", str(exc))

    @app.exception_handler(UnavailableError)
    async def _unavailable(_: Request, exc: UnavailableError) -> Response:
        return _json_error(503, "unavailable", str(exc))

    @app.exception_handler(InputError)
    async def _input(_: Request, exc: InputError) -> Response:
        return _json_error(422, "invalid_request", str(exc), getattr(exc, "field", None))

    @app.exception_handler(StoreBusyError)
    async def _busy(_: Request, exc: StoreBusyError) -> Response:
        resp = _json_error(503, "store_busy", str(exc))
        resp.headers["Retry-After"] = "5"
        return resp

    @app.exception_handler(StoreError)
    async def _store(_: Request, exc: StoreError) -> Response:
        if type(exc).__name__ == "ConflictError":
            return _json_error(409, "conflict", str(exc))
        return _json_error(503, "store_error", str(exc))

    @app.exception_handler(CohortlensError)
    async def _cohortlens(_: Request, exc: CohortlensError) -> Response:
        return _json_error(422, "invalid_request", str(exc))

    # -- read routes -------------------------------------------------------------------------
    @app.get(
        LOOKUP_ROUTE,
        response_model=s.LearnerCohort,
        responses=_responses(401, 404, 422, 503),
        tags=["cohorts"],
        dependencies=read_ok,
        summary="The cohort of one learner",
    )
    async def learner_cohort(
        learner_id: Annotated[str, ...],
    ) -> Response:  # pragma: no cover - served by the edge fast path
        found = service().lookup(learner_id)
        if found.delay_s:
            await asyncio.sleep(found.delay_s)
        return Response(found.body, status_code=found.status, media_type="application/json")

    @app.post(
        "/v1/cohorts/assign",
        response_model=s.AssignResponse,
        responses=_responses(401, 413, 415, 422, 503),
        tags=["cohorts"],
        dependencies=read_ok,
        summary="Assign up to 10,000 learners with the routed models",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/AssignRequest"}},
                    ARROW_STREAM: {
                        "schema": {
                            "type": "string",
                            "format": "binary",
                            "description": "Arrow IPC stream of a feature table "
                            "(learner_id + feature columns); the response is an Arrow "
                            "stream too when Accept asks for it.",
                        }
                    },
                },
            }
        },
    )
    async def assign_cohorts(request: Request) -> Response:
        svc = service()
        body = await request.body()
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
        events_report: dict[str, Any] | None = None
        if ctype == ARROW_STREAM:
            features = _read_arrow(body)
        elif ctype in ("application/json", ""):
            try:
                req = s.AssignRequest.model_validate_json(body).root
            except ValidationError as exc:
                return _validation_response(_assign_errors(exc, body), prefix=("body",))
            if isinstance(req, s.AssignByFeatures):
                features = _feature_rows(
                    [row.model_dump(exclude_unset=True) for row in req.features]
                )
            else:
                features, events_report = await run_in_threadpool(
                    _features_from_events, svc, req.events
                )
        else:
            return _json_error(
                415, "unsupported_media_type", f"use application/json or {ARROW_STREAM}"
            )
        if features.num_rows > settings.max_assign_learners:
            return _json_error(
                413,
                "too_many_learners",
                f"{features.num_rows} learners in one request; at most "
                f"{settings.max_assign_learners}",
            )
        if features.num_rows == 0:
            payload0: dict[str, Any] = {"assignments": [], "routed": {"stable": 0, "candidate": 0}}
            if events_report is not None:
                payload0["events"] = events_report
            return JSONResponse(payload0)
        table, routed = await run_in_threadpool(svc.assign_features, features)
        request.scope["cohortlens.role"] = _batch_role(routed)
        if ARROW_STREAM in request.headers.get("accept", ""):
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM)
        payload: dict[str, Any] = {"assignments": table.to_pylist(), "routed": routed}
        if events_report is not None:
            payload["events"] = events_report
        return JSONResponse(payload)

    @app.get(
        "/v1/cohorts",
        responses=_responses(401, 503),
        tags=["cohorts"],
        dependencies=read_ok,
        summary="Cohort cards of the stable model",
    )
    async def cohort_cards() -> dict[str, Any]:
        from cohortlens.cohorts.cards import model_cards

        snap = service().snapshot
        if snap is None or snap.stable is None:
            raise UnavailableError("no active cohort model")
        return model_cards(snap.stable.model, snap.stable.model_id)

    @app.get(
        "/v1/models",
        response_model=s.ModelsResponse,
        responses=_responses(401, 503),
        tags=["models"],
        dependencies=read_ok,
        summary="Stored models and the routing in force",
    )
    async def list_models() -> dict[str, Any]:
        svc = service()
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

    @app.get(
        "/v1/experiments/{key}/assignment",
        response_model=s.ExperimentAssignment,
        responses=_responses(401, 404, 422),
        tags=["experiments"],
        dependencies=read_ok,
        summary="A learner's variant (deterministic; the exposure is logged)",
    )
    async def experiment_assignment(
        key: str,
        learner_id: Annotated[str, Query(min_length=1, max_length=MAX_LEARNER_ID_CHARS)],
    ) -> dict[str, Any]:
        return service().experiment_assignment(key, learner_id)

    @app.post(
        "/v1/events",
        response_model=s.EventsResponse,
        responses={
            **_responses(401, 413, 422, 503),
            202: {
                "model": s.EventsResponse,
                "description": "Another process holds the store: the rows wait in the "
                "service's spool and are stored when it is free (duplicates not known yet)",
            },
        },
        tags=["events"],
        dependencies=read_ok,
        summary="Validate and store a small batch of events",
    )
    async def post_events(req: s.EventsRequest) -> Response:
        if len(req.events) > settings.max_events:
            raise FieldError(
                "body.events",
                f"{len(req.events)} rows in one request; at most {settings.max_events}",
            )
        svc = service()
        status, report = await run_in_threadpool(
            svc.ingest_events, [e.model_dump() for e in req.events]
        )
        return JSONResponse(report, status_code=status)

    # -- health and metrics ------------------------------------------------------------------
    @app.get("/healthz", response_model=s.Status, tags=["ops"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=s.Status,
        responses=_responses(503),
        tags=["ops"],
        summary="Readiness: a stable model is loaded and the store answers",
    )
    async def readyz() -> Response:
        svc = holder.get("service")
        if svc is None or not svc.ready:
            return _json_error(503, "unavailable", "no active cohort model loaded")
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
            return _json_error(503, "unavailable", "the store does not answer")
        return JSONResponse({"status": "ready"})

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics (text format)",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format 0.0.4",
                "content": {METRICS_CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}},
            }
        },
    )
    async def metrics() -> Response:
        svc = holder.get("service")
        body = svc.metrics.render() if svc is not None else b""
        return Response(body, media_type=METRICS_CONTENT_TYPE)

    def openapi() -> dict[str, Any]:
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

    app.openapi = openapi  # type: ignore[method-assign]

    # -- admin -------------------------------------------------------------------------------
    if settings.admin_token:
        _admin_routes(app, settings, service, admin_ok)
    else:
        log.warning("%s is not set: admin routes are not mounted", "COHORTLENS_ADMIN_TOKEN")

    return _Edge(app, settings, holder)


def _admin_routes(
    app: FastAPI, settings: ServeSettings, service: Callable[[], CohortService], auth: Any
) -> None:
    errors = _responses(401, 404, 409, 422, 503)

    async def apply(fn: Callable[[Any], Any]) -> dict[str, Any]:
        svc = service()
        try:
            routing = await run_in_threadpool(svc.with_store, fn)
        except InputError as exc:  # the body was valid; the routing state refuses it
            raise StateConflictError(str(exc)) from exc
        except StoreError as exc:
            if type(exc).__name__ == "ConflictError":
                raise
            if "has no cohort model" in str(exc):
                raise NotFoundError(str(exc)) from exc
            if "cannot be a candidate" in str(exc):
                raise StateConflictError(str(exc)) from exc
            raise
        await run_in_threadpool(svc.refresh)
        return routing_to_dict(routing)

    def admin(
        method: str, path: str, summary: str | None = None, *, model: type[Any] = s.RoutingInfo
    ) -> Callable[[DecoratedCallable], DecoratedCallable]:
        """Mount an admin route: bearer-token auth, the ``admin`` tag, the shared error codes."""
        return app.api_route(
            path,
            methods=[method],
            response_model=model,
            responses=errors,
            tags=["admin"],
            dependencies=auth,
            summary=summary,
        )

    @admin("GET", "/v1/admin/routing")
    async def get_routing() -> dict[str, Any]:
        return await run_in_threadpool(service().routing_dict)

    @admin(
        "PUT",
        "/v1/admin/routing/candidate",
        "Start a release: this model becomes the candidate at weight 0 (new salt)",
    )
    async def put_candidate(req: s.CandidateRequest) -> dict[str, Any]:
        return await apply(
            lambda st: st.start_release(req.model_id, actor="api", reason=req.reason)
        )

    @admin("PUT", "/v1/admin/routing/weight", "Set the candidate's share of learners")
    async def put_weight(req: s.WeightRequest) -> dict[str, Any]:
        return await apply(
            lambda st: st.set_candidate_weight(
                req.weight,
                actor="api",
                reason=req.reason,
                expected_revision=req.expected_revision,
            )
        )

    @admin("POST", "/v1/admin/routing/promote", "The candidate becomes the stable model")
    async def promote(req: s.ReasonRequest) -> dict[str, Any]:
        return await apply(lambda st: st.promote_candidate(actor="api", reason=req.reason))

    @admin(
        "POST",
        "/v1/admin/routing/clear",
        "Route everybody to the stable model and retire the candidate",
    )
    async def clear(req: s.ReasonRequest) -> dict[str, Any]:
        return await apply(lambda st: st.clear_candidate(actor="api", reason=req.reason))

    @admin(
        "POST",
        "/v1/admin/models/{model_id}/activate",
        "Make a model the stable one at once (no rollout)",
    )
    async def activate(model_id: ModelId) -> dict[str, Any]:
        def run(st: Any) -> Any:
            st.model(model_id)
            st.set_model_status(model_id, "active")
            return st.routing()

        return await apply(run)

    @admin(
        "POST",
        "/v1/admin/models/{model_id}/retire",
        "Retire a model that is neither stable nor candidate",
    )
    async def retire(model_id: ModelId) -> dict[str, Any]:
        def run(st: Any) -> Any:
            st.model(model_id)
            routing = st.routing()
            if model_id in (routing.stable_model_id, routing.candidate_model_id):
                raise StateConflictError(
                    f"model {model_id} is being served; promote or clear the routing first"
                )
            st.set_model_status(model_id, "retired")
            return routing

        return await apply(run)

    @admin("POST", "/v1/admin/reload", "Reload models and routing from the store now")
    async def reload() -> dict[str, Any]:
        svc = service()
        await run_in_threadpool(svc.refresh, force=True)
        return await run_in_threadpool(svc.routing_dict)

    if settings.fault_injection:

        @admin(
            "PUT",
            "/v1/admin/faults",
            "Inject candidate faults (chaos testing; --enable-fault-injection)",
            model=s.FaultsRequest,
        )
        async def put_faults(req: s.FaultsRequest) -> dict[str, float]:
            f = service().set_faults(req.candidate_error_rate, req.candidate_latency_ms)
            return {
                "candidate_error_rate": f.candidate_error_rate,
                "candidate_latency_ms": f.candidate_latency_ms,
            }


# -- request helpers ---------------------------------------------------------------------------
def _validation_response(errors: Any, prefix: tuple[str, ...] = ()) -> Response:
    items = [
        {
            "field": ".".join(str(p) for p in (*prefix, *e.get("loc", ()))),
            "message": str(e.get("msg", "invalid")),
        }
        for e in errors
    ]
    first = items[0] if items else {"field": "body", "message": "invalid request"}
    body = {
        "error": "invalid_request",
        "message": f"{first['field']}: {first['message']}",
        "field": first["field"],
        "errors": items[:20],
    }
    return JSONResponse(body, status_code=422)


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _assign_errors(exc: ValidationError, body: bytes) -> list[dict[str, Any]]:
    """The errors of the alternative the client meant (pydantic reports both union members)."""
    import json as _json

    members = {"features": "AssignByFeatures", "events": "AssignByEvents"}
    try:
        sent = _json.loads(body)
    except ValueError:
        sent = None
    given = [k for k in members if isinstance(sent, dict) and k in sent]
    if sent is None:  # not JSON at all: pydantic's own message says where
        return [{"loc": (), "msg": str(e.get("msg"))} for e in exc.errors()[:1]]
    if not isinstance(sent, dict) or len(given) != 1 or len(sent) != 1:
        return [{"loc": (), "msg": "expected an object with exactly one of 'features' or 'events'"}]
    meant = members[given[0]]
    out = []
    for e in exc.errors():
        loc = tuple(e.get("loc", ()))
        if not loc or loc[0] != meant:
            continue
        loc = loc[1:]
        while loc and loc[-1] in _TYPE_TAGS:
            loc = loc[:-1]
        out.append({**e, "loc": loc})
    return out


def _read_arrow(body: bytes) -> pa.Table:
    try:
        table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise FieldError("body", f"not a readable Arrow IPC stream ({exc})") from exc
    return _check_features(table, "body")


def _feature_rows(rows: list[dict[str, Any]]) -> pa.Table:
    for i, row in enumerate(rows):
        lid = row.get("learner_id")
        if not isinstance(lid, str) or not 0 < len(lid) <= MAX_LEARNER_ID_CHARS:
            raise FieldError(
                f"body.features.{i}.learner_id",
                f"expected a string of 1..{MAX_LEARNER_ID_CHARS} characters",
            )
    names = list(dict.fromkeys(key for row in rows for key in row))
    columns: dict[str, list[Any]] = {name: [row.get(name) for row in rows] for name in names}
    arrays = {}
    for name, values in columns.items():
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowException, TypeError, OverflowError) as exc:
            bad = next(
                (
                    j
                    for j, v in enumerate(values)
                    if v is not None
                    and type(v) is not type(next(x for x in values if x is not None))
                ),
                0,
            )
            raise FieldError(
                f"body.features.{bad}.{name}", f"mixed types in one column ({exc})"
            ) from exc
    return _check_features(pa.table(arrays), "body.features")


def _check_features(table: pa.Table, where: str) -> pa.Table:
    from cohortlens.features import FEATURE_SCHEMA

    if "learner_id" not in table.column_names:
        raise FieldError(where, "missing column learner_id")
    lid = table.column("learner_id")
    if not pa.types.is_string(lid.type) and not pa.types.is_large_string(lid.type):
        raise FieldError(f"{where}.learner_id", f"expected strings, got {lid.type}")
    if lid.null_count:
        raise FieldError(f"{where}.learner_id", f"{lid.null_count} null value(s)")
    known = {f.name: f.type for f in FEATURE_SCHEMA}
    out = {"learner_id": lid.cast(pa.string())}
    for name in table.column_names:
        if name == "learner_id":
            continue
        if name not in known:
            raise FieldError(
                f"{where}.{name}", "unknown feature column (docs/FEATURES.md lists the columns)"
            )
        col = table.column(name)
        want = known[name]
        if pa.types.is_timestamp(want):  # descriptive only; no model reads them
            continue
        if pa.types.is_null(col.type):
            out[name] = pa.nulls(len(col), want)
            continue
        numeric_ok = pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
        if (pa.types.is_floating(want) or pa.types.is_integer(want)) and not numeric_ok:
            raise FieldError(f"{where}.{name}", f"expected numbers, got {col.type}")
        try:
            out[name] = col.cast(want)
        except (pa.ArrowException, ValueError) as exc:
            raise FieldError(f"{where}.{name}", f"expected {want} ({exc})") from exc
    for name, typ in known.items():  # absent features are null (the model handles nulls)
        if name not in out and not pa.types.is_timestamp(typ):
            out[name] = pa.nulls(table.num_rows, typ)
    return pa.table(out)


def _features_from_events(
    svc: CohortService, events: list[s.EventIn]
) -> tuple[pa.Table, dict[str, Any]]:
    from cohortlens.events import validate_batch
    from cohortlens.features import compute_features

    source = events_source([e.model_dump() for e in events], "api:/v1/cohorts/assign")
    batch = next(source.batches())
    checked = validate_batch(batch, now=datetime.now(UTC))
    rejected = checked.rejected
    reasons: dict[str, int] = {}
    for r in rejected.column("reason").to_pylist():
        reasons[r] = reasons.get(r, 0) + 1
    report = {
        "rows_read": batch.n_rows,
        "accepted": checked.accepted.num_rows,
        "rejected": rejected.num_rows,
        "rejected_by_reason": reasons,
    }
    if checked.accepted.num_rows == 0:  # nothing to assign; the counts say why
        return pa.table({"learner_id": pa.array([], pa.string())}), report
    stats = svc.global_stats()
    known = set(stats.items.domains.to_pylist())
    unknown = sorted(set(checked.accepted.column("domain").to_pylist()) - known)
    if unknown:
        raise FieldError(
            "body.events.domain",
            f"domain(s) {', '.join(unknown[:5])} unknown to the stable model's feature run "
            f"(known: {', '.join(sorted(known)[:10])})",
        )
    features = compute_features(checked.accepted, stats=stats)
    return features, report


def _batch_role(routed: dict[str, int]) -> str:
    if routed.get("candidate") and routed.get("stable"):
        return "mixed"
    return "candidate" if routed.get("candidate") else "stable"


# -- the edge ---------------------------------------------------------------------------------
class _BodyTooLargeError(Exception):
    pass


class _Edge:
    """Outermost ASGI layer: limits, metrics, access log, 500 guard, look-up fast path."""

    def __init__(self, app: FastAPI, settings: ServeSettings, holder: dict[str, Any]) -> None:
        self.app = app
        self.settings = settings
        self.holder = holder
        self._api_key = settings.api_key.encode() if settings.api_key else None

    @property
    def fastapi(self) -> FastAPI:
        """The wrapped FastAPI application (for its OpenAPI document)."""
        return self.app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path: str = scope["path"]
        svc: CohortService | None = self.holder.get("service")
        if (
            svc is not None
            and scope["method"] == "GET"
            and path.startswith(_LOOKUP_PREFIX)
            and path.endswith(_LOOKUP_SUFFIX)
        ):
            learner_id = path[len(_LOOKUP_PREFIX) : -len(_LOOKUP_SUFFIX)]
            if "/" not in learner_id:
                await self._lookup(svc, scope, send, learner_id, start)
                return
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                started = True
            await send(message)

        limited = self._limit(scope, receive)
        if limited is None:
            await _send_json(send, 413, error_body("body_too_large", self._too_large()))
            status, started = 413, True
        else:
            try:
                await self.app(scope, limited, send_wrapper)
            except _BodyTooLargeError:
                if not started:
                    await _send_json(send, 413, error_body("body_too_large", self._too_large()))
                status = 413
            except Exception:
                log.exception("unhandled error on %s %s", scope["method"], _route_of(scope))
                if not started:
                    await _send_json(send, 500, error_body("internal", "internal server error"))
                status = 500
        elapsed = time.perf_counter() - start
        route = _route_of(scope)
        role = scope.get("cohortlens.role", "none")
        if svc is None:
            svc = self.holder.get("service")
        if svc is not None:
            svc.metrics.observe(route, scope["method"], status, role, "none", elapsed)
        if self.settings.access_log:
            access_log.info("%s %s %d %.2fms", scope["method"], route, status, elapsed * 1e3)

    def _too_large(self) -> str:
        return f"request body larger than {self.settings.max_body_bytes} bytes"

    def _limit(self, scope: Scope, receive: Receive) -> Receive | None:
        limit = self.settings.max_body_bytes
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    if int(value) > limit:
                        return None
                except ValueError:
                    return None
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLargeError
            return message

        return limited

    async def _lookup(
        self, svc: CohortService, scope: Scope, send: Send, learner_id: str, start: float
    ) -> None:
        if self._api_key is not None and not self._key_ok(scope):
            found_status, body, role, version = (
                401,
                error_body("unauthorized", "missing or wrong API key (X-API-Key header)"),
                "none",
                "none",
            )
        else:
            found = svc.lookup(learner_id)
            if found.delay_s:
                await asyncio.sleep(found.delay_s)
            found_status, body, role, version = found.status, found.body, found.role, found.version
        await _send_json(send, found_status, body)
        elapsed = time.perf_counter() - start
        svc.metrics.observe(LOOKUP_ROUTE, "GET", found_status, role, version, elapsed)
        if self.settings.access_log:
            who = learner_id if self.settings.log_learner_ids else _learner_hash(learner_id)
            access_log.info(
                "GET %s %d %.2fms learner=%s", LOOKUP_ROUTE, found_status, elapsed * 1e3, who
            )

    def _key_ok(self, scope: Scope) -> bool:
        assert self._api_key is not None
        for key, value in scope.get("headers", ()):
            if key == b"x-api-key" or (key == b"authorization" and value[:7].lower() == b"bearer "):
                presented = value if key == b"x-api-key" else value[7:].strip()
                if secrets.compare_digest(presented, self._api_key):
                    return True
        return False


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


async def _send_json(send: Send, status: int, body: bytes) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _poll_routing(svc: CohortService) -> None:
    """Apply routing changes made through any replica within ``routing_poll_s``."""
    while True:
        await asyncio.sleep(svc.settings.routing_poll_s)
        try:
            await run_in_threadpool(functools.partial(svc.refresh, wait_s=BACKGROUND_WAIT_S))
        except StoreBusyError:  # another process's turn; logged once by the service
            pass
        except Exception as exc:  # keep serving the last good snapshot
            log.warning("routing poll failed (%s); serving the last loaded routing", exc)


async def _flush_exposures(svc: CohortService) -> None:
    """Write buffered exposure records every ``exposure_flush_s``."""
    while True:
        await asyncio.sleep(svc.settings.exposure_flush_s)
        try:
            await run_in_threadpool(svc.flush_exposures)
        except StoreBusyError:  # the records are in the spool; applied at a later flush
            pass
        except Exception as exc:  # records stay buffered for the next attempt
            log.warning("exposure flush failed (%s); will retry", exc)
