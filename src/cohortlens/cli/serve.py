"""``cohortlens serve``: run the HTTP service on uvicorn (docs/SERVING.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from cohortlens.errors import InputError


def serve(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Store: DuckDB file or postgresql:// URL (default $COHORTLENS_DB or "
            "./cohortlens.duckdb).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    routing_poll_s: Annotated[
        float, typer.Option(help="Seconds between checks of the shared routing record.")
    ] = 1.0,
    experiments: Annotated[
        Path | None, typer.Option(help="YAML file of experiment designs to serve.")
    ] = None,
    log_learner_ids: Annotated[
        bool, typer.Option(help="Write learner ids in clear to the access log.")
    ] = False,
    enable_fault_injection: Annotated[
        bool,
        typer.Option(
            "--enable-fault-injection", help="Mount PUT /v1/admin/faults (chaos tests only)."
        ),
    ] = False,
    no_access_log: Annotated[
        bool, typer.Option("--no-access-log", help="Do not log one line per request.")
    ] = False,
    exposure_flush_s: Annotated[
        float,
        typer.Option(help="Seconds between writes of experiment exposure records to the store."),
    ] = 1.0,
    store_wait_s: Annotated[
        float,
        typer.Option(
            help="How long a request that needs the store waits while another process holds "
            "a DuckDB file, before answering 503 (posted events: 202, spooled)."
        ),
    ] = 5.0,
    ood_max_share: Annotated[
        float,
        typer.Option(
            help="Warn when more than this share of a batch lies beyond the model's training "
            "99th-percentile distance (response, log, metrics)."
        ),
    ] = 0.10,
    spool_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where exposures and posted events wait for the store (default: "
            "<db file>.spool for DuckDB; none for PostgreSQL)."
        ),
    ] = None,
) -> None:
    """Serve cohort look-ups, batch assignment and routing (admin routes need
    $COHORTLENS_ADMIN_TOKEN)."""
    import uvicorn

    from cohortlens.serve import ServeSettings, create_app
    from cohortlens.serve.experiments import load_experiments
    from cohortlens.store import open_store, resolve_db

    if not 0 < port < 65536:
        raise InputError(f"--port {port}: expected 1..65535")
    if routing_poll_s <= 0:
        raise InputError(f"--routing-poll-s {routing_poll_s}: expected > 0")
    if exposure_flush_s <= 0:
        raise InputError(f"--exposure-flush-s {exposure_flush_s}: expected > 0")
    if not 0.0 <= ood_max_share <= 1.0:
        raise InputError(f"--ood-max-share {ood_max_share}: expected a share in [0, 1]")
    if store_wait_s < 0:
        raise InputError(f"--store-wait-s {store_wait_s}: expected >= 0")
    url = resolve_db(db)
    load_experiments(experiments)  # fail before binding the port
    open_store(url).close()  # migrate and check the store before binding the port
    settings = ServeSettings.from_env(
        url,
        routing_poll_s=routing_poll_s,
        experiments_path=experiments,
        log_learner_ids=log_learner_ids,
        fault_injection=enable_fault_injection,
        access_log=not no_access_log,
        exposure_flush_s=exposure_flush_s,
        store_wait_s=store_wait_s,
        ood_max_share=ood_max_share,
        **({"spool_dir": spool_dir} if spool_dir is not None else {}),
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        access_log=False,  # ours hashes learner ids; uvicorn's would print them
        log_level="info",
        loop="uvloop",
        http="httptools",
        lifespan="on",
    )
