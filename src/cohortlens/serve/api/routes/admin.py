"""Admin routes: routing between model versions, model status, reload, fault injection.

Mounted only when ``$COHORTLENS_ADMIN_TOKEN`` is set; each needs it as a bearer token. POST
routes take an optional body (``{"reason": ...}``): an empty body is the same as ``{}``.
Weights are **percent** (``weight_percent``, 0–100), like the rollout spec's ``set_weight``;
the store keeps the fraction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi import Path as FastAPIPath
from starlette.concurrency import run_in_threadpool

from cohortlens.errors import InputError, StoreError
from cohortlens.serve import schemas as s
from cohortlens.serve.api.deps import AdminAccess, ServiceDep
from cohortlens.serve.api.errors import responses
from cohortlens.serve.service import (
    CohortService,
    NotFoundError,
    StateConflictError,
    routing_to_dict,
)

ModelId = Annotated[int, FastAPIPath(ge=1, le=2**53)]
#: An optional ``{"reason": ...}``: no body, an empty body and ``{}`` all mean "no reason".
OptionalReason = Annotated[s.ReasonRequest | None, Body()]


def _admin_router() -> APIRouter:
    """Under ``/v1/admin``: the admin token, the ``admin`` tag, the shared error codes."""
    return APIRouter(
        prefix="/v1/admin",
        tags=["admin"],
        dependencies=[AdminAccess],
        responses=responses(401, 404, 409, 422, 503),
    )


router = _admin_router()
#: ``PUT /v1/admin/faults``, mounted only with ``--enable-fault-injection``.
faults_router = _admin_router()


async def _apply(svc: CohortService, fn: Callable[[Any], Any]) -> dict[str, Any]:
    """Run one routing change in the store, then reload this replica's snapshot at once."""
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


def _reason(req: s.ReasonRequest | None) -> str | None:
    return req.reason if req is not None else None


@router.get("/routing", response_model=s.RoutingInfo, summary="The routing record")
async def get_routing(svc: ServiceDep) -> dict[str, Any]:
    return await run_in_threadpool(svc.routing_dict)


@router.put(
    "/routing/candidate",
    response_model=s.RoutingInfo,
    summary="Start a release: this model becomes the candidate at weight 0 (new salt)",
)
async def put_candidate(req: s.CandidateRequest, svc: ServiceDep) -> dict[str, Any]:
    return await _apply(
        svc, lambda st: st.start_release(req.model_id, actor="api", reason=req.reason)
    )


@router.put(
    "/routing/weight",
    response_model=s.RoutingInfo,
    summary="Set the candidate's share of learners, in percent",
)
async def put_weight(req: s.WeightRequest, svc: ServiceDep) -> dict[str, Any]:
    return await _apply(
        svc,
        lambda st: st.set_candidate_weight(
            req.weight_percent / 100.0,
            actor="api",
            reason=req.reason,
            expected_revision=req.expected_revision,
        ),
    )


@router.put(
    "/routing/overrides",
    response_model=s.RoutingInfo,
    summary="Route these learners (QA, pilots) to the candidate whatever the weight",
)
async def put_overrides(req: s.OverridesRequest, svc: ServiceDep) -> dict[str, Any]:
    return await _apply(
        svc,
        lambda st: st.set_overrides(
            req.learner_ids,
            actor="api",
            reason=req.reason,
            expected_revision=req.expected_revision,
        ),
    )


@router.post(
    "/routing/promote",
    response_model=s.RoutingInfo,
    summary="The candidate becomes the stable model",
)
async def promote(svc: ServiceDep, req: OptionalReason = None) -> dict[str, Any]:
    return await _apply(svc, lambda st: st.promote_candidate(actor="api", reason=_reason(req)))


@router.post(
    "/routing/clear",
    response_model=s.RoutingInfo,
    summary="Route everybody to the stable model and retire the candidate",
)
async def clear(svc: ServiceDep, req: OptionalReason = None) -> dict[str, Any]:
    return await _apply(svc, lambda st: st.clear_candidate(actor="api", reason=_reason(req)))


@router.post(
    "/models/{model_id}/activate",
    response_model=s.RoutingInfo,
    summary="Make a model the stable one at once (no rollout)",
)
async def activate(model_id: ModelId, svc: ServiceDep) -> dict[str, Any]:
    def run(st: Any) -> Any:
        st.model(model_id)
        st.set_model_status(model_id, "active")
        return st.routing()

    return await _apply(svc, run)


@router.post(
    "/models/{model_id}/retire",
    response_model=s.RoutingInfo,
    summary="Retire a model that is neither stable nor candidate",
)
async def retire(model_id: ModelId, svc: ServiceDep) -> dict[str, Any]:
    def run(st: Any) -> Any:
        st.model(model_id)
        routing = st.routing()
        if model_id in (routing.stable_model_id, routing.candidate_model_id):
            raise StateConflictError(
                f"model {model_id} is being served; promote or clear the routing first"
            )
        st.set_model_status(model_id, "retired")
        return routing

    return await _apply(svc, run)


@router.post(
    "/reload", response_model=s.RoutingInfo, summary="Reload models and routing from the store now"
)
async def reload(svc: ServiceDep) -> dict[str, Any]:
    await run_in_threadpool(svc.refresh, force=True)
    return await run_in_threadpool(svc.routing_dict)


@faults_router.put(
    "/faults",
    response_model=s.FaultsRequest,
    summary="Inject candidate faults (chaos testing; --enable-fault-injection)",
)
async def put_faults(req: s.FaultsRequest, svc: ServiceDep) -> dict[str, float]:
    f = svc.set_faults(req.candidate_error_rate, req.candidate_latency_ms)
    return {
        "candidate_error_rate": f.candidate_error_rate,
        "candidate_latency_ms": f.candidate_latency_ms,
    }
