"""Fixtures of the cohort tests: one small simulation with features, and a model fitted on it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cohortlens.cohorts import CohortModel, SelectionParams

#: Learners simulated for the shared fixture (features of ~9.8K learners).
N_SIM = 10_000
#: A quicker sweep for tests (same rule, smaller samples).
FAST_SELECTION = SelectionParams(
    sample_size=6_000, silhouette_sample_size=2_000, n_bootstrap=3, k_min=3, k_max=7
)


@dataclass(frozen=True)
class SimData:
    """Features, outcomes and true types of one simulated platform."""

    features: pa.Table
    outcomes: pa.Table
    types: np.ndarray


@pytest.fixture(scope="session")
def sim() -> SimData:
    """10K simulated learners (seed 5) with their feature table and true types."""
    from cohortlens.features import compute_features
    from cohortlens.simulate import SimulationParams, simulate

    s = simulate(SimulationParams(n_learners=N_SIM, seed=5))
    feats = compute_features(s.events)
    pos = pc.index_in(feats["learner_id"], value_set=s.truth["learner_id"])
    types = np.asarray(s.truth["learner_type"].take(pos).to_numpy(zero_copy_only=False))
    return SimData(feats, s.outcomes, types)


@pytest.fixture(scope="session")
def fitted(sim: SimData) -> CohortModel:
    """A model fitted on the simulation with automatic k and outcomes."""
    return CohortModel(selection=FAST_SELECTION, random_state=0).fit(
        sim.features, outcomes=sim.outcomes, feature_run="sim-5"
    )


def blobs(
    n_per: int = 200,
    centres: tuple[tuple[float, float], ...] = ((0, 0), (6, 0), (0, 6)),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Well-separated Gaussian blobs as a two-column feature mapping (``a``, ``b``)."""
    rng = np.random.default_rng(seed)
    pts = np.vstack([rng.normal(c, 0.5, size=(n_per, 2)) for c in centres])
    return {
        "learner_id": np.array([f"l{i}" for i in range(len(pts))]),
        "a": pts[:, 0],
        "b": pts[:, 1],
    }
