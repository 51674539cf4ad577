"""``/docs`` (Swagger UI) and ``/redoc`` served offline.

FastAPI's own pages load their JavaScript and CSS from a CDN (and ReDoc its fonts from Google),
so they are blank without internet access. Here the pages reference only this service: the
assets ship in the ``fastapi-offline`` package (Swagger UI bundle and CSS, ReDoc standalone,
favicon) and are served from :data:`ASSETS_URL`. Swagger's online validator badge is off too,
and both pages carry a Content-Security-Policy that lets the browser load nothing from another
origin (ReDoc's bundle would fetch its sidebar logo from its vendor's CDN otherwise).
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

#: Where the Swagger UI and ReDoc assets are served.
ASSETS_URL = "/docs/assets"
#: The installed asset files (swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js,
#: favicon.png).
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"

#: Only this origin: scripts and styles (the pages' inline start-up code included), images,
#: fonts, the OpenAPI fetch, and ReDoc's search worker (a blob: URL).
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'self'"
)

router = APIRouter(include_in_schema=False)


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CSP
    return page


def _urls(request: Request) -> tuple[str, str]:
    root = request.scope.get("root_path", "").rstrip("/")
    openapi_url = request.app.openapi_url or "/openapi.json"
    return root + openapi_url, root + ASSETS_URL


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    openapi_url, assets = _urls(request)
    page = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{assets}/swagger-ui-bundle.js",
        swagger_css_url=f"{assets}/swagger-ui.css",
        swagger_favicon_url=f"{assets}/favicon.png",
        oauth2_redirect_url=None,
        swagger_ui_parameters={"validatorUrl": None},
    )
    return _local_only(page)


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    openapi_url, assets = _urls(request)
    page = get_redoc_html(
        openapi_url=openapi_url,
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{assets}/redoc.standalone.js",
        redoc_favicon_url=f"{assets}/favicon.png",
        with_google_fonts=False,
    )
    return _local_only(page)


def mount_docs(app: FastAPI) -> None:
    """Add the two pages and their assets to ``app`` (created with ``docs_url=None``)."""
    app.include_router(router)
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
