"""Routing transitions and rollout-state encoding shared by every store backend.

Pure: each ``plan_*`` takes the current routing row and returns the row to write and the
``cohort_models`` status changes; the backends only lock, read and apply (``_state_sql``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from cohortlens.errors import InputError, StoreError
from cohortlens.store.base import MODEL_STATUSES, SALT_BYTES, ConflictError, Routing

_SALT_RE = re.compile(f"[0-9a-f]{{{2 * SALT_BYTES}}}")


@dataclass(frozen=True)
class Plan:
    """What one routing operation writes.

    ``routing`` is the row after the change (the current row when ``changed`` is false);
    ``activate`` names a model that becomes the only active one (every other active model is
    retired first); ``statuses`` are further ``cohort_models`` updates, applied in order.
    """

    routing: Routing
    changed: bool
    activate: int | None = None
    statuses: tuple[tuple[int, str], ...] = ()


def new_salt() -> str:
    """A fresh random release salt (hex)."""
    return secrets.token_hex(SALT_BYTES)


def check_salt(value: str) -> str:
    """A caller-supplied release salt: the format of :func:`new_salt` (lowercase hex).

    Only simulations and tests supply salts (to be reproducible); real releases draw one.
    """
    if not isinstance(value, str) or not _SALT_RE.fullmatch(value):
        raise InputError(f"salt: expected {2 * SALT_BYTES} lowercase hex characters, got {value!r}")
    return value


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (backends return different tzinfo objects)."""
    return value.astimezone(UTC)


def aware(value: datetime, field: str) -> datetime:
    """Reject naive datetimes: a store records instants, and naive ones are ambiguous."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InputError(f"{field}: expected a timezone-aware datetime, got {value!r}")
    return utc(value)


def name(value: str, field: str) -> str:
    """A non-empty identifier (actor, rollout, lease, holder, event kind)."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{field}: expected a non-empty string, got {value!r}")
    return value


def optional_text(value: str | None, field: str) -> str | None:
    """None or a string."""
    if value is not None and not isinstance(value, str):
        raise InputError(f"{field}: expected a string or None, got {value!r}")
    return value


def weight(value: float) -> float:
    """A candidate weight: a finite fraction in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"weight: expected a number in [0, 1], got {value!r}")
    w = float(value)
    if not math.isfinite(w) or not 0.0 <= w <= 1.0:
        raise InputError(f"weight: expected a fraction in [0, 1], got {value!r}")
    return w


def status(value: str) -> str:
    """A cohort-model status."""
    if value not in MODEL_STATUSES:
        raise InputError(f"status: expected one of {', '.join(MODEL_STATUSES)}, got {value!r}")
    return value


def dumps(value: Any, field: str) -> str:
    """Canonical JSON (sorted keys, no NaN/Infinity): the same text, hence hash, everywhere."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"{field}: expected JSON-serializable data with finite numbers: {exc}"
        ) from None


def loads(value: Any) -> Any:
    """A JSON column's value (DuckDB returns text, psycopg already-parsed JSONB)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def spec_hash(spec_json: str) -> str:
    """SHA-256 of a spec's canonical JSON."""
    return hashlib.sha256(spec_json.encode()).hexdigest()


def routing_from_row(row: tuple[Any, ...]) -> Routing:
    """A ``model_routing`` row (columns in :data:`ROUTING_COLUMNS` order) as :class:`Routing`."""
    stable, candidate, w, salt, release_id, revision, updated_at, updated_by, reason, ov = row
    return Routing(
        stable_model_id=None if stable is None else int(stable),
        candidate_model_id=None if candidate is None else int(candidate),
        candidate_weight=float(w),
        salt=str(salt),
        release_id=int(release_id),
        revision=int(revision),
        updated_at=utc(updated_at),
        updated_by=str(updated_by),
        reason=reason,
        overrides=tuple(str(x) for x in (loads(ov) if ov is not None else [])),
    )


#: ``model_routing`` columns in :class:`Routing` field order.
ROUTING_COLUMNS = (
    "stable_model_id, candidate_model_id, candidate_weight, salt, release_id, revision, "
    "updated_at, updated_by, reason, overrides"
)


def routing_values(r: Routing) -> list[Any]:
    """Parameters for :data:`ROUTING_COLUMNS`."""
    return [
        r.stable_model_id,
        r.candidate_model_id,
        r.candidate_weight,
        r.salt,
        r.release_id,
        r.revision,
        r.updated_at,
        r.updated_by,
        r.reason,
        dumps(list(r.overrides), "overrides"),
    ]


