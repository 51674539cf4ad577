"""The store half of the readiness gate: the candidate's artifact loads and has assignments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from cohortlens.cohorts import CohortModel
from cohortlens.cohorts.model import FeatureSpec
from cohortlens.rollout.readiness import AllProbes, StoreArtifactProbe
from cohortlens.store.duckdb import DuckDBStore


def _fitted() -> CohortModel:
    x = (FeatureSpec("x"),)
    data = {"learner_id": np.array(["p", "q", "r", "s"]), "x": np.array([0.0, 1.0, 10.0, 11.0])}
    return CohortModel(2, features=x, profile_features=x, clip_quantile=0.0).fit(data)


def test_a_candidate_is_ready_when_its_artifact_loads_and_it_has_assignments(
    tmp_path: Path,
) -> None:
    with DuckDBStore(tmp_path / "s.duckdb") as store:
        probe = StoreArtifactProbe(store)
        missing = probe.check(42)
        assert not missing.ready
        assert "no cohort model 42" in missing.message
        broken = store.save_model({"not": "a cohort model"}, feature_run_id=None, activate=False)
        r = probe.check(broken)
        assert not r.ready
        assert f"the artifact of model {broken} does not load" in r.message
        good = store.save_model(_fitted().to_dict(), feature_run_id=None, activate=False)
        r = probe.check(good)
        assert (r.ready, r.message) == (
            False,
            f"store {store.url}: model {good} has no stored assignments",
        )
        store.save_assignments(
            good,
            pa.table(
                {
                    "learner_id": ["p", "q"],
                    "cohort_id": pa.array([1, 2], pa.int32()),
                    "archetype": ["a", "b"],
                    "distance": [0.1, 0.2],
                }
            ),
        )
        r = probe.check(good)
        assert (r.ready, r.detail) == (True, {"assignments": 2})
        both = AllProbes([probe, StoreArtifactProbe(store)]).check(broken)
        assert not both.ready
        assert AllProbes([]).check(good).ready
