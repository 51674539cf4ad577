"""The one credential check, shared by the FastAPI dependencies and the edge fast path.

Both read the raw ASGI headers (lower-cased names, byte values), so a look-up answered by the
edge and a route answered by FastAPI accept exactly the same credentials. Tokens are compared
in constant time (:func:`secrets.compare_digest`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cohortlens.serve.settings import ServeSettings

Headers = Iterable[tuple[bytes, bytes]]

#: Messages of the two refusals (the 401 body says which credential is missing or wrong).
READ_REFUSED = "missing or wrong API key (X-API-Key header)"
ADMIN_REFUSED = "missing or wrong admin bearer token"


class AuthError(Exception):
    """A request without the credential its route needs (HTTP 401)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _presented(headers: Headers, *, api_key_header: bool) -> Iterator[bytes]:
    """Every credential the request presents: ``X-API-Key`` (when allowed) and bearer tokens."""
    for name, value in headers:
        if name == b"x-api-key" and api_key_header:
            yield value
        elif name == b"authorization" and value[:7].lower() == b"bearer ":
            yield value[7:].strip()


@dataclass(frozen=True)
class Credentials:
    """The service's secrets, encoded once; ``None`` means the check is off (read) or the
    routes are not mounted (admin)."""

    api_key: bytes | None
    admin_token: bytes | None

    @classmethod
    def of(cls, settings: ServeSettings) -> Credentials:
        """From :class:`ServeSettings` (``$COHORTLENS_API_KEY``, ``$COHORTLENS_ADMIN_TOKEN``)."""
        return cls(
            settings.api_key.encode() if settings.api_key else None,
            settings.admin_token.encode() if settings.admin_token else None,
        )

    def read_ok(self, headers: Headers) -> bool:
        """Read routes: open without an API key; else ``X-API-Key`` or ``Authorization: Bearer``."""
        key = self.api_key
        if key is None:
            return True
        return any(secrets.compare_digest(p, key) for p in _presented(headers, api_key_header=True))

    def admin_ok(self, headers: Headers) -> bool:
        """Admin routes: ``Authorization: Bearer <admin token>``, nothing else."""
        token = self.admin_token
        if token is None:
            return False
        return any(
            secrets.compare_digest(p, token) for p in _presented(headers, api_key_header=False)
        )
