"""Webhook notifications: a signed JSON POST on every phase change and abort.

Delivery never blocks the controller: :meth:`WebhookNotifier.notify` only puts the payload
on a bounded in-memory queue, and one background thread posts it to every endpoint, retried
with exponential backoff (``backoff_s``, doubling, ``max_attempts`` in all). The body is
signed with HMAC-SHA256 under the endpoint's secret (``X-Cohortlens-Signature:
sha256=<hex>``, GitHub's scheme), so a receiver can check it came from the controller;
``X-Cohortlens-Delivery`` is the same on every retry (deduplicate on it). Delivery is at
most once per controller process: a notification still queued when the process dies is
lost (the history in the store has everything).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx

from cohortlens.errors import InputError
from cohortlens.rollout.spec import WebhookSpec
from cohortlens.rollout.state import Event, Phase, RolloutStatus

log = logging.getLogger("cohortlens.rollout.notify")

SIGNATURE_HEADER = "X-Cohortlens-Signature"
DELIVERY_HEADER = "X-Cohortlens-Delivery"
#: Notifications waiting at most; beyond, the oldest is dropped (and counted).
QUEUE_SIZE = 1000


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value: ``sha256=`` + hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def payload(
    before: Phase | None, status: RolloutStatus, events: Sequence[Event], at: datetime
) -> dict[str, Any] | None:
    """The notification of one persisted decision, or ``None`` when it changed no phase and
    aborted nothing. Carries the release, step, the deciding check (``metric``) and its
    last measured value."""
    aborted = any(e.kind == "aborted" for e in events)
    if not aborted and before == status.phase:
        return None
    decisive = next((e for e in reversed(events) if e.kind in _TRANSITIONS), None)
    detail = decisive.detail if decisive is not None else {}
    metric = detail.get("check")
    value = detail.get("last_value")
    if metric is not None and value is None and status.analysis is not None:
        cs = status.analysis.checks.get(metric)
        value = cs.last_value if cs is not None else None
    return {
        "rollout": status.name,
        "event": decisive.kind if decisive is not None else "phase_changed",
        "phase": status.phase.value,
        "previous_phase": before.value if before is not None else None,
        "reason": status.reason,
        "message": status.message,
        "candidate_model_id": status.candidate_model_id,
        "release_id": status.release_id,
        "step": status.step_index,
        "weight": status.weight,
        "metric": metric,
        "value": value,
        "attempt": status.attempt,
        "at": at.isoformat(),
    }


_TRANSITIONS = frozenset(
    {"started", "paused", "resumed", "promoted", "aborted", "retried", "created", "step_started"}
)


class WebhookNotifier:
    """Posts notifications from a background thread; :meth:`notify` returns at once."""

    def __init__(
        self,
        hooks: Sequence[WebhookSpec],
        *,
        env: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        """Read each endpoint's secret now (InputError when unset: nothing goes unsigned)."""
        env = os.environ if env is None else env
        self.hooks: list[tuple[WebhookSpec, bytes]] = []
        for i, hook in enumerate(hooks):
            secret = env.get(hook.secret_env, "")
            if not secret:
                raise InputError(
                    f"notifications.webhooks[{i}].secret_env: ${hook.secret_env} is not set; "
                    "webhook notifications are signed with it"
                )
            self.hooks.append((hook, secret.encode()))
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_SIZE)
        self._stop = threading.Event()
        self._transport = transport
        self.on_result = on_result
        self.delivered = self.failed = self.dropped = 0
        self._thread: threading.Thread | None = None
        if self.hooks:
            self._thread = threading.Thread(
                target=self._run, name="cohortlens-webhooks", daemon=True
            )
            self._thread.start()

    def notify(
        self, before: Phase | None, status: RolloutStatus, events: Sequence[Event], at: datetime
    ) -> bool:
        """Queue the notification of a persisted decision (never blocks); True when queued."""
        if not self.hooks:
            return False
        body = payload(before, status, events, at)
        if body is None:
            return False
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()  # drop the oldest: the newest phase matters most
            self.dropped += 1
            self._result("dropped")
            self._queue.put_nowait(body)
        return True

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop after trying what is queued for at most ``timeout_s`` (never blocks longer)."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout=timeout_s)
        self._stop.set()

    def _result(self, outcome: str) -> None:
        if self.on_result is not None:
            self.on_result(outcome)

    def _run(self) -> None:
        with httpx.Client(transport=self._transport) as client:
            while not self._stop.is_set():
                body = self._queue.get()
                if body is None:
                    return
                raw = json.dumps(body, sort_keys=True, default=str).encode()
                delivery = uuid.uuid4().hex
                for hook, secret in self.hooks:
                    ok = self._deliver(client, hook, secret, raw, delivery)
                    if ok:
                        self.delivered += 1
                    else:
                        self.failed += 1
                    self._result("delivered" if ok else "failed")

    def _deliver(
        self, client: httpx.Client, hook: WebhookSpec, secret: bytes, raw: bytes, delivery: str
    ) -> bool:
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, raw),
            DELIVERY_HEADER: delivery,
        }
        delay = hook.backoff_s
        for attempt in range(1, hook.max_attempts + 1):
            try:
                resp = client.post(hook.url, content=raw, headers=headers, timeout=hook.timeout_s)
                if 200 <= resp.status_code < 300:
                    return True
                problem = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            log.warning(
                "webhook %s: attempt %d/%d failed: %s",
                hook.url,
                attempt,
                hook.max_attempts,
                problem,
            )
            if attempt < hook.max_attempts and self._stop.wait(delay):
                return False
            delay *= 2
        return False


__all__ = ["DELIVERY_HEADER", "SIGNATURE_HEADER", "WebhookNotifier", "payload", "sign"]
