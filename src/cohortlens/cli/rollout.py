"""``cohortlens rollout ...``: ship a cohort model canary → ramp → full (docs/RUNBOOK.md).

``run`` is the controller; the other commands read or steer a rollout through the store
(status and history) and the spec's router (abort sets the candidate's weight to 0 at once).
Every command takes ``--json``. Exit codes: 0 success, 2 unusable input or a command that does
not apply, 3 store or router unreachable, 4 ``run`` ended with the rollout aborted.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cohortlens.cli._errors import handle_errors
from cohortlens.errors import InputError

app = typer.Typer(
    help="Progressive delivery of cohort models: canary → ramp → full, with auto-rollback.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

EXIT_ABORTED = 4

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Store holding the rollout state: DuckDB file or postgresql:// URL "
        "(default $COHORTLENS_DB or ./cohortlens.duckdb).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
NameArg = Annotated[str, typer.Argument(help="The rollout's name (from its spec).")]
ReasonOption = Annotated[str | None, typer.Option("--reason", help="Why (kept in the history).")]

_errors = handle_errors()


def _print_json(payload: object) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


def _open(db: str | None, *, read_only: bool) -> Any:
    """The store of a rollout command: never created here (it must hold the models), waited
    for while another process holds it (cli/_store.py)."""
    from cohortlens.cli._store import open_for_command

    return open_for_command(db, read_only=read_only, create=False)


def _pct(weight: float) -> str:
    return f"{weight * 100:g} %"


# ---------------------------------------------------------------------------- run


@app.command()
@_errors
def run(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Rollout spec (YAML).")],
    db: DbOption = None,
    once: Annotated[
        bool,
        typer.Option("--once", help="Reconcile until nothing more is due now, then exit."),
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port", help="Serve the controller's Prometheus metrics on 127.0.0.1:PORT."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Drive a rollout until it is promoted or aborted (resumes where a previous run stopped)."""
    from cohortlens.rollout.exporter import ControllerMetrics
    from cohortlens.rollout.runner import Controller, SystemClock, build_providers, new_holder
    from cohortlens.rollout.spec import load_spec
    from cohortlens.rollout.state import Phase

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from cohortlens.cli._store import open_shared_for_command

    spec = load_spec(spec_path)
    # A long-running process: on a DuckDB file it holds the file only per unit of work, so
    # the service and other commands share it (docs/DESIGN.md, "Sharing the embedded store").
    store = open_shared_for_command(db)
    exporter = ControllerMetrics()
    if metrics_port is not None:
        server = exporter.serve(metrics_port)
        port = server.server_address[1]
        err.print(f"controller metrics on http://127.0.0.1:{port}/metrics", highlight=False)
    clock = SystemClock()
    holder = new_holder()

    def on_events(at: datetime, events: Sequence[Any]) -> None:
        if as_json:
            return
        for e in events:
            out.print(
                f"{at:%Y-%m-%dT%H:%M:%SZ}  {_event_line(e.kind, e.reason, e.detail)}",
                highlight=False,
            )

    def providers(s: Any) -> Any:
        return build_providers(
            s,
            store,
            actor=f"rollout:{s.name}",
            on_notification=lambda outcome: exporter.notification(s.name, outcome),
        )

    edges = providers(spec)
    controller = Controller(
        store,
        spec,
        router=edges.router,
        metrics=edges.metrics,
        guardrails=edges.guardrails,
        readiness=edges.readiness,
        notifier=edges.notifier,
        clock=clock,
        holder=holder,
        exporter=exporter,
        on_events=on_events,
        rebuild=providers,
    )

    def stop(signum: int, _frame: Any) -> None:
        err.print(f"signal {signum}: stopping after this tick (lease released)")
        clock.stop.set()

    # SIGTERM and SIGHUP stop after the current tick; Ctrl-C (SIGINT) interrupts at once.
    # Either way ``Controller.run`` releases the lease on its way out.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    if not as_json:
        err.print(
            f"controller {holder} for rollout {spec.name} (store {store.url})", highlight=False
        )
    try:
        status = controller.run(once=once)
    finally:
        if controller.notifier is not None:
            controller.notifier.close(timeout_s=2.0)  # a last chance for queued webhooks
        store.close()
    if status is None:
        message = f"rollout {spec.name}: another controller holds the lease; nothing done"
        if as_json:
            _print_json({"name": spec.name, "lease": "held_by_another"})
        else:
            err.print(message)
        return
    if as_json:
        _print_json(status.to_json_dict())
    else:
        out.print(
            f"rollout {status.name}: {status.phase.value} at step {status.step_index}, "
            f"candidate weight {_pct(status.weight)} ({status.reason})",
            highlight=False,
        )
    if status.phase == Phase.ABORTED and not once:
        raise typer.Exit(EXIT_ABORTED)


