"""The PostgreSQL test server, shared by the store, serve and rollout tests.

``$COHORTLENS_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``); tests needing it
skip, saying why, only when it cannot be reached.
"""

from __future__ import annotations

import os
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
    """``base`` with libpq options selecting ``schema`` (and naming the connections after it)."""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}&application_name={schema}"
