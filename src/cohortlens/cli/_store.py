"""How commands open the store: waiting (with a message) while another process holds it."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from cohortlens.errors import StoreError
from cohortlens.store.base import Routing

_err = Console(stderr=True)


def _tell(message: str) -> None:
    _err.print(f"[yellow]{message}[/]", highlight=False, soft_wrap=True)


def open_for_command(
    db: str | None, *, read_only: bool = False, create: bool = True, budget: Any = None
) -> Any:
    """The store named by ``--db`` for one command.

    ``read_only`` for commands that only look (they never create a store, and wait while a
    writer holds the file); ``create=False`` for commands that need earlier results. A DuckDB
    file held by another process is waited for up to ``$COHORTLENS_LOCK_WAIT_S`` (default 60 s)
    with one message on stderr. ``budget`` (a :class:`~cohortlens.budget.MemoryBudget`) sets
    DuckDB's memory limit and spill directory.
    """
    from cohortlens.store import open_store

    return open_store(db, read_only=read_only, create=create, on_wait=_tell, budget=budget)


def open_shared_for_command(db: str | None) -> Any:
    """The store for a long-running command (``rollout run``): see ``store.open_shared``."""
    from cohortlens.store import open_shared

    return open_shared(db, on_wait=_tell, create=False)


def read_routing(store: Any) -> Routing | None:
    """The routing row, or None when none was written yet.

    A read-only store cannot create the row, which ``Store.routing()`` does on first use; no
    row means no model was ever activated or put on a release.
    """
    import duckdb

    try:
        routing: Routing = store.routing()
    except (StoreError, duckdb.Error):
        return None
    return routing


def model_rows(store: Any) -> list[dict[str, Any]]:
    """Every stored model, newest first, with its k, learners and role in the routing.

    ``role`` is ``stable`` (the active model), ``candidate`` (on the current release) or
    None; ``traffic_share`` is the fraction of learners it serves (0-1).
    """
    routing = read_routing(store)
    candidate = routing.candidate_model_id if routing is not None else None
    weight = routing.candidate_weight if routing is not None and candidate is not None else 0.0
    rows = []
    for m in sorted(store.models(), key=lambda r: -int(r["model_id"])):
        artifact = store.model(int(m["model_id"]))
        role, share = None, 0.0
        if candidate == m["model_id"]:
            role, share = "candidate", weight
        elif m["status"] == "active":  # the stable model of the routing
            role, share = "stable", 1.0 - weight
        rows.append(
            {
                "model_id": int(m["model_id"]),
                "status": m["status"],
                "created_at": m["created_at"],
                "k": artifact.get("n_cohorts"),
                "learners": artifact.get("n_learners"),
                "feature_run_id": m["feature_run_id"],
                "role": role,
                "traffic_share": share,
            }
        )
    return rows


def newest_candidate(store: Any) -> int | None:
    """The id of the newest model with status ``candidate``, if any."""
    ids = [int(m["model_id"]) for m in store.models() if m["status"] == "candidate"]
    return max(ids) if ids else None
