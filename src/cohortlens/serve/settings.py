"""Service settings: one frozen record, read from the CLI and the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Bearer token for admin routes; without it the server mounts no admin route.
ADMIN_TOKEN_ENV = "COHORTLENS_ADMIN_TOKEN"
#: Optional API key for read routes (``X-API-Key`` header or ``Authorization: Bearer``).
API_KEY_ENV = "COHORTLENS_API_KEY"


@dataclass(frozen=True)
class ServeSettings:
    """How one service process behaves.

    Attributes:
        db: store URL (DuckDB path or ``postgresql://``).
        routing_poll_s: seconds between checks of the shared routing revision; a weight set
            through another replica is in force here within this interval (default 1 s).
        max_body_bytes: larger request bodies are refused with 413 (default 16 MiB).
        max_assign_learners: learners per ``POST /v1/cohorts/assign`` (default 10,000).
        max_events: events per ``POST /v1/events`` (default 10,000).
        admin_token: bearer token for admin routes (``$COHORTLENS_ADMIN_TOKEN``).
        api_key: key for read routes when set (``$COHORTLENS_API_KEY``).
        log_learner_ids: write learner ids in clear to the access log (default: a salted hash).
        fault_injection: mount ``PUT /v1/admin/faults`` (chaos tests of the rollout only).
        experiments_path: YAML file of experiment designs served by
            ``GET /v1/experiments/{key}/assignment``.
        exposure_flush_s: seconds between writes of buffered exposure records (default 1 s).
        access_log: write one line per request to the ``cohortlens.access`` logger.
        store_wait_s: how long a request that needs the store waits while another process
            holds an embedded (DuckDB) store before answering 503 (default 5 s).
        spool_dir: where exposures and posted events wait for the store (default: beside a
            DuckDB file, ``<file>.spool``; none for PostgreSQL unless given).
        spool_max_bytes: the spool's size limit; past it, posted events get 503 (default 1 GiB).
        max_provisional_learners: learners the served models have not seen that are scored
            from their stored events and answered provisionally (default 100,000).
        ood_max_share: a batch assignment whose share of learners beyond the model's training
            99th-percentile distance exceeds this warns (response, log, metrics; default 0.10).
    """

    db: str
    routing_poll_s: float = 1.0
    max_body_bytes: int = 16 * 1024 * 1024
    max_assign_learners: int = 10_000
    max_events: int = 10_000
    admin_token: str | None = None
    api_key: str | None = None
    log_learner_ids: bool = False
    fault_injection: bool = False
    experiments_path: Path | None = None
    exposure_flush_s: float = 1.0
    access_log: bool = True
    store_wait_s: float = 5.0
    spool_dir: Path | None = None
    spool_max_bytes: int = 1 << 30
    max_provisional_learners: int = 100_000
    ood_max_share: float = 0.10

    def __post_init__(self) -> None:
        if self.spool_dir is None and _is_duckdb_file(self.db):
            object.__setattr__(self, "spool_dir", Path(f"{self.db}.spool"))

    @classmethod
    def from_env(cls, db: str, **overrides: object) -> ServeSettings:
        """Settings with the admin token and API key taken from the environment."""
        values: dict[str, object] = {
            "admin_token": os.environ.get(ADMIN_TOKEN_ENV) or None,
            "api_key": os.environ.get(API_KEY_ENV) or None,
        }
        values.update(overrides)
        return cls(db=db, **values)  # type: ignore[arg-type]


def _is_duckdb_file(db: str) -> bool:
    return not db.startswith(("postgresql://", "postgres://")) and db != ":memory:"
