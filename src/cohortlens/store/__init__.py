"""Persistence: DuckDB embedded by default; PostgreSQL when replicas share state."""

from __future__ import annotations

import os
from pathlib import Path

from cohortlens.store.base import CommitCounts, IngestSession, Store
from cohortlens.store.duckdb import DuckDBStore

#: Environment variable naming the store when ``--db`` is not given.
DB_ENV = "COHORTLENS_DB"
DEFAULT_DB = "cohortlens.duckdb"


def resolve_db(db: str | None) -> str:
    """The store URL: the argument, else ``$COHORTLENS_DB``, else ``./cohortlens.duckdb``."""
    return db or os.environ.get(DB_ENV) or DEFAULT_DB


def open_store(db: str | Path | None = None, *, read_only: bool = False) -> DuckDBStore:
    """Open (and migrate) the store named by ``db`` (see :func:`resolve_db`)."""
    url = resolve_db(str(db) if db is not None else None)
    if url.startswith(("postgresql://", "postgres://")):
        from cohortlens.errors import StoreError

        raise StoreError("the PostgreSQL store is not available in this release yet")
    return DuckDBStore(url, read_only=read_only)


__all__ = [
    "DB_ENV",
    "CommitCounts",
    "DuckDBStore",
    "IngestSession",
    "Store",
    "open_store",
    "resolve_db",
]
