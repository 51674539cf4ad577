"""Fixtures of the rollout tests: real stores (DuckDB, and PostgreSQL in a private schema).

The PostgreSQL server is ``$COHORTLENS_TEST_PG`` (default
``postgresql://postgres@127.0.0.1:5432/test``); every test gets its own schema, dropped
afterwards, so concurrent runs never collide. Tests needing it skip, saying why, only when it
cannot be reached.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests._pg import PG_URL, pg_admin, with_schema

__all__ = ["PG_URL", "pg_admin", "with_schema"]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL of a fresh private schema, dropped after the test."""
    conn = pg_admin()
    schema = f"cl_rollout_{uuid.uuid4().hex[:10]}"
    try:
        yield with_schema(PG_URL, schema)
    finally:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()


@pytest.fixture(params=["duckdb", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL of each backend."""
    if request.param == "duckdb":
        yield str(tmp_path / "rollout.duckdb")
        return
    conn = pg_admin()
    schema = f"cl_rollout_{uuid.uuid4().hex[:10]}"
    try:
        yield with_schema(PG_URL, schema)
    finally:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()


@pytest.fixture
def store(store_url: str) -> Iterator[Any]:
    """An open store of each backend."""
    from cohortlens.store import open_store

    s = open_store(store_url)
    try:
        yield s
    finally:
        s.close()
