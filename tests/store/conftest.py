"""PostgreSQL fixtures: a private schema per test (prefixed per module), dropped afterwards.

The server is ``$COHORTLENS_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``);
tests needing it are skipped, with the reason, only when it cannot be reached.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from tests._pg import PG_URL, with_schema
from tests._pg import pg_admin as _admin

__all__ = ["PG_URL", "_admin", "with_schema"]


@pytest.fixture(scope="module")
def pg_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A schema-name prefix unique to this module and run; leftovers are dropped at the end."""
    module = re.sub(r"\W", "_", request.module.__name__.rsplit(".", 1)[-1])[:24]
    prefix = f"cl_{module}_{uuid.uuid4().hex[:8]}".lower()
    conn = _admin()
    yield prefix
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", [prefix]
    ).fetchall()
    for (name,) in rows:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    conn.close()


@pytest.fixture
def pg_url(pg_prefix: str) -> Iterator[str]:
    """A URL of a fresh schema (created by the store on open), dropped after the test."""
    schema = f"{pg_prefix}_{uuid.uuid4().hex[:6]}"
    yield with_schema(PG_URL, schema)
    conn = _admin()
    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    conn.close()
