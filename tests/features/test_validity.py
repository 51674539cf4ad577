"""Ground truth (both simulators) and real-data (EdNet sample) validity, small versions.

The thresholds are the acceptance thresholds of ``benchmarks.validity_features.THRESHOLDS``;
the second world's were fixed before any engine was run on it.
"""

from __future__ import annotations

import pytest

from cohortlens.features import FeatureParams

pytestmark = pytest.mark.slow


def test_simulator_ground_truth_meets_the_thresholds() -> None:
    from benchmarks.validity_features import failed_checks, simulator

    res = simulator(3000, 11, FeatureParams())
    assert res["n_eligible"] > 1000
    assert failed_checks(res, calibrated=True) == []


_MISSED = "missed on the second world (docs/VALIDITY.md, 'Simulators'); threshold kept as fixed"
_CEILING = (
    "missed on the second world: an oracle with the world's own forgetting model reaches only "
    "0.81 on these events (benchmarks.validity_features.second_world_half_life_ceiling, "
    "docs/VALIDITY.md); threshold kept as fixed"
)


@pytest.fixture(scope="module")
def second_world_results() -> dict[str, dict]:
    from benchmarks.validity_features import second_world

    return {g: second_world(3000, 11, g, FeatureParams()) for g in ("logistic", "linear")}


@pytest.mark.parametrize(
    ("growth", "check"),
    [
        pytest.param(
            "logistic", "spearman_velocity", marks=pytest.mark.xfail(strict=True, reason=_MISSED)
        ),
        ("linear", "spearman_velocity"),
        ("linear", "calibration_median_ratio"),
        pytest.param(
            "logistic", "spearman_half_life", marks=pytest.mark.xfail(strict=True, reason=_CEILING)
        ),
        pytest.param(
            "linear", "spearman_half_life", marks=pytest.mark.xfail(strict=True, reason=_CEILING)
        ),
        ("logistic", "spearman_entropy"),
        ("linear", "spearman_entropy"),
    ],
)
def test_second_world_ground_truth_meets_the_thresholds(
    second_world_results: dict[str, dict], growth: str, check: str
) -> None:
    """Each threshold on its own; the ones the engines miss there are strict xfails, so a
    fix that meets them turns the suite red until the mark is removed."""
    from benchmarks.validity_features import failed_checks

    res = second_world_results[growth]
    assert res["n_eligible"] > 1000
    failed = failed_checks(res, calibrated=growth == "linear")
    assert not [f for f in failed if f.startswith(check)]


@pytest.mark.shared_data
def test_ednet_retention_and_ability_beat_baselines() -> None:
    from benchmarks.validity_features import DATA, ednet

    if not (DATA / "ednet_sample" / "KT1").exists():
        pytest.skip(f"{DATA / 'ednet_sample'} is absent (shared datasets not on this machine)")
    res = ednet(FeatureParams(), peers=False)
    ret, abil = res["retention"], res["ability"]
    assert ret["ours"]["log_loss"] < ret["constant"]["log_loss"]
    assert ret["ours"]["log_loss"] < ret["hlr_floor"]["log_loss"]
    assert ret["ours"]["auc"] > ret["hlr_floor"]["auc"]
    elo = abil["careful_elo_learner_part_item"]
    assert elo["auc"] == pytest.approx(0.766, abs=0.005)  # the reference figure reproduces
    for name in ("ours_ability", "ours_ability_plus_retention"):
        assert abil[name]["auc"] > elo["auc"]
        assert abil[name]["log_loss"] < elo["log_loss"]
    # issue 15: no worse than before (ability AUC 0.79894, log loss 0.44208; retention AUC
    # 0.80054, log loss 0.42736). Smoothing item difficulties toward their domain's success
    # rate (so that new domains leave other difficulties alone) moved the ability AUC to
    # 0.79875 and its log loss to 0.44205: the AUC bar allows that 0.0002 (docs/VALIDITY.md).
    assert abil["ours_ability"]["auc"] >= 0.7985
    assert abil["ours_ability"]["log_loss"] <= 0.44208
    assert ret["ours"]["auc"] >= 0.80053
    assert ret["ours"]["log_loss"] <= 0.42736
    # on first attempts the prior knowledge alone (theta + theta_d - b) already beats it
    first = res["ability_first_attempts"]
    assert first["ours_prior_knowledge_only"]["auc"] > first["careful_elo_learner_part_item"]["auc"]