# ---------------------------------------------------------------------------- status / history


@app.command()
@_errors
def status(
    name: Annotated[
        str | None, typer.Argument(help="The rollout; all rollouts when omitted.")
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Phase, step, weight and analysis counters of a rollout (or a list of all)."""
    from cohortlens.cli._store import read_routing
    from cohortlens.rollout.runner import load_spec_of, load_status

    store = _open(db, read_only=True)
    try:
        if name is None:
            rows = []
            for n in store.rollout_names():
                got = store.rollout_status(n)
                if got is not None:
                    rows.append({"name": n, "revision": got[0]} | got[1])
            if as_json:
                _print_json(rows)
                return
            if not rows:
                out.print(
                    f"no rollouts in {store.url}; start one with: "
                    "cohortlens rollout init > rollout.yaml, then cohortlens rollout run "
                    "rollout.yaml",
                    highlight=False,
                    soft_wrap=True,
                )
                return
            table = Table("rollout", "phase", "step", "weight", "reason", "updated")
            for r in rows:
                table.add_row(
                    r["name"],
                    r["phase"],
                    str(r["step_index"]),
                    _pct(r["weight"]),
                    r["reason"],
                    str(r["updated_at"]),
                )
            out.print(table)
            return
        rev, st = load_status(store, name)
        spec = load_spec_of(store, name)
        found = read_routing(store)
        routing = None
        if found is not None:
            routing = {
                "stable_model_id": found.stable_model_id,
                "candidate_model_id": found.candidate_model_id,
                "candidate_weight_percent": round(found.candidate_weight * 100.0, 6),
                "release_id": found.release_id,
                "revision": found.revision,
            }
    finally:
        store.close()
    if as_json:
        _print_json(
            {
                "name": name,
                "revision": rev,
                "status": st.to_json_dict(),
                "steps": len(spec.steps),
                "routing": routing,
            }
        )
        return
    step = spec.steps[st.step_index].kind if st.step_index < len(spec.steps) else "done"
    out.print(
        f"[bold]{name}[/]: {st.phase.value}  (model {st.candidate_model_id}, attempt {st.attempt})"
    )
    out.print(f"  step      {st.step_index}/{len(spec.steps)} ({step})")
    out.print(f"  weight    {_pct(st.weight)}   release {st.release_id}  salt {st.salt}")
    if st.hold is not None:
        out.print(f"  held      {st.hold.reason.value}: {st.hold.message}", highlight=False)
    out.print(f"  reason    {st.reason}: {st.message}", highlight=False)
    if routing is not None:
        out.print(
            f"  routing   stable {routing['stable_model_id']}, candidate "
            f"{routing['candidate_model_id']} at {routing['candidate_weight_percent']:g} % "
            f"(revision {routing['revision']})"
        )
    if st.analysis is not None:
        a = st.analysis
        table = Table("check", "last", "ok in a row", "failed", "inconclusive", "errors", "message")
        for check, cs in a.checks.items():
            table.add_row(
                check,
                cs.last_outcome or "-",
                str(cs.consecutive_successes),
                str(cs.failures),
                str(cs.inconclusives),
                str(cs.errors),
                cs.last_message,
            )
        out.print(
            f"  analysis  {a.measurements} measurement(s), next at {a.next_measurement_at:%H:%M:%S}"
        )
        out.print(table)


@app.command()
@_errors
def history(
    name: NameArg,
    db: DbOption = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the last N events.")] = None,
    measurements: Annotated[
        bool, typer.Option("--measurements/--no-measurements", help="Include measurements.")
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Every transition and measurement of a rollout, with its machine-readable reason."""
    from cohortlens.rollout.runner import load_status

    store = _open(db, read_only=True)
    try:
        load_status(store, name)
        events = store.rollout_events(name)
    finally:
        store.close()
    if not measurements:
        events = [e for e in events if e.kind != "measurement"]
    if limit is not None:
        events = events[-limit:]
    if as_json:
        _print_json(
            [
                {"seq": e.seq, "at": e.at, "kind": e.kind, "reason": e.reason, "detail": e.detail}
                for e in events
            ]
        )
        return
    table = Table("seq", "at", "kind", "reason", "detail")
    for e in events:
        table.add_row(
            str(e.seq),
            f"{e.at:%Y-%m-%d %H:%M:%S}",
            e.kind,
            e.reason,
            _detail_text(e.kind, e.detail),
        )
    out.print(table)


def _detail_text(kind: str, detail: dict[str, Any]) -> str:
    if kind == "measurement":
        parts = [f"{c}={r['outcome']}" for c, r in detail.get("checks", {}).items()]
        return f"step {detail.get('step')} @ {_pct(detail.get('weight', 0.0))}: " + ", ".join(parts)
    if "message" in detail:
        return str(detail["message"])
    keep = {k: v for k, v in detail.items() if k not in ("checks", "actions")}
    return ", ".join(f"{k}={v}" for k, v in keep.items())


def _event_line(kind: str, reason: str, detail: dict[str, Any]) -> str:
    return f"{kind:<20} {reason:<34} {_detail_text(kind, detail)}"


# ---------------------------------------------------------------------------- commands


def _command(name: str, command: Any, db: str | None, reason: str | None, as_json: bool) -> None:
    from cohortlens.rollout.runner import build_router, run_command

    store = _open(db, read_only=False)
    try:
        decision, problems = run_command(
            store,
            name,
            command,
            router_factory=lambda spec: build_router(spec, store, actor="rollout-cli"),
            reason=reason,
        )
    finally:
        store.close()
    st = decision.status
    if as_json:
        _print_json(
            {
                "name": name,
                "command": command.value,
                "status": st.to_json_dict(),
                "events": [
                    {"kind": e.kind, "reason": e.reason, "detail": e.detail}
                    for e in decision.events
                ],
                "routing_problems": problems,
            }
        )
    else:
        for e in decision.events:
            out.print(_event_line(e.kind, e.reason, e.detail), highlight=False)
        out.print(
            f"rollout {name}: {st.phase.value} at step {st.step_index}, weight {_pct(st.weight)}",
            highlight=False,
        )
        for p in problems:
            err.print(f"[bold red]routing not updated:[/] {p}", highlight=False)
    if problems:
        raise typer.Exit(3)


@app.command()
@_errors
def promote(
    name: NameArg,
    full: Annotated[
        bool, typer.Option("--full", help="Skip every remaining step and analysis: promote now.")
    ] = False,
    reason: ReasonOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Skip the current step (ends a pause, an analysis or a hold); --full promotes at once."""
    from cohortlens.rollout.commands import Command

    _command(name, Command.PROMOTE_FULL if full else Command.PROMOTE, db, reason, as_json)


@app.command()
@_errors
def abort(
    name: NameArg, reason: ReasonOption = None, db: DbOption = None, as_json: JsonOption = False
) -> None:
    """Abort: the candidate's weight goes to 0 now; stays aborted until `retry`."""
    from cohortlens.rollout.commands import Command

    _command(name, Command.ABORT, db, reason, as_json)


@app.command()
@_errors
def pause(
    name: NameArg, reason: ReasonOption = None, db: DbOption = None, as_json: JsonOption = False
) -> None:
    """Hold at the current weight (measurements go on; a failure still aborts)."""
    from cohortlens.rollout.commands import Command

    _command(name, Command.PAUSE, db, reason, as_json)


@app.command()
@_errors
def resume(
    name: NameArg, reason: ReasonOption = None, db: DbOption = None, as_json: JsonOption = False
) -> None:
    """Release a hold (manual, inconclusive analysis, or provider errors)."""
    from cohortlens.rollout.commands import Command

    _command(name, Command.RESUME, db, reason, as_json)


@app.command()
@_errors
def retry(
    name: NameArg, reason: ReasonOption = None, db: DbOption = None, as_json: JsonOption = False
) -> None:
    """Start an aborted rollout again from step 0 (same release unless it was superseded)."""
    from cohortlens.rollout.commands import Command

    _command(name, Command.RETRY, db, reason, as_json)


# ---------------------------------------------------------------------------- helpers


def _newest_candidate(db: str | None) -> int:
    """The newest model with status ``candidate`` (said on stderr), or exit 2 saying how to
    make one."""
    from cohortlens.cli._store import newest_candidate

    with _open(db, read_only=True) as store:
        found, url = newest_candidate(store), store.url
    if found is None:
        raise InputError(
            f"{url} has no candidate model; make one with `cohortlens discover --candidate` "
            "(or name one with --candidate ID: `cohortlens models` lists them)"
        )
    err.print(f"candidate model {found} (the newest in {url})", highlight=False)
    return found


@app.command()
@_errors
def init(
    candidate: Annotated[
        int | None,
        typer.Option(
            "--candidate",
            min=1,
            help="Model id to ship (default: the newest candidate in the store, from "
            "`cohortlens discover --candidate`).",
        ),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Rollout name.")] = "cohort-model",
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Write here (default stdout).")
    ] = None,
    db: DbOption = None,
) -> None:
    """Print the default spec (canary 1 % → ramp 10 % → full 100 %) to edit; only the YAML
    goes to stdout."""
    from cohortlens.rollout.spec import RolloutSpec, dump_spec_yaml

    if candidate is None:
        candidate = _newest_candidate(db)
    try:
        spec = RolloutSpec(name=name, candidate_model_id=candidate)
    except ValueError as exc:
        raise InputError(f"--name {name!r}: {exc}") from None
    text = dump_spec_yaml(spec)
    if out_path is None:
        sys.stdout.write(text)
    else:
        out_path.write_text(text, encoding="utf-8")
        err.print(f"spec -> {out_path}")


@app.command()
@_errors
def simulate(
    spec_path: Annotated[
        Path | None, typer.Option("--spec", help="Spec to simulate (default: the default spec).")
    ] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            help="KIND@STEP[+OFFSET_S], repeatable; KIND: error_rate, latency, guardrail, "
            "metrics_outage, controller_crash (STEP: canary, ramp, full or an analysis "
            "index), provider_down, unloadable_candidate (STEP: start).",
        ),
    ] = None,
    matrix: Annotated[
        bool, typer.Option("--matrix", help="Run every fault at every step; print a table.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Traffic randomness.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """A whole rollout under a virtual clock with injected faults (seconds, not hours)."""
    from cohortlens.rollout.simulation import EXPECTED, Fault
    from cohortlens.rollout.simulation import simulate as run_sim
    from cohortlens.rollout.spec import load_spec
    from cohortlens.rollout.state import Phase

    spec = load_spec(spec_path) if spec_path is not None else None
    if matrix:
        rows: list[dict[str, Any]] = []
        for (kind, step), expected in EXPECTED.items():
            r = run_sim(spec, [Fault(kind, step)], seed=seed)
            ok = (
                r.phase == expected
                and not r.violations
                and (step != "start" or r.max_weight == 0.0)
                and (
                    expected != Phase.ABORTED
                    or (r.rollback_s is not None and r.rollback_s <= (r.bound_s or 0.0))
                )
            )
            rows.append(
                {
                    "fault": kind,
                    "step": step,
                    "expected": expected.value,
                    "phase": r.phase.value,
                    "reason": r.reason,
                    "rollback_s": r.rollback_s,
                    "bound_s": r.bound_s,
                    "max_weight": r.max_weight,
                    "violations": len(r.violations),
                    "duration_s": r.duration_s,
                    "ok": ok,
                }
            )
        if as_json:
            _print_json(rows)
            return
        table = Table(
            "fault", "step", "expected", "got", "reason", "max w", "rollback s", "bound s", "ok"
        )
        for row in rows:
            table.add_row(
                str(row["fault"]),
                str(row["step"]),
                str(row["expected"]),
                str(row["phase"]),
                str(row["reason"]),
                _pct(float(row["max_weight"])),
                "-" if row["rollback_s"] is None else f"{row['rollback_s']:g}",
                "-" if row["bound_s"] is None else f"{row['bound_s']:g}",
                "yes" if row["ok"] else "[bold red]NO[/]",
            )
        out.print(table)
        return
    faults = [Fault.parse(f) for f in fault or []]
    r = run_sim(spec, faults, seed=seed)
    if as_json:
        _print_json(r.to_dict())
        return
    for e in r.events:
        if e["kind"] == "measurement" and e["reason"] == "successful":
            continue
        out.print(
            f"t={e['at_s']:>7.0f}s  {_event_line(e['kind'], e['reason'], e['detail'])}",
            highlight=False,
        )
    out.print(
        f"\n{r.phase.value} ({r.reason}) after {r.duration_s:g} virtual s; weights: "
        + " → ".join(f"{_pct(w)}@{t:g}s" for t, w in r.weights),
        highlight=False,
    )
    if r.rollback_s is not None:
        out.print(f"rollback {r.rollback_s:g} s after the fault (bound {r.bound_s:g} s)")
    for c in r.crashes:
        out.print(
            f"controller killed at {c['at_s']:g} s (step {c['step']}, weight {_pct(c['weight'])}); "
            f"successor resumed at {c['restarted_at_s']:g} s at step {c['resumed_step']}, "
            f"weight {_pct(c['resumed_weight'])}"
        )
