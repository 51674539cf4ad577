"""How commands open the store: waiting (with a message) while another process holds it."""

from __future__ import annotations

from typing import Any

from rich.console import Console

_err = Console(stderr=True)


def _tell(message: str) -> None:
    _err.print(f"[yellow]{message}[/]", highlight=False, soft_wrap=True)


def open_for_command(db: str | None, *, read_only: bool = False, create: bool = True) -> Any:
    """The store named by ``--db`` for one command.

    ``read_only`` for commands that only look (they never create a store, and wait while a
    writer holds the file); ``create=False`` for commands that need earlier results. A DuckDB
    file held by another process is waited for up to ``$COHORTLENS_LOCK_WAIT_S`` (default 60 s)
    with one message on stderr.
    """
    from cohortlens.store import open_store

    return open_store(db, read_only=read_only, create=create, on_wait=_tell)


def open_shared_for_command(db: str | None) -> Any:
    """The store for a long-running command (``rollout run``): see ``store.open_shared``."""
    from cohortlens.store import open_shared

    return open_shared(db, on_wait=_tell)
