"""``cohortlens experiment ...`` end to end: exit codes, JSON output, files written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from statsmodels.stats.power import NormalIndPower
from typer.testing import CliRunner

from cohortlens.cli.experiment import app

runner = CliRunner()
METRIC_ARGS = [
    "--variant-col",
    "variant",
    "--metric",
    "completed:binary",
    "--guardrail",
    "churned:binary",
    "--lower-is-better",
    "churned",
    "--metric",
    "revenue:mean",
    "--covariate",
    "revenue=pre_revenue",
    "--metric",
    "revenue_per_event:ratio:revenue/events",
]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "exp.parquet"
    result = runner.invoke(
        app,
        [
            "simulate",
            "--learners",
            "6000",
            "--effect",
            "0.1",
            "--weeks",
            "1",
            "--days",
            "5",
            "--seed",
            "3",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["learners"] == 6000
    assert set(summary["true_effects"]) == {
        "completed",
        "churned",
        "revenue",
        "revenue_per_event",
    }
    assert Path(summary["truth"]).exists()
    return out


def test_analyze_json_and_report(simulated: Path, tmp_path: Path) -> None:
    html = tmp_path / "r.html"
    result = runner.invoke(
        app,
        [
            "analyze",
            str(simulated),
            *METRIC_ARGS,
            "--time-col",
            "day",
            "--sequential",
            "--tune-n",
            "6000",
            "--report",
            str(html),
            "--unit",
            "revenue=EUR",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    page = html.read_text()
    assert "EUR" in page  # the unit of the mean metric
    assert "(first and last day)" in page  # the header's data range: the periods
    bad = runner.invoke(app, ["analyze", str(simulated), *METRIC_ARGS, "--unit", "nope=EUR"])
    assert bad.exit_code == 2
    assert "--unit: unknown metric(s) nope" in bad.output
    assert [e["metric"] for e in doc["effects"]] == [
        "completed",
        "revenue",
        "revenue_per_event",
        "churned",
    ]
    assert len(doc["looks"]) == 4 * 5
    assert doc["sequential"] == {"tuning_n": 6000, "rho": None}
    assert doc["effects"][1]["cuped_applied"] is True
    assert html.read_text().count("<svg") == 1 + 4


def test_reduce_then_analyze_json_matches_raw(simulated: Path, tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    reduced = runner.invoke(app, ["reduce", str(simulated), *METRIC_ARGS, "--out", str(stats)])
    assert reduced.exit_code == 0, reduced.output
    from_json = runner.invoke(app, ["analyze", str(stats), "--json"])
    from_raw = runner.invoke(app, ["analyze", str(simulated), *METRIC_ARGS, "--json"])
    assert from_json.exit_code == 0, from_json.output
    assert from_raw.exit_code == 0, from_raw.output
    assert json.loads(from_json.stdout)["effects"] == json.loads(from_raw.stdout)["effects"]


def test_human_output(simulated: Path) -> None:
    result = runner.invoke(
        app, ["analyze", str(simulated), *METRIC_ARGS, "--population", "1000000"]
    )
    assert result.exit_code == 0, result.output
    assert "trust checks passed" in result.stdout
    assert "over 1,000,000 learners" in result.stdout
    assert "CUPED variance reduction" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metric", "nope:mean"], "missing column(s) nope"),
        (["--metric", "revenue:median"], "unknown type 'median'"),
        (["--metric", "rpe:ratio:revenue"], "a ratio needs NUM/DEN"),
        (
            ["--metric", "revenue:mean", "--covariate", "other=pre_revenue"],
            "--covariate: unknown metric",
        ),
        (["--metric", "revenue:mean", "--control", "zzz"], "control variant 'zzz' not found"),
        (["--metric", "revenue:mean", "--alpha", "2"], "alpha == 2.0"),
        (
            ["--metric", "completed:binary", "--cap", "completed=0.9"],
            "binary metrics cannot be capped",
        ),
        ([], "name at least one --metric"),
    ],
)
def test_analyze_input_errors_exit_2(simulated: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["analyze", str(simulated), "--variant-col", "variant", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_analyze_missing_file_and_bad_json(tmp_path: Path) -> None:
    result = runner.invoke(app, ["analyze", str(tmp_path / "none.parquet"), "--metric", "x:mean"])
    assert result.exit_code == 2
    assert "no such file" in result.output
    bad = tmp_path / "s.json"
    bad.write_text(json.dumps({"metrics": []}))
    result = runner.invoke(app, ["analyze", str(bad)])
    assert result.exit_code == 2
    assert "'metrics' must be a non-empty list" in result.output


def test_reduce_rejects_a_statistics_file(tmp_path: Path) -> None:
    stats = tmp_path / "s.json"
    stats.write_text("{}")
    result = runner.invoke(
        app, ["reduce", str(stats), "--metric", "x:mean", "--out", str(tmp_path / "o.json")]
    )
    assert result.exit_code == 2
    assert "already a statistics file" in result.output


def test_srm_is_reported(tmp_path: Path) -> None:
    n = 20_000
    rng = np.random.default_rng(0)
    variant = np.where(rng.random(n) < 0.53, "control", "treatment")
    data = tmp_path / "skewed.csv"
    pacsv.write_csv(pa.table({"variant": variant, "x": rng.normal(size=n)}), data)
    result = runner.invoke(app, ["analyze", str(data), "--metric", "x:mean", "--json"])
    doc = json.loads(result.stdout)
    assert doc["status"] == "srm_mismatch"
    assert doc["conclusions_withheld"] is True
    human = runner.invoke(app, ["analyze", str(data), "--metric", "x:mean"])
    assert "SAMPLE RATIO MISMATCH" in human.stdout


def test_power_cli_matches_statsmodels() -> None:
    result = runner.invoke(
        app, ["power", "--type", "mean", "--baseline", "10", "--std", "4", "--mde", "0.3", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    ref = NormalIndPower().solve_power(0.3 / 4, nobs1=None, alpha=0.05, power=0.8)
    assert doc["n_control_exact"] == pytest.approx(ref, rel=1e-6)
    human = runner.invoke(
        app,
        [
            "power",
            "--type",
            "binary",
            "--baseline",
            "0.3",
            "--n-per-arm",
            "5000",
            "--cuped-correlation",
            "0.5",
        ],
    )
    assert human.exit_code == 0
    assert "CUPED variance factor" in human.stdout
    zero = runner.invoke(
        app, ["power", "--type", "mean", "--baseline", "0", "--std", "1", "--mde", "0.1", "--json"]
    )
    assert zero.exit_code == 0, zero.output
    assert json.loads(zero.stdout)["rel_effect"] is None
    both = runner.invoke(
        app,
        ["power", "--type", "binary", "--baseline", "0.3", "--mde", "0.01", "--n-per-arm", "10"],
    )
    assert both.exit_code == 2
    assert "exactly one" in both.output


def test_assign_cli(tmp_path: Path) -> None:
    learners = tmp_path / "learners.parquet"
    pq.write_table(
        pa.table(
            {
                "learner_id": [f"u{i}" for i in range(2000)],
                "cohort": [("a", "b")[i % 2] for i in range(2000)],
            }
        ),
        learners,
    )
    out = tmp_path / "assign.parquet"
    exposures = tmp_path / "exp.parquet"
    result = runner.invoke(
        app,
        [
            "assign",
            str(learners),
            "--experiment",
            "e1",
            "--variants",
            "control=1,t=1",
            "--cohort-col",
            "cohort",
            "--target",
            "a",
            "--out",
            str(out),
            "--exposures",
            str(exposures),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)["counts"]
    assert counts["(none)"] == 1000
    assert counts["control"] + counts["t"] == 1000
    assert pq.read_table(exposures).num_rows == 1000
    from cohortlens.experiments import bucket_of

    table = pq.read_table(out)
    assert table["bucket"][5].as_py() == bucket_of("u5", "e1")
