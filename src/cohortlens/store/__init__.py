"""Persistence: DuckDB embedded by default; PostgreSQL when replicas share state.

The backends load on first use (``DuckDBStore``, the shared stores), so a command that fails
before opening a store, or names a missing file, does not load DuckDB or Arrow.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cohortlens._lazy import lazy_getattr
from cohortlens.budget import MemoryBudget
from cohortlens.errors import StoreError
from cohortlens.events.session import CommitCounts, IngestSession
from cohortlens.store.base import (
    SALT_BYTES,
    ConflictError,
    RolloutEvent,
    Routing,
    Store,
    StoreBusyError,
    require_existing,
)

if TYPE_CHECKING:
    from cohortlens.store.duckdb import LOCK_WAIT_ENV, DuckDBStore
    from cohortlens.store.postgres import PostgresStore
    from cohortlens.store.shared import SerializedStore, SessionStore, TurnTakingStore

    def _both_fill_the_protocol(duck: DuckDBStore, pg: PostgresStore) -> tuple[Store, Store]:
        """Checked by mypy only: each backend is a :class:`Store`."""
        return duck, pg


#: Public name -> the module defining it (imported on first use).
_LAZY = {
    "LOCK_WAIT_ENV": "duckdb",
    "DuckDBStore": "duckdb",
    "SerializedStore": "shared",
    "SessionStore": "shared",
    "TurnTakingStore": "shared",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


#: Environment variable naming the store when ``--db`` is not given.
DB_ENV = "COHORTLENS_DB"
DEFAULT_DB = "cohortlens.duckdb"
#: URL prefixes that select the PostgreSQL store.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def resolve_db(db: str | None) -> str:
    """The store URL: the argument, else ``$COHORTLENS_DB``, else ``./cohortlens.duckdb``."""
    return db or os.environ.get(DB_ENV) or DEFAULT_DB


def open_store(
    db: str | Path | None = None,
    *,
    read_only: bool = False,
    create: bool = True,
    wait_s: float | None = None,
    on_wait: Callable[[str], None] | None = None,
    budget: MemoryBudget | None = None,
) -> DuckDBStore | PostgresStore:
    """Open (and migrate) the store named by ``db`` (see :func:`resolve_db`).

    ``postgresql://...`` opens a :class:`~cohortlens.store.postgres.PostgresStore` (needs the
    ``postgres`` extra); anything else is a DuckDB file. For DuckDB, ``create=False`` (implied
    by ``read_only``) refuses a missing file, and a file another process holds is waited for up
    to ``wait_s`` seconds (default ``$COHORTLENS_LOCK_WAIT_S`` or 60), ``on_wait`` told once.
    ``budget`` sets DuckDB's ``memory_limit`` and ``temp_directory`` (see
    :class:`~cohortlens.budget.MemoryBudget`); the PostgreSQL server manages its own memory.
    """
    url = resolve_db(str(db) if db is not None else None)
    if url.startswith(POSTGRES_SCHEMES):
        try:
            from cohortlens.store.postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"the PostgreSQL store needs psycopg ({exc}); "
                "install it with: pip install 'cohortlens[postgres]'"
            ) from None
        return PostgresStore(url, read_only=read_only)
    if (read_only or not create) and url != ":memory:":
        require_existing(url)
    from cohortlens.store.duckdb import DuckDBStore

    return DuckDBStore(
        url, read_only=read_only, create=create, wait_s=wait_s, on_wait=on_wait, budget=budget
    )


def open_shared(
    db: str | Path | None = None,
    *,
    wait_s: float | None = None,
    on_wait: Callable[[str], None] | None = None,
    create: bool = True,
) -> TurnTakingStore | SerializedStore:
    """The store for a long-running process (the service, the rollout controller).

    A DuckDB file is opened only for each unit of work (:class:`TurnTakingStore`), so short
    commands can use the same file while the process runs; PostgreSQL and ``:memory:`` keep
    one connection (:class:`SerializedStore`).
    """
    url = resolve_db(str(db) if db is not None else None)
    from cohortlens.store.shared import SerializedStore, TurnTakingStore

    if url.startswith(POSTGRES_SCHEMES) or url == ":memory:":
        return SerializedStore(open_store(url, wait_s=wait_s, on_wait=on_wait, create=create))
    return TurnTakingStore(url, wait_s=wait_s, on_wait=on_wait, create=create)


__all__ = [
    "DB_ENV",
    "LOCK_WAIT_ENV",
    "SALT_BYTES",
    "CommitCounts",
    "ConflictError",
    "DuckDBStore",
    "IngestSession",
    "RolloutEvent",
    "Routing",
    "SerializedStore",
    "SessionStore",
    "Store",
    "StoreBusyError",
    "TurnTakingStore",
    "open_shared",
    "open_store",
    "resolve_db",
]
