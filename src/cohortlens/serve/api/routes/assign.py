"""Batch assignment: ``POST /v1/cohorts/assign`` (feature rows, events, or an Arrow stream).

The body is parsed by hand (two JSON forms and Arrow IPC share one route), so its OpenAPI
schema is declared in ``openapi_extra`` and merged into the document by
:func:`cohortlens.serve.api.main.openapi_document`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from cohortlens.serve import schemas as s
from cohortlens.serve.api.deps import ReadAccess, ServiceDep, SettingsDep
from cohortlens.serve.api.errors import json_error, responses, validation_response
from cohortlens.serve.service import (
    MAX_LEARNER_ID_CHARS,
    CohortService,
    FieldError,
    events_source,
)

ARROW_STREAM = "application/vnd.apache.arrow.stream"

router = APIRouter(tags=["cohorts"], dependencies=[ReadAccess])


@router.post(
    "/v1/cohorts/assign",
    response_model=s.AssignResponse,
    responses=responses(401, 413, 415, 422, 503),
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
async def assign_cohorts(request: Request, svc: ServiceDep, settings: SettingsDep) -> Response:
    body = await request.body()
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
    events_report: dict[str, Any] | None = None
    if ctype == ARROW_STREAM:
        features = _read_arrow(body)
    elif ctype in ("application/json", ""):
        try:
            req = s.AssignRequest.model_validate_json(body).root
        except ValidationError as exc:
            return validation_response(_assign_errors(exc, body), prefix=("body",))
        if isinstance(req, s.AssignByFeatures):
            features = _feature_rows([row.model_dump(exclude_unset=True) for row in req.features])
        else:
            features, events_report = await run_in_threadpool(
                _features_from_events, svc, req.events
            )
    else:
        return json_error(415, "unsupported_media_type", f"use application/json or {ARROW_STREAM}")
    if features.num_rows > settings.max_assign_learners:
        return json_error(
            413,
            "too_many_learners",
            f"{features.num_rows} learners in one request; at most {settings.max_assign_learners}",
        )
    if features.num_rows == 0:
        payload0: dict[str, Any] = {"assignments": [], "routed": {"stable": 0, "candidate": 0}}
        if events_report is not None:
            payload0["events"] = events_report
        return JSONResponse(payload0)
    table, routed = await run_in_threadpool(svc.assign_features, features)
    ood = await run_in_threadpool(svc.out_of_distribution, features, table)
    request.scope["cohortlens.role"] = _batch_role(routed)
    if ARROW_STREAM in request.headers.get("accept", ""):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        brief = {
            role: {k: o[k] for k in ("share_beyond", "n_assessed", "warning", "model_version")}
            for role, o in ood.items()
        }
        return Response(
            sink.getvalue().to_pybytes(),
            media_type=ARROW_STREAM,
            headers={"X-Cohortlens-Ood": json.dumps(brief, separators=(",", ":"))},
        )
    payload: dict[str, Any] = {"assignments": table.to_pylist(), "routed": routed, "ood": ood}
    if events_report is not None:
        payload["events"] = events_report
    return JSONResponse(payload)


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _assign_errors(exc: ValidationError, body: bytes) -> list[dict[str, Any]]:
    """The errors of the alternative the client meant (pydantic reports both union members)."""
    members = {"features": "AssignByFeatures", "events": "AssignByEvents"}
    try:
        sent = json.loads(body)
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
