"""Cohort commands: ``discover``, ``assign`` and ``cohorts`` (thin over :mod:`cohortlens.cohorts`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cohortlens.errors import InputError, StoreError
from cohortlens.progress import Progress


def assignments_table(model: Any, features: pa.Table) -> pa.Table:
    """One row per learner: learner_id, cohort_id, archetype, distance to its centroid."""
    ids = model.predict(features)
    dist = model.transform(features)
    # Distance to the learner's own centroid (NaN for the insufficient-data cohort).
    col = np.searchsorted(model.cohort_ids_, ids)
    col = np.clip(col, 0, dist.shape[1] - 1)
    own = dist[np.arange(len(ids)), col]
    names = model.names_
    lookup = np.array([names.get(int(c), "") for c in np.unique(ids)], dtype=object)
    archetype = lookup[np.searchsorted(np.unique(ids), ids)]
    return pa.table(
        {
            "learner_id": features.column("learner_id"),
            "cohort_id": pa.array(ids.astype(np.int32)),
            "archetype": pa.array(archetype.tolist(), pa.string()),
            "distance": pa.array(own, pa.float64(), mask=~np.isfinite(own)),
        }
    )


@dataclass(frozen=True)
class Discovered:
    """What ``discover`` stored (or found already stored)."""

    model_id: int
    model: Any
    assigned: pa.Table
    #: True when an identical candidate was already stored and nothing new was written.
    reused: bool = False


#: Key of the artifact recording what a ``discover`` fit was made from (see :func:`discover`).
INPUTS_KEY = "discover_inputs"


def discover(
    store: Any, *, k: int | None, seed: int, report: Path | None, activate: bool = True
) -> tuple[int, Any, pa.Table]:
    """:func:`discover_model` as (model id, model, assignments)."""
    found = discover_model(store, k=k, seed=seed, report=report, activate=activate)
    return found.model_id, found.model, found.assigned


def discover_model(
    store: Any,
    *,
    k: int | None,
    seed: int,
    report: Path | None,
    activate: bool = True,
    on_progress: Progress | None = None,
    revenue_unit: str | None = None,
) -> Discovered:
    """Fit a model on the latest feature run, keep ids stable, and store it.

    With ``activate`` it becomes the stable model at once; otherwise it is stored as a
    candidate for a progressive rollout (``cohortlens rollout``). The report (``report``)
    names revenue's unit (``revenue_unit``) and the command line. A candidate is not stored
    twice: when a model with status ``candidate`` was made from the same inputs (see
    :func:`fit_inputs`), that model is returned with ``reused=True`` and nothing is written.
    """
    from cohortlens.cli._report import command_line
    from cohortlens.cohorts import CohortModel, write_report

    run_id, features = store.read_features()
    outcomes = store.read_outcomes()

    def write(model: CohortModel, path: Path) -> None:
        write_report(
            model,
            path,
            features,
            outcomes=outcomes if outcomes.num_rows else None,
            revenue_unit=revenue_unit,
            command=command_line(),
        )

    previous = store.active_model()
    model = CohortModel(k, random_state=seed)
    inputs = fit_inputs(run_id, model.get_params_dict(), previous, outcomes)
    if not activate:
        same = _same_candidate(store, run_id, inputs)
        if same is not None:
            found = CohortModel.from_dict(store.model(same))
            if report is not None:
                write(found, report)
            return Discovered(same, found, store.read_assignments(same), reused=True)
    prev_model = prev_assign = None
    if previous is not None:
        prev_model = CohortModel.from_dict(previous[1])
        prev_assign = store.read_assignments(previous[0]).select(["learner_id", "cohort_id"])
    model.fit(
        features,
        outcomes=outcomes if outcomes.num_rows else None,
        previous=prev_model,
        previous_assignments=prev_assign,
        feature_run=str(run_id),
        on_progress=on_progress,
    )
    artifact = model.to_dict() | {INPUTS_KEY: inputs}
    model_id = store.save_model(artifact, feature_run_id=run_id, activate=activate)
    assigned = assignments_table(model, features)
    store.save_assignments(model_id, assigned)
    if report is not None:
        write(model, report)
    return Discovered(model_id, model, assigned)


def fit_inputs(
    run_id: int,
    params: dict[str, Any],
    previous: tuple[int, Any] | None,
    outcomes: pa.Table,
) -> dict[str, Any]:
    """Everything a ``discover`` fit depends on, in JSON form ("the same candidate" test).

    Two fits are the same when they share: the feature run, every fit parameter (the
    requested k or auto, the seed, and the rest of ``CohortModel``'s parameters), the active
    model whose ids they keep (none for a first model), the stored outcomes (a SHA-256 of
    the table, which names the cohorts and fills their cards) and the cohortlens version.
    """
    from cohortlens import __version__

    table = outcomes.combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    digest = hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
    inputs = {
        "feature_run_id": int(run_id),
        "params": params,
        "previous_model_id": None if previous is None else int(previous[0]),
        "outcomes_sha256": digest,
        "cohortlens_version": __version__,
    }
    normalized: dict[str, Any] = json.loads(json.dumps(inputs))  # as stored (lists, not tuples)
    return normalized


def _same_candidate(store: Any, run_id: int, inputs: dict[str, Any]) -> int | None:
    """The newest model with status ``candidate`` made from exactly ``inputs``, if any."""
    for row in sorted(store.models(), key=lambda r: -int(r["model_id"])):
        if row["status"] != "candidate" or row["feature_run_id"] != run_id:
            continue
        if store.model(int(row["model_id"])).get(INPUTS_KEY) == inputs:
            return int(row["model_id"])
    return None


def changed_summary(model: Any) -> dict[str, Any] | None:
    """Learners whose cohort changed since the previous model, and why (None without one)."""
    drift = model.drift_
    if drift is None:
        return None
    return {
        "previous_run": drift.previous_run,
        "n_compared": drift.n_compared,
        "n_changed": drift.n_changed,
        "changed_by_features": drift.changed_by_features,
        "changed_by_refit": drift.changed_by_refit,
        "n_new": drift.n_new,
        "basis": drift.changed_basis,
    }


def changed_line(summary: dict[str, Any]) -> str:
    """One line for a person: how many learners changed cohort, by feature change or refit."""
    n, total = summary["n_changed"], summary["n_compared"]
    share = f" ({n / total:.1%})" if total else ""
    line = (
        f"changed cohort since the previous model: {n:,} of {total:,} learners{share} — "
        f"{summary['changed_by_features']:,} by feature change, "
        f"{summary['changed_by_refit']:,} by refit"
    )
    if summary["n_new"]:
        line += f"; {summary['n_new']:,} new learners"
    return line


def ood(model: Any, features: pa.Table, max_share: float) -> Any:
    """The out-of-distribution summary of ``features`` under ``model``."""
    from cohortlens.cohorts import ood_summary

    return ood_summary(model, features, max_share=max_share)


def active(store: Any) -> tuple[int, Any]:
    """The active model, or a clear error when none was discovered yet."""
    from cohortlens.cohorts import CohortModel

    found = store.active_model()
    if found is None:
        raise StoreError(f"{store.url} has no active cohort model; run `cohortlens discover`")
    return found[0], CohortModel.from_dict(found[1])


def read_feature_file(path: Path) -> pa.Table:
    """A feature table written by ``cohortlens features --out``."""
    import pyarrow.parquet as pq

    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: not a readable Parquet feature table ({exc})") from exc
    if "learner_id" not in table.column_names:
        raise InputError(f"{path}: missing column learner_id; expected a feature table")
    return table


#: Resident bytes per feature row while a batch is scored (the Arrow batch, the model's
#: float matrix and distances, the assignment rows): sizes ``assign``'s batches.
ASSIGN_BYTES_PER_ROW = 2048


@dataclass(frozen=True)
class Streamed:
    """What :func:`assign_file` wrote: rows, learners per archetype, the OOD summary."""

    rows: int
    counts: dict[str, int]
    ood: Any


def assign_file(
    model: Any, features: Path, out: Path, budget: Any, ood_max_share: float
) -> Streamed:
    """Score the feature file ``features`` batch by batch into the Parquet file ``out``.

    Batches hold ``budget.limit_bytes / 4 / ASSIGN_BYTES_PER_ROW`` rows (at least 4,096); the
    out-of-distribution check keeps only the float columns it reads (the model's features
    and the reference columns), 8 bytes per learner and column.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not features.exists():
        raise InputError(f"{features}: no such file")
    try:
        pf = pq.ParquetFile(features)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{features}: not a readable Parquet feature table ({exc})") from exc
    names = pf.schema_arrow.names
    if "learner_id" not in names:
        raise InputError(f"{features}: missing column learner_id; expected a feature table")
    wanted = {"n_events", *getattr(model, "feature_names_in_", ()), *model.reference_bins_}
    kept_cols = [c for c in names if c in wanted]
    rows = max(4096, int(budget.limit_bytes // 4 // ASSIGN_BYTES_PER_ROW))
    counts: dict[str, int] = {}
    kept: list[pa.Table] = []
    n = 0
    writer: pq.ParquetWriter | None = None
    try:
        for batch in pf.iter_batches(batch_size=rows):
            table = pa.Table.from_batches([batch])
            assigned = assignments_table(model, table)
            if writer is None:
                writer = pq.ParquetWriter(out, assigned.schema)
            writer.write_table(assigned)
            for pair in pc.value_counts(assigned.column("archetype")).to_pylist():
                key = str(pair["values"])
                counts[key] = counts.get(key, 0) + int(pair["counts"])
            kept.append(table.select(kept_cols))
            n += table.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{features}: not a readable Parquet feature table ({exc})") from exc
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # an empty file: an empty result
        pq.write_table(assignments_table(model, pf.read()), out)
    scored = pa.concat_tables(kept) if kept else pf.schema_arrow.empty_table().select(kept_cols)
    return Streamed(n, dict(sorted(counts.items())), ood(model, scored, ood_max_share))


def cards(model: Any, model_id: int) -> dict[str, Any]:
    """The cohort cards and quality of a model, as JSON-ready data."""
    from cohortlens.cohorts.cards import model_cards

    return model_cards(model, model_id)
