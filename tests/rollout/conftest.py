"""Fixtures of the rollout tests: real stores (DuckDB, and PostgreSQL in a private schema).

The PostgreSQL server is ``$COHORTLENS_TEST_PG`` (default
``postgresql://postgres@127.0.0.1:5432/test``); every test gets its own schema, dropped
afterwards, so concurrent runs never collide. Tests needing it skip, saying why, only when it
cannot be reached.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PG_URL = os.environ.get("COHORTLENS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pg_admin() -> Any:
    """An autocommit connection to the test server (skips the test when unreachable)."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg (the postgres extra) is not installed")
    try:
        return psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {PG_URL} is unreachable: {exc}")


def with_schema(base: str, schema: str) -> str:
    """``base`` selecting ``schema`` through libpq options."""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}&application_name={schema}"


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
