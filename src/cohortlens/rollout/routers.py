"""Traffic routers: how a decided weight reaches the service.

* :class:`StoreRouter` writes the store's routing row (``set_candidate_weight`` etc.);
  service replicas poll ``routing_revision()`` and apply a change within their poll
  interval. Use it when replicas share a PostgreSQL store.
* :class:`AdminApiRouter` calls the service's admin HTTP API, for a single server that owns
  its DuckDB file (no other process may open it). The API speaks percent
  (``weight_percent``); the router converts to and from the controller's fractions.

Both take ``expected_revision`` on weight changes, so a controller never overwrites a
routing change it has not seen (:class:`~cohortlens.store.base.ConflictError`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from cohortlens.errors import CohortlensError, InputError, StoreError
from cohortlens.store.base import ConflictError, Routing


class RouterError(CohortlensError):
    """The router could not be reached or refused the change; the controller retries."""

    exit_code = 3


class TrafficRouter(Protocol):
    """Reads and changes the routing of learners between the stable and candidate models."""

    def routing(self) -> Routing:
        """The routing in force."""

    def start_release(self, model_id: int, *, reason: str) -> Routing:
        """Make ``model_id`` the candidate (weight 0, new salt)."""

    def set_weight(self, weight: float, *, reason: str, expected_revision: int | None) -> Routing:
        """Route fraction ``weight`` of learners to the candidate."""

    def promote(self, *, reason: str, expected_revision: int | None) -> Routing:
        """The candidate becomes the stable model."""

    def clear_candidate(self, *, reason: str, expected_revision: int | None) -> Routing:
        """Unload the candidate (weight 0, no candidate; it is retired)."""

    def set_overrides(
        self, learner_ids: tuple[str, ...], *, reason: str, expected_revision: int | None
    ) -> Routing:
        """Route exactly these learners to the candidate whatever the weight."""

    def recent_stable_models(self, limit: int) -> list[int]:
        """The last ``limit`` models that were stable before the current one, newest first."""


class StoreRouter:
    """Routing changes as store transactions (each one also appends to ``routing_log``).

    ``salts``, when given, supplies the salt of every release it starts (simulations derive
    them from their seed); otherwise the store draws a fresh random salt per release.
    """

    def __init__(self, store: Any, actor: str, *, salts: Callable[[], str] | None = None) -> None:
        self.store = store
        self.actor = actor
        self.salts = salts

    def routing(self) -> Routing:
        """The store's routing row."""
        return self.store.routing()

    def start_release(self, model_id: int, *, reason: str) -> Routing:
        """``store.start_release`` (with the next of ``salts`` when given)."""
        salt = None if self.salts is None else self.salts()
        return self.store.start_release(model_id, actor=self.actor, reason=reason, salt=salt)

    def set_weight(self, weight: float, *, reason: str, expected_revision: int | None) -> Routing:
        """``store.set_candidate_weight`` with optimistic concurrency."""
        return self.store.set_candidate_weight(
            weight, actor=self.actor, reason=reason, expected_revision=expected_revision
        )

    def promote(self, *, reason: str, expected_revision: int | None) -> Routing:
        """``store.promote_candidate``."""
        return self.store.promote_candidate(
            actor=self.actor, reason=reason, expected_revision=expected_revision
        )

    def clear_candidate(self, *, reason: str, expected_revision: int | None) -> Routing:
        """``store.clear_candidate`` (the candidate is retired)."""
        return self.store.clear_candidate(
            actor=self.actor, reason=reason, retire=True, expected_revision=expected_revision
        )

    def set_overrides(
        self, learner_ids: tuple[str, ...], *, reason: str, expected_revision: int | None
    ) -> Routing:
        """``store.set_overrides``."""
        return self.store.set_overrides(
            list(learner_ids), actor=self.actor, reason=reason, expected_revision=expected_revision
        )

    def recent_stable_models(self, limit: int) -> list[int]:
        """From the routing log: models stable before the current one, newest first."""
        return recent_stable_models(
            self.store.routing_history(), self.store.routing().stable_model_id, limit
        )


def recent_stable_models(
    history: list[dict[str, Any]], current: int | None, limit: int
) -> list[int]:
    """Distinct stable models of a routing log (oldest first), newest first, not ``current``."""
    seen: list[int] = []
    for entry in reversed(history):
        model = entry["routing"].get("stable_model_id")
        if model is None or model == current or model in seen:
            continue
        seen.append(int(model))
        if len(seen) >= limit:
            break
    return seen


