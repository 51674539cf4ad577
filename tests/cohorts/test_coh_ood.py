"""Out-of-distribution check (issue 15): share beyond the training 99th-percentile distance
to the nearest centre, per-feature PSI, the warning, the artifact, the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cohortlens.cohorts import CohortModel, ood_summary
from cohortlens.errors import InputError
from cohortlens.features import compute_features
from cohortlens.simulate import SimulationParams, simulate


@pytest.fixture(scope="module")
def fitted() -> tuple[CohortModel, pa.Table]:
    feats = compute_features(simulate(SimulationParams(n_learners=1500, seed=31)).events)
    return CohortModel(4, random_state=0).fit(feats), feats


def test_training_data_does_not_warn(fitted: tuple[CohortModel, pa.Table]) -> None:
    model, feats = fitted
    s = ood_summary(model, feats)
    assert s.n_assessed == int((model.labels_ != 0).sum())
    # the 99th percentile of the training distances: 1 % of the training learners beyond it
    assert s.share_beyond == pytest.approx(0.01, abs=0.002)
    assert not s.warning
    assert s.message is None
    assert all(f.psi < 1e-9 for f in s.features)  # the training deciles themselves


def test_another_draw_of_the_same_population_does_not_warn(
    fitted: tuple[CohortModel, pa.Table],
) -> None:
    model, _ = fitted
    other = compute_features(simulate(SimulationParams(n_learners=1500, seed=32)).events)
    s = ood_summary(model, other)
    assert s.share_beyond < 0.05
    assert not s.warning


def test_a_shifted_population_warns_and_names_the_features(
    fitted: tuple[CohortModel, pa.Table],
) -> None:
    model, feats = fitted
    i = feats.schema.get_field_index("engagement_events_per_week")
    shifted = feats.set_column(
        i, "engagement_events_per_week", pa.compute.multiply(feats.column(i), 50.0)
    )
    s = ood_summary(model, shifted)
    assert s.share_beyond > 0.5
    assert s.warning
    assert s.shifted_features()[0] == "engagement_events_per_week"
    assert s.message is not None
    assert "engagement_events_per_week" in s.message
    # the threshold is configurable
    assert not ood_summary(model, shifted, max_share=1.0).warning
    with pytest.raises(InputError, match="max_share"):
        ood_summary(model, shifted, max_share=1.5)


def test_the_distance_travels_with_the_artifact(fitted: tuple[CohortModel, pa.Table]) -> None:
    model, feats = fitted
    again = CohortModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again.distance_p99_ == model.distance_p99_
    # reference: unclipped scaled features, nearest centre over the observed ones
    from cohortlens.cohorts._matrix import analysis_matrix

    z = (analysis_matrix(feats, model.features_) - model.scaler_.center) / model.scaler_.scale
    obs = np.isfinite(z)
    d2 = np.stack(
        [np.where(obs, (z - c) ** 2, 0.0).sum(axis=1) for c in model.cluster_centers_], axis=1
    )
    nearest = np.sqrt(d2.min(axis=1) * z.shape[1] / obs.sum(axis=1))
    assessed = model.predict(feats) != 0
    assert model.distance_p99_ == pytest.approx(float(np.quantile(nearest[assessed], 0.99)))
    old = model.to_dict()
    del old["distance_p99"]  # an artifact made before the check
    s = ood_summary(CohortModel.from_dict(old), feats)
    assert math.isnan(s.share_beyond)
    assert not s.warning


@pytest.mark.shared_data
def test_oulad_features_under_a_simulator_model_warn(fitted: tuple[CohortModel, pa.Table]) -> None:
    from benchmarks.validity_cohorts import _load
    from tests.conftest import shared_data

    events, _ = _load(shared_data("oulad"), "oulad")
    s = ood_summary(fitted[0], compute_features(events))
    assert s.warning
    assert s.share_beyond > 0.5


def test_assign_warns_on_stderr_and_in_json(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cohortlens", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )

    sim = simulate(SimulationParams(n_learners=600, seed=33))
    pq.write_table(sim.events, tmp_path / "events.parquet")
    db = str(tmp_path / "s.duckdb")
    assert cli("ingest", str(tmp_path / "events.parquet"), "--db", db).returncode == 0
    r = cli("features", "--db", db, "--out", str(tmp_path / "f.parquet"))
    assert r.returncode == 0, r.stderr
    assert cli("discover", "--k", "3", "--db", db).returncode == 0
    out = str(tmp_path / "a.parquet")
    same = cli(
        "assign", "--features", str(tmp_path / "f.parquet"), "--out", out, "--db", db, "--json"
    )
    assert same.returncode == 0, same.stderr
    assert "warning" not in same.stderr
    assert json.loads(same.stdout)["ood"]["warning"] is False
    feats = pq.read_table(tmp_path / "f.parquet")
    i = feats.schema.get_field_index("half_life_days")
    pq.write_table(
        feats.set_column(i, "half_life_days", pa.compute.multiply(feats.column(i), 1000.0)),
        tmp_path / "shifted.parquet",
    )
    r = cli(
        "assign",
        "--features",
        str(tmp_path / "shifted.parquet"),
        "--out",
        out,
        "--db",
        db,
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert "warning:" in r.stderr
    assert "farther from every cohort centre" in r.stderr
    ood = json.loads(r.stdout)["ood"]
    assert ood["warning"] is True
    assert ood["share_beyond"] > 0.1
    text = cli("assign", "--features", str(tmp_path / "shifted.parquet"), "--out", out, "--db", db)
    assert "warning:" in text.stderr
    quiet = cli(
        "assign", "--features", str(tmp_path / "shifted.parquet"), "--out", out, "--db", db,
        "--ood-max-share", "1",
    )  # fmt: skip
    assert "warning" not in quiet.stderr


def test_report_shows_the_share_and_warns(fitted: tuple[CohortModel, pa.Table]) -> None:
    from cohortlens.cohorts import render_report

    model, feats = fitted
    html = render_report(model, feats)
    assert "Out of distribution" in html
    assert "Warning:" not in html
    i = feats.schema.get_field_index("half_life_days")
    shifted = feats.set_column(i, "half_life_days", pa.compute.multiply(feats.column(i), 1e3))
    html = render_report(model, shifted)
    assert "Warning:" in html
    assert "farther from every cohort centre" in html
