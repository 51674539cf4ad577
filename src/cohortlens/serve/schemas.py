"""Request and response bodies of the HTTP API (they make the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    create_model,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

#: A JSON scalar a feature or event field may hold.
Scalar = float | int | str | bool | None


class ErrorBody(BaseModel):
    """Every error: a stable code, a message, and the offending field when there is one."""

    error: str = Field(examples=["invalid_request"])
    message: str
    field: str | None = Field(default=None, examples=["body.features.3.velocity"])


class LearnerCohort(BaseModel):
    """The cohort of one learner under the routed model."""

    learner_id: str
    cohort_id: int
    archetype: str
    model_version: int = Field(description="Id of the model that answered.")
    model_role: Literal["stable", "candidate", "override"] = Field(
        description="Role of the model the learner is routed to (override: the candidate, "
        "for a learner on the release's override list)."
    )
    provisional: bool = Field(
        default=False,
        description="True for a learner the model has not seen: scored from the learner's "
        "stored events until the next feature run and discover (docs/SERVING.md).",
    )


class EventIn(BaseModel):
    """One interaction event, before validation (the same rules as `cohortlens ingest`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    learner_id: str | int | None = None
    ts: str | int | float | None = Field(
        default=None, description="ISO 8601 with offset, or epoch seconds / milliseconds."
    )
    domain: str | None = None
    item_id: str | int | None = None
    outcome: float | int | bool | None = Field(default=None, description="In [0, 1].")
    duration_s: float | int | None = None
    event_id: str | None = None


def _json_integer(value: object) -> object:
    """Accept what JSON Schema calls an integer (3 or 3.0), nothing else (no true, no "3")."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected an integer, got {type(value).__name__}")
    return value


def _feature_row_model() -> type[BaseModel]:
    """One learner's feature row: learner_id plus any feature column of docs/FEATURES.md."""
    import pyarrow as pa

    from cohortlens.features import FEATURE_SCHEMA

    fields: dict[str, Any] = {
        "learner_id": (str, Field(min_length=1, max_length=256)),
    }
    for f in FEATURE_SCHEMA:
        if f.name == "learner_id":
            continue
        if pa.types.is_integer(f.type):  # counts; 3.0 is a JSON integer, true is not
            count = Annotated[
                int, Field(ge=0, le=2**53, strict=False), BeforeValidator(_json_integer)
            ]
            fields[f.name] = (count | None, None)
        elif pa.types.is_floating(f.type):
            fields[f.name] = (float | int | None, Field(default=None, allow_inf_nan=False))
        else:  # labels and timestamps (ISO 8601): descriptive, not clustered on
            fields[f.name] = (str | None, Field(default=None, max_length=256))
    return create_model(
        "FeatureRow",
        __config__=ConfigDict(extra="forbid", strict=True),
        __doc__="One learner: learner_id plus feature columns (missing ones are null).",
        **fields,
    )


FeatureRow: Any = _feature_row_model()


class AssignByFeatures(BaseModel):
    """Learners given by their feature rows."""

    model_config = ConfigDict(extra="forbid")

    features: list[FeatureRow] = Field(
        min_length=1,
        description="One object per learner: learner_id plus feature columns "
        "(docs/FEATURES.md); missing features count as null.",
    )


class AssignByEvents(BaseModel):
    """Learners given by their recent events (features computed as in a feature run)."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(
        min_length=1, description="Canonical events of the learners to assign."
    )


class AssignRequest(
    # left to right: a body of feature rows is validated once, not against both forms (pydantic's
    # default "smart" union tried both: 235 -> 80 ms for 10,000 rows); extra="forbid" on each
    # form still rejects a body with both keys
    RootModel[Annotated[AssignByFeatures | AssignByEvents, Field(union_mode="left_to_right")]]
):
    """Learners to assign: feature rows, or recent events (exactly one of the two)."""


class Assignment(BaseModel):
    """One learner's assignment."""

    learner_id: str
    cohort_id: int
    archetype: str
    model_version: int
    model_role: Literal["stable", "candidate", "override"]


class AssignResponse(BaseModel):
    """Assignments in input order, and how many learners each routed role answered."""

    assignments: list[Assignment]
    routed: dict[str, int]
    events: dict[str, object] | None = Field(
        default=None, description="Validation counts when events were given."
    )
    ood: dict[str, dict[str, Any]] | None = Field(
        default=None,
        description="Per answering role (stable, candidate): how far these learners lie from "
        "the model's training data: share_beyond (share farther from every centre than the "
        "training 99th-percentile distance; ~0.01 on similar data), PSI per feature, and a "
        "warning above the service's limit (docs/SERVING.md). Arrow answers carry the "
        "headline figures in the X-Cohortlens-Ood header.",
    )


class EventsRequest(BaseModel):
    """A small batch of events to validate and store."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1)


class EventsResponse(BaseModel):
    """What happened to each row: the counting invariant holds (read = accepted + rejected + duplicates)."""

    rows_read: int
    accepted: int
    rejected: int
    duplicates: int | None = Field(
        description="Rows already stored; null while the rows wait in the spool (202)."
    )
    rejected_by_reason: dict[str, int]
    status: Literal["stored", "queued"] = Field(
        description="stored: in the store now (200); queued: durable in the service's spool, "
        "stored when the store is free (202)."
    )


class ExperimentAssignment(BaseModel):
    """A learner's variant in an experiment (null when not in the experiment)."""

    experiment: str
    learner_id: str
    variant: str | None
    status: str
    bucket: int
    hash_version: str


class ModelInfo(BaseModel):
    """A stored cohort model."""

    model_id: int
    created_at: str | None
    feature_run_id: int | None
    status: str
    role: Literal["stable", "candidate", "none"]


class RoutingInfo(BaseModel):
    """The routing record shared by every replica."""

    stable_model_id: int | None
    candidate_model_id: int | None
    candidate_weight_percent: float = Field(
        description="Percent of learners routed to the candidate (0-100)."
    )
    salt: str
    release_id: int
    revision: int
    updated_at: str | None
    updated_by: str
    reason: str | None
    overrides: list[str] = Field(
        default_factory=list,
        description="Learners routed to the candidate whatever the weight (QA, pilots).",
    )


class ModelsResponse(BaseModel):
    """Every model and the routing in force."""

    routing: RoutingInfo
    models: list[ModelInfo]


class WeightRequest(BaseModel):
    """Set the candidate's share of learners, in percent (as the rollout spec's ``set_weight``)."""

    model_config = ConfigDict(extra="forbid")

    # Not in the schema: the unit-less name of older clients, refused with a message that
    # says which unit to send instead of a bare "extra inputs are not permitted" (declared
    # first, so that it is the error the 422 names).
    weight: SkipJsonSchema[Any] = Field(default=None, exclude=True)
    weight_percent: float = Field(
        ge=0.0,
        le=100.0,
        allow_inf_nan=False,
        description="Percent of learners routed to the candidate: 10 means 10 % "
        "(resolution 0.01 %, one routing bucket).",
        examples=[1, 10, 100],
    )
    expected_revision: int | None = Field(default=None, ge=0, le=2**53)
    reason: str | None = Field(default=None, max_length=500)

    @field_validator("weight", mode="before")
    @classmethod
    def _unit_named(cls, value: object) -> object:
        raise ValueError(
            f"got weight={value!r}; weights are percent and the field is weight_percent "
            '(0-100): {"weight_percent": 10} routes 10 % of learners to the candidate'
        )


class CandidateRequest(BaseModel):
    """Start a release with this model as candidate (weight 0, new salt)."""

    model_config = ConfigDict(extra="forbid")

    model_id: int = Field(ge=1, le=2**53)
    reason: str | None = Field(default=None, max_length=500)


class OverridesRequest(BaseModel):
    """Route exactly these learners to the candidate whatever the weight (empty: none)."""

    model_config = ConfigDict(extra="forbid")

    learner_ids: list[str] = Field(max_length=10_000)
    expected_revision: int | None = Field(default=None, ge=0, le=2**53)
    reason: str | None = Field(default=None, max_length=500)


class ReasonRequest(BaseModel):
    """An optional reason recorded with an admin action."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)


class FaultsRequest(BaseModel):
    """Faults injected into the candidate (chaos tests only)."""

    model_config = ConfigDict(extra="forbid")

    candidate_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    candidate_latency_ms: float = Field(default=0.0, ge=0.0, le=60_000.0)


class Status(BaseModel):
    """Liveness / readiness."""

    status: str
    detail: str | None = None
    store: Literal["busy"] | None = Field(
        default=None,
        description="busy: another process holds the embedded store; the loaded state answers.",
    )