class AdminApiRouter:
    """Routing changes through ``/v1/admin/routing/*`` of one service (bearer token)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float = 5.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout_s)
        self._headers = {"Authorization": f"Bearer {token}"}

    @classmethod
    def from_env(cls, url: str, token_env: str, *, timeout_s: float = 5.0) -> AdminApiRouter:
        """Token from the environment variable ``token_env``.

        Raises:
            InputError: the variable is unset or empty.
        """
        token = os.environ.get(token_env, "")
        if not token:
            raise InputError(
                f"router.token_env: ${token_env} is not set; the admin API needs its bearer token"
            )
        return cls(url, token, timeout_s=timeout_s)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Routing:
        try:
            resp = self._client.request(method, self.url + path, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise RouterError(f"{self.url}{path}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code == 409:
            raise ConflictError(f"{self.url}{path}: routing changed meanwhile ({_message(resp)})")
        if resp.status_code in (401, 403):
            raise RouterError(f"{self.url}{path}: HTTP {resp.status_code}: check the admin token")
        if resp.status_code == 422 or resp.status_code == 404:
            raise StoreError(f"{self.url}{path}: HTTP {resp.status_code}: {_message(resp)}")
        if resp.status_code != 200:
            raise RouterError(f"{self.url}{path}: HTTP {resp.status_code}: {_message(resp)}")
        data = resp.json()
        at = data.get("updated_at")
        return Routing(
            stable_model_id=data.get("stable_model_id"),
            candidate_model_id=data.get("candidate_model_id"),
            candidate_weight=float(data["candidate_weight_percent"]) / 100.0,
            salt=str(data["salt"]),
            release_id=int(data["release_id"]),
            revision=int(data["revision"]),
            updated_at=datetime.fromisoformat(at) if at else datetime.now(UTC),
            updated_by=str(data.get("updated_by") or ""),
            reason=data.get("reason"),
            overrides=tuple(str(x) for x in data.get("overrides") or ()),
        )

    def routing(self) -> Routing:
        """``GET /v1/admin/routing``."""
        return self._call("GET", "/v1/admin/routing")

    def start_release(self, model_id: int, *, reason: str) -> Routing:
        """``PUT /v1/admin/routing/candidate``."""
        return self._call(
            "PUT", "/v1/admin/routing/candidate", {"model_id": model_id, "reason": reason}
        )

    def set_weight(self, weight: float, *, reason: str, expected_revision: int | None) -> Routing:
        """``PUT /v1/admin/routing/weight`` with the fraction ``weight`` as percent (409 when
        ``expected_revision`` is stale)."""
        return self._call(
            "PUT",
            "/v1/admin/routing/weight",
            {
                "weight_percent": round(weight * 100.0, 6),
                "expected_revision": expected_revision,
                "reason": reason,
            },
        )

    def promote(self, *, reason: str, expected_revision: int | None) -> Routing:
        """``POST /v1/admin/routing/promote`` (the API takes no revision)."""
        return self._call("POST", "/v1/admin/routing/promote", {"reason": reason})

    def clear_candidate(self, *, reason: str, expected_revision: int | None) -> Routing:
        """``POST /v1/admin/routing/clear`` (retires the candidate; takes no revision)."""
        return self._call("POST", "/v1/admin/routing/clear", {"reason": reason})

    def set_overrides(
        self, learner_ids: tuple[str, ...], *, reason: str, expected_revision: int | None
    ) -> Routing:
        """``PUT /v1/admin/routing/overrides`` (409 when ``expected_revision`` is stale).

        A service without that route answers 404: a RouterError (logged and retried), so
        the rest of the rollout goes on.
        """
        body = {
            "learner_ids": list(learner_ids),
            "expected_revision": expected_revision,
            "reason": reason,
        }
        try:
            return self._call("PUT", "/v1/admin/routing/overrides", body)
        except StoreError as exc:
            if "HTTP 404" not in str(exc):
                raise
            raise RouterError(
                f"{self.url}: this service has no /v1/admin/routing/overrides; override "
                "routes are not applied"
            ) from exc

    def recent_stable_models(self, limit: int) -> list[int]:
        """The admin API has no routing history: the rollback window needs ``router: store``."""
        del limit
        return []


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    return str(body.get("message") or body.get("detail") or body)[:300]


__all__ = ["AdminApiRouter", "RouterError", "StoreRouter", "TrafficRouter"]
