"""Group-sequential designs (issue 14 §2): Lan–DeMets spending and boundaries per look.

rpact's published values are in the conformance suite; here the boundaries are checked
against a Monte Carlo of the look statistics (an independent method), and the inputs.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from cohortlens.cli.experiment import app
from cohortlens.experiments.group_sequential import group_sequential_design, spent_alpha


@pytest.mark.parametrize(
    ("spending", "sides", "param"),
    [("obrien-fleming", 1, None), ("pocock", 2, None), ("power", 1, 2.0), ("hsd", 2, -4.0)],
)
def test_each_look_rejects_with_its_spent_alpha_under_h0(
    spending: str, sides: int, param: float | None
) -> None:
    """Brownian motion at the looks: the share of paths first crossing at look k matches
    α(t_k) − α(t_{k−1}) within binomial bounds (probability 1e-4 per side)."""
    t = np.array([0.2, 0.45, 0.7, 1.0])
    alpha = 0.05
    d = group_sequential_design(t, alpha, spending, sides=sides, param=param)
    rng = np.random.default_rng(17)
    n = 400_000
    steps = rng.standard_normal((n, t.size)) * np.sqrt(np.diff(np.concatenate([[0.0], t])))
    z = np.cumsum(steps, axis=1) / np.sqrt(t)
    stat = np.abs(z) if sides == 2 else z
    crossed = stat >= np.array(d.bounds)
    first = np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)
    increments = np.diff(np.concatenate([[0.0], d.alpha_spent]))
    for k, p in enumerate(increments):
        count = int((first == k).sum())
        lo, hi = sps.binom.ppf(1e-4, n, p), sps.binom.isf(1e-4, n, p)
        assert lo <= count <= hi, (k, count, n * p)
    assert d.alpha_spent[-1] == pytest.approx(alpha)


def test_spending_functions_at_known_points() -> None:
    assert spent_alpha(1.0, 0.05, "obrien-fleming")[0] == pytest.approx(0.05)
    assert spent_alpha(1.0, 0.05, "obrien-fleming", sides=2)[0] == pytest.approx(0.05)
    assert spent_alpha(0.0, 0.05, "pocock")[0] == 0.0
    assert spent_alpha(0.5, 0.05, "pocock")[0] == pytest.approx(
        0.05 * math.log(1 + (math.e - 1) / 2)
    )
    assert spent_alpha(0.5, 0.04, "power", param=2.0)[0] == pytest.approx(0.01)
    assert spent_alpha(0.5, 0.04, "hsd", param=0.0)[0] == pytest.approx(0.02)
    # O'Brien–Fleming spends almost nothing early, Pocock much more.
    assert spent_alpha(0.2, 0.05, "obrien-fleming")[0] < 1e-4 < spent_alpha(0.2, 0.05, "pocock")[0]


def test_single_look_is_the_fixed_horizon_test() -> None:
    d = group_sequential_design([1.0], 0.05, "pocock", sides=2)
    assert d.bounds[0] == pytest.approx(sps.norm.isf(0.025))
    assert d.first_crossing([-2.0]) == 0
    assert d.first_crossing([1.9]) is None


def test_first_crossing_and_dict() -> None:
    d = group_sequential_design([0.5, 1.0], 0.025, "obrien-fleming")
    assert d.first_crossing([2.0, 2.5]) == 1
    assert d.first_crossing([3.0]) == 0
    assert d.first_crossing([float("nan"), 0.0]) is None
    with pytest.raises(ValueError, match="3 statistics"):
        d.first_crossing([0.0, 0.0, 0.0])
    doc = d.to_dict()
    assert [x["look"] for x in doc["looks"]] == [1, 2]
    assert doc["looks"][1]["bound"] == d.bounds[1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"information_fractions": [0.5, 0.5]}, "increase strictly"),
        ({"information_fractions": [0.5, 1.2]}, "increase strictly"),
        ({"information_fractions": []}, "at least one"),
        ({"information_fractions": [1.0], "spending": "linear"}, "must be one of"),
        ({"information_fractions": [1.0], "spending": "power"}, "param"),
        ({"information_fractions": [1.0], "sides": 3}, "sides == 3"),
        ({"information_fractions": [1.0], "alpha": 1.5}, "alpha == 1.5"),
        (
            {
                "information_fractions": [0.5, 1.0],
                "spending": "user",
                "user_spending": [0.02, 0.01],
            },
            "non-decreasing",
        ),
        ({"information_fractions": [0.5, 1.0], "spending": "user"}, "one value per look"),
        (
            {"information_fractions": [0.5, 1.0], "user_spending": [0.01, 0.02]},
            "spending='user' only",
        ),
    ],
)
def test_bad_designs_are_rejected(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        group_sequential_design(**kwargs)  # type: ignore[arg-type]


def test_cli_group_sequential_bounds() -> None:
    runner = CliRunner()
    args = ["group-sequential", "--looks", "0.4,0.75,1", "--alpha", "0.13"]
    result = runner.invoke(app, [*args, "--spending", "obrien-fleming", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [round(x["bound"], 7) for x in doc["looks"]] == [2.1280732, 1.4368565, 1.2468994]
    text = runner.invoke(app, [*args, "--spending", "pocock", "--sides", "2"])
    assert text.exit_code == 0, text.output
    assert "look" in text.stdout
    assert "bound" in text.stdout
    bad = runner.invoke(app, ["group-sequential", "--looks", "0.5,0.4"])
    assert bad.exit_code == 2
    assert "increase strictly" in bad.output
    bad = runner.invoke(app, ["group-sequential", "--looks", "0.5,x"])
    assert bad.exit_code == 2
    assert "'x' is not a number" in bad.output
