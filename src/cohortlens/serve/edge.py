"""The outermost ASGI layer: body limit, metrics, access log, 500 guard, look-up fast path.

Single look-ups (``GET /v1/learners/{learner_id}/cohort``, the hot path) are answered here by
:func:`~cohortlens.serve.api.routes.lookup.answer_lookup`, the same function (same credential
check, same id decoding) as the documented FastAPI route, without FastAPI's per-request
routing, dependency and validation machinery. Every other request goes to FastAPI.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI

from cohortlens.serve.api.auth import Credentials
from cohortlens.serve.api.routes.lookup import (
    LOOKUP_ROUTE,
    answer_lookup,
    is_lookup_path,
    raw_path,
)
from cohortlens.serve.service import CohortService, error_body
from cohortlens.serve.settings import ServeSettings

log = logging.getLogger("cohortlens.serve")
access_log = logging.getLogger("cohortlens.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def learner_hash(learner_id: str) -> str:
    """What the access log shows instead of a learner id: a 6-byte BLAKE2b hash."""
    return "h:" + hashlib.blake2b(learner_id.encode(), digest_size=6).hexdigest()


class _BodyTooLargeError(Exception):
    pass


class Edge:
    """Outermost ASGI layer around the FastAPI application."""

    def __init__(self, app: FastAPI, settings: ServeSettings) -> None:
        self.app = app
        self.settings = settings
        self.state = app.state
        self.credentials: Credentials = app.state.credentials

    @property
    def fastapi(self) -> FastAPI:
        """The wrapped FastAPI application (for its OpenAPI document)."""
        return self.app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        if scope["method"] == "GET":
            raw = raw_path(scope)
            if is_lookup_path(raw):
                await self._lookup(scope, raw, send, start)
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
        svc: CohortService | None = self.state.service
        if svc is not None:
            svc.metrics.observe(
                route,
                scope["method"],
                status,
                scope.get("cohortlens.role", "none"),
                scope.get("cohortlens.version", "none"),
                elapsed,
            )
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

    async def _lookup(self, scope: Scope, raw: bytes, send: Send, start: float) -> None:
        svc: CohortService | None = self.state.service
        found, learner_id = answer_lookup(self.credentials, svc, raw, scope["headers"])
        if found.delay_s:
            await asyncio.sleep(found.delay_s)
        await _send_json(send, found.status, found.body)
        elapsed = time.perf_counter() - start
        if svc is not None:
            svc.metrics.observe(
                LOOKUP_ROUTE, "GET", found.status, found.role, found.version, elapsed
            )
        if self.settings.access_log:
            if learner_id is None:
                who = "-"
            else:
                who = learner_id if self.settings.log_learner_ids else learner_hash(learner_id)
            access_log.info(
                "GET %s %d %.2fms learner=%s", LOOKUP_ROUTE, found.status, elapsed * 1e3, who
            )


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
