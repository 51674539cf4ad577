"""The HTTP service: cohort look-ups, batch assignment, routing between model versions.

``create_app(ServeSettings(db=...))`` builds the ASGI application; ``cohortlens serve`` runs
it on uvicorn. docs/SERVING.md describes the API, routing, security and metrics.
"""

from cohortlens.serve.app import create_app
from cohortlens.serve.routing import Role, candidate_threshold
from cohortlens.serve.service import CohortService
from cohortlens.serve.settings import ADMIN_TOKEN_ENV, API_KEY_ENV, ServeSettings

__all__ = [
    "ADMIN_TOKEN_ENV",
    "API_KEY_ENV",
    "CohortService",
    "Role",
    "ServeSettings",
    "candidate_threshold",
    "create_app",
]
