"""Dependencies of the routes, as ``Annotated`` types (the FastAPI full-stack template's
``deps.py``): the settings, the service, and the read and admin credential checks.

The application keeps its state on ``app.state`` (``settings``, ``credentials``, and
``service`` once the lifespan has loaded it), so the route modules need no closure.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from cohortlens.serve.api.auth import ADMIN_REFUSED, READ_REFUSED, AuthError
from cohortlens.serve.service import CohortService, UnavailableError
from cohortlens.serve.settings import ServeSettings


def get_settings(request: Request) -> ServeSettings:
    """The process's :class:`ServeSettings`."""
    settings: ServeSettings = request.app.state.settings
    return settings


def find_service(request: Request) -> CohortService | None:
    """The loaded service, or ``None`` while the process is starting."""
    svc: CohortService | None = request.app.state.service
    return svc


def get_service(request: Request) -> CohortService:
    """The loaded service; 503 while the process is starting."""
    svc = find_service(request)
    if svc is None:
        raise UnavailableError("the service is starting")
    return svc


def require_read_access(request: Request) -> None:
    """401 unless the request carries the API key (when one is configured)."""
    if not request.app.state.credentials.read_ok(request.scope["headers"]):
        raise AuthError(READ_REFUSED)


def require_admin(request: Request) -> None:
    """401 unless the request carries the admin bearer token."""
    if not request.app.state.credentials.admin_ok(request.scope["headers"]):
        raise AuthError(ADMIN_REFUSED)


SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
ServiceDep = Annotated[CohortService, Depends(get_service)]
MaybeServiceDep = Annotated[CohortService | None, Depends(find_service)]
#: Router-level checks: ``APIRouter(dependencies=[ReadAccess])``.
ReadAccess = Depends(require_read_access)
AdminAccess = Depends(require_admin)