def overrides(value: Any) -> tuple[str, ...]:
    """Override learner ids: non-empty strings, returned sorted and without repeats."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise InputError(f"learner_ids: expected a list of learner ids, got {value!r}")
    for i, learner in enumerate(value):
        if not isinstance(learner, str) or not learner.strip():
            raise InputError(f"learner_ids[{i}]: expected a non-empty string, got {learner!r}")
    return tuple(sorted(set(value)))


def initial_routing(stable_model_id: int | None, now: datetime) -> Routing:
    """The row created on first use: no candidate, weight 0, a fresh salt, release 0."""
    return Routing(
        stable_model_id=stable_model_id,
        candidate_model_id=None,
        candidate_weight=0.0,
        salt=new_salt(),
        release_id=0,
        revision=0,
        updated_at=now,
        updated_by="system",
        reason=None,
    )


def check_revision(current: int, expected: int | None, what: str = "routing") -> None:
    """ConflictError when ``expected`` is given and differs from ``current``."""
    if expected is not None and expected != current:
        raise ConflictError(
            f"{what} revision is {current}, not the expected {expected}: "
            "another writer changed it; reload and retry"
        )


def _next(cur: Routing, now: datetime, actor: str, reason: str | None, **fields: Any) -> Routing:
    return replace(
        cur, revision=cur.revision + 1, updated_at=now, updated_by=actor, reason=reason, **fields
    )


def plan_activate(
    cur: Routing, model_id: int, *, now: datetime, actor: str, reason: str | None
) -> Plan:
    """``model_id`` becomes the only active model and the stable one (no longer a candidate)."""
    fields: dict[str, Any] = {}
    if cur.stable_model_id != model_id:
        fields["stable_model_id"] = model_id
    if cur.candidate_model_id == model_id:
        fields |= {"candidate_model_id": None, "candidate_weight": 0.0, "overrides": ()}
    new = _next(cur, now, actor, reason, **fields) if fields else cur
    return Plan(new, bool(fields), activate=model_id, statuses=((model_id, "active"),))


def plan_status(
    cur: Routing, model_id: int, new_status: str, *, now: datetime, actor: str, reason: str | None
) -> Plan:
    """Set one model's status, keeping the routing row consistent with it.

    'active' is :func:`plan_activate`; demoting the stable model leaves no stable model;
    retiring the candidate clears it (weight 0).
    """
    if new_status == "active":
        return plan_activate(cur, model_id, now=now, actor=actor, reason=reason)
    fields: dict[str, Any] = {}
    if cur.stable_model_id == model_id:
        fields["stable_model_id"] = None
    if cur.candidate_model_id == model_id and new_status == "retired":
        fields |= {"candidate_model_id": None, "candidate_weight": 0.0, "overrides": ()}
    new = _next(cur, now, actor, reason, **fields) if fields else cur
    return Plan(new, bool(fields), statuses=((model_id, new_status),))


def plan_start_release(
    cur: Routing,
    model_id: int,
    model_status: str,
    *,
    salt: str,
    now: datetime,
    actor: str,
    reason: str | None,
) -> Plan:
    """A new release: ``model_id`` is the candidate at weight 0, with a new salt.

    A different previous candidate is retired (its release is abandoned).
    """
    if model_id == cur.stable_model_id or model_status == "active":
        raise StoreError(f"model {model_id} is the stable model; it cannot be a candidate")
    statuses: list[tuple[int, str]] = []
    if cur.candidate_model_id is not None and cur.candidate_model_id != model_id:
        statuses.append((cur.candidate_model_id, "retired"))
    statuses.append((model_id, "candidate"))
    new = _next(
        cur,
        now,
        actor,
        reason,
        candidate_model_id=model_id,
        candidate_weight=0.0,
        salt=salt,
        release_id=cur.release_id + 1,
        overrides=(),
    )
    return Plan(new, True, statuses=tuple(statuses))


def plan_weight(cur: Routing, w: float, *, now: datetime, actor: str, reason: str | None) -> Plan:
    """Route fraction ``w`` of learners to the candidate (InputError without one)."""
    if cur.candidate_model_id is None:
        raise InputError("weight: there is no candidate model; start a release first")
    return Plan(_next(cur, now, actor, reason, candidate_weight=w), True)


def plan_overrides(
    cur: Routing, ids: tuple[str, ...], *, now: datetime, actor: str, reason: str | None
) -> Plan:
    """Route exactly ``ids`` to the candidate whatever the weight (InputError without one,
    unless the list is empty: removing overrides always works)."""
    if cur.overrides == ids:
        return Plan(cur, False)
    if cur.candidate_model_id is None and ids:
        raise InputError("overrides: there is no candidate model; start a release first")
    return Plan(_next(cur, now, actor, reason, overrides=ids), True)


def plan_promote(cur: Routing, *, now: datetime, actor: str, reason: str | None) -> Plan:
    """The candidate becomes the stable model; the old stable is retired; the salt is kept."""
    candidate = cur.candidate_model_id
    if candidate is None:
        raise InputError("promote: there is no candidate model to promote")
    new = _next(
        cur,
        now,
        actor,
        reason,
        stable_model_id=candidate,
        candidate_model_id=None,
        candidate_weight=0.0,
        overrides=(),
    )
    return Plan(new, True, activate=candidate, statuses=((candidate, "active"),))


def plan_clear(
    cur: Routing, *, retire: bool, now: datetime, actor: str, reason: str | None
) -> Plan:
    """Drop the candidate (weight 0); a no-op when there is none, so a rollback can repeat."""
    candidate = cur.candidate_model_id
    if candidate is None:
        return Plan(cur, False)
    new = _next(
        cur, now, actor, reason, candidate_model_id=None, candidate_weight=0.0, overrides=()
    )
    return Plan(new, True, statuses=((candidate, "retired"),) if retire else ())


def log_entry(row: tuple[Any, ...]) -> dict[str, Any]:
    """A ``routing_log`` row (revision, at, actor, reason, routing JSON) as a dict."""
    revision, at, actor, reason, routing = row
    return {
        "revision": int(revision),
        "at": utc(at),
        "actor": actor,
        "reason": reason,
        "routing": loads(routing),
    }
