"""``create_app``: the FastAPI application of one service process, wrapped by the edge.

The routes live in :mod:`cohortlens.serve.api` (one module per area, assembled by
:mod:`cohortlens.serve.api.main`); the edge fast path in :mod:`cohortlens.serve.edge`. This
module owns the process's lifecycle: the lifespan opens the store and loads the
:class:`CohortService` onto ``app.state``, and runs the background tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from cohortlens._version import __version__
from cohortlens.serve.api.auth import Credentials
from cohortlens.serve.api.docs import mount_docs
from cohortlens.serve.api.errors import install_error_handlers
from cohortlens.serve.api.main import api_router, openapi_document
from cohortlens.serve.edge import Edge
from cohortlens.serve.service import BACKGROUND_WAIT_S, CohortService
from cohortlens.serve.settings import ServeSettings
from cohortlens.store.base import StoreBusyError

log = logging.getLogger("cohortlens.serve")


def create_app(settings: ServeSettings, *, store_factory: Callable[[], Any] | None = None) -> Edge:
    """The ASGI application of one service process (FastAPI wrapped by the edge layer).

    ``store_factory`` opens the store (default: ``open_store(settings.db)``).
    """

    def _open() -> Any:
        if store_factory is not None:
            return store_factory()
        from cohortlens.store import open_shared

        return open_shared(settings.db, wait_s=settings.store_wait_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await run_in_threadpool(_open)
        svc = CohortService(settings, store)
        with contextlib.suppress(StoreBusyError):  # spooled by an earlier run: apply it now
            await run_in_threadpool(functools.partial(svc.drain, wait_s=settings.store_wait_s))
        await run_in_threadpool(svc.refresh, force=True)
        seconds = await run_in_threadpool(svc.warm_up)
        log.info("kernels warmed up in %.1f s", seconds)
        # Everything loaded so far (modules, the learner index) lives as long as the process:
        # moving it out of the collector's generations keeps full collections, which would
        # otherwise walk it every time, from stalling requests (the p99 of SERVING.md).
        gc.collect()
        gc.freeze()
        app.state.service = svc
        tasks = [
            asyncio.create_task(_poll_routing(svc)),
            asyncio.create_task(_flush_exposures(svc)),
        ]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            try:
                await run_in_threadpool(svc.close)
            except StoreBusyError:
                log.warning(
                    "the store is held elsewhere; spooled records are applied at the next start"
                )

    app = FastAPI(
        title="cohortlens",
        version=__version__,
        description="Cohort look-ups, batch assignment, experiment assignment and event "
        "intake for a learning platform (docs/SERVING.md).",
        lifespan=lifespan,
        docs_url=None,  # mount_docs serves /docs and /redoc without a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.credentials = Credentials.of(settings)
    app.state.service = None
    install_error_handlers(app)
    app.include_router(api_router(settings))
    mount_docs(app)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return Edge(app, settings)


async def _poll_routing(svc: CohortService) -> None:
    """Apply routing changes made through any replica within ``routing_poll_s``."""
    while True:
        await asyncio.sleep(svc.settings.routing_poll_s)
        try:
            await run_in_threadpool(functools.partial(svc.refresh, wait_s=BACKGROUND_WAIT_S))
        except StoreBusyError:  # another process's turn; logged once by the service
            pass
        except Exception as exc:  # keep serving the last good snapshot
            log.warning("routing poll failed (%s); serving the last loaded routing", exc)


async def _flush_exposures(svc: CohortService) -> None:
    """Write buffered exposure records every ``exposure_flush_s``."""
    while True:
        await asyncio.sleep(svc.settings.exposure_flush_s)
        try:
            await run_in_threadpool(svc.flush_exposures)
        except StoreBusyError:  # the records are in the spool; applied at a later flush
            pass
        except Exception as exc:  # records stay buffered for the next attempt
            log.warning("exposure flush failed (%s); will retry", exc)
