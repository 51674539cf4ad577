"""A small store with two cohort models (stable + candidate), built once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cohortlens.cli.cohorts import discover
from cohortlens.events import ingest
from cohortlens.features import build_features
from cohortlens.simulate import SimulationParams, simulate, write_simulation
from cohortlens.store import DuckDBStore


@dataclass(frozen=True)
class Built:
    dir: Path
    db: Path
    stable_id: int
    candidate_id: int
    features: pa.Table
    stable: pa.Table  # assignments of the stable model
    candidate: pa.Table
    events: Path


def build_store(root: Path, db: Path | str) -> Built:
    """simulate -> ingest -> features -> discover (stable) -> discover --candidate."""
    sim = write_simulation(simulate(SimulationParams(n_learners=800, n_weeks=10, seed=11)), root)
    from cohortlens.store import open_store

    with open_store(str(db)) as store:
        ingest(store, [sim["events"]], outcomes=[sim["outcomes"]])
        feats = build_features(store.events_reader(), n_workers=1)
        store.save_feature_run(feats, {}, "test")
        stable_id, _, stable = discover(store, k=3, seed=0, report=None)
        candidate_id, _, candidate = discover(store, k=4, seed=1, report=None, activate=False)
    return Built(
        root, Path(str(db)), stable_id, candidate_id, feats, stable, candidate, sim["events"]
    )


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("serve")
    return build_store(root, root / "serve.duckdb")


def fresh_copy(built: Built, dest: Path) -> Path:
    """A copy of the built DuckDB file, so a test may change routing freely."""
    db = dest / "copy.duckdb"
    db.write_bytes(built.db.read_bytes())
    return db


__all__ = ["Built", "DuckDBStore", "build_store", "fresh_copy", "pq"]
