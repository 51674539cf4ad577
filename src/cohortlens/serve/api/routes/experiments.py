"""Experiment assignment: a learner's variant, deterministic, its exposure logged."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from cohortlens.serve import schemas as s
from cohortlens.serve.api.deps import ReadAccess, ServiceDep
from cohortlens.serve.api.errors import responses
from cohortlens.serve.service import MAX_LEARNER_ID_CHARS

router = APIRouter(tags=["experiments"], dependencies=[ReadAccess])


@router.get(
    # ``:anything`` (see routes/__init__.py) so that any decoded name matches, "/" included
    "/v1/experiments/{key:anything}/assignment",
    response_model=s.ExperimentAssignment,
    responses=responses(401, 404, 422),
    summary="A learner's variant (deterministic; the exposure is logged)",
)
async def experiment_assignment(
    key: Annotated[str, Path(description="The experiment's name, URL-encoded.")],
    learner_id: Annotated[
        str,
        Query(
            min_length=1,
            max_length=MAX_LEARNER_ID_CHARS,
            description="The learner id, URL-encoded as a query value.",
        ),
    ],
    svc: ServiceDep,
) -> dict[str, Any]:
    return svc.experiment_assignment(key, learner_id)
