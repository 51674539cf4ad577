"""DuckDB reduction against numpy, the JSON statistics file, and the HTML report."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from cohortlens.experiments import (
    AnalysisConfig,
    ExperimentInputError,
    MetricKind,
    MetricRole,
    MetricSpec,
    SequentialParams,
    StatsFile,
    SufficientStats,
    analyze,
    read_stats_json,
    reduce_to_stats,
    write_stats_json,
)
from cohortlens.experiments.report import render_html
from cohortlens.experiments.serialize import parse_stats_document, stats_document

SPECS = (
    MetricSpec("completed", MetricKind.BINARY),
    MetricSpec("revenue", MetricKind.MEAN, covariate="pre_revenue", cap_quantile=0.9),
    MetricSpec("rpe", MetricKind.RATIO, numerator="revenue", denominator="events"),
)


@pytest.fixture
def table() -> pa.Table:
    rng = np.random.default_rng(0)
    n = 3000
    revenue = rng.exponential(20, n)
    revenue[::17] = np.nan  # null revenue: left out of revenue and rpe only
    pre = rng.exponential(10, n)
    pre[::13] = np.nan  # null covariate counts as 0
    return pa.table(
        {
            "variant": pa.array(rng.choice(["control", "treatment"], n)),
            "day": pa.array(rng.integers(1, 4, n)),
            "completed": pa.array(rng.random(n) < 0.3),
            "revenue": pa.array(revenue, mask=np.isnan(revenue)),
            "pre_revenue": pa.array(pre, mask=np.isnan(pre)),
            "events": pa.array(rng.poisson(5, n).astype(float) + 1),
        }
    )


def _numpy_stats(t: pa.Table, variant: str, day: int | None = None) -> dict[str, SufficientStats]:
    v = t["variant"].to_numpy(zero_copy_only=False)
    days = t["day"].to_numpy()
    rev_all = t["revenue"].to_numpy(zero_copy_only=False).astype(float)
    pre_all = np.nan_to_num(t["pre_revenue"].to_numpy(zero_copy_only=False).astype(float), nan=0.0)
    # Caps: quantile_cont == numpy's linear interpolation, over all arms, nulls excluded.
    cap_rev = np.quantile(rev_all[~np.isnan(rev_all)], 0.9)
    cap_pre = np.quantile(t["pre_revenue"].drop_null().to_numpy(), 0.9)
    rows = (v == variant) & (True if day is None else days == day)
    ok = rows & ~np.isnan(rev_all)
    events = t["events"].to_numpy()
    completed = t["completed"].to_numpy(zero_copy_only=False).astype(float)
    return {
        "completed": SufficientStats.from_arrays(completed[rows]),
        "revenue": SufficientStats.from_arrays(
            np.minimum(rev_all[ok], cap_rev), x=np.minimum(pre_all[ok], cap_pre)
        ),
        "rpe": SufficientStats.from_arrays(rev_all[ok], d=events[ok]),
    }


def _close(a: SufficientStats, b: SufficientStats) -> None:
    assert a.n == b.n
    assert a.columns == b.columns
    for key, value in b.to_dict().items():
        assert a.to_dict()[key] == pytest.approx(value, rel=1e-10), key


def test_reduce_matches_numpy(table: pa.Table, tmp_path: Path) -> None:
    pq.write_table(table, tmp_path / "d.parquet")
    for source in (table, tmp_path / "d.parquet"):
        (stats,) = reduce_to_stats(source, variant_col="variant", metrics=SPECS)
        assert stats.units == {
            v: int(np.sum(table["variant"].to_numpy(zero_copy_only=False) == v))
            for v in ("control", "treatment")
        }
        for variant in ("control", "treatment"):
            ref = _numpy_stats(table, variant)
            for name in ref:
                _close(stats.metrics[name][variant], ref[name])


def test_reduce_by_period_sums_to_total(table: pa.Table, tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    pacsv.write_csv(table.drop_columns(["pre_revenue", "revenue"]), csv)
    specs = [SPECS[0]]
    periods = reduce_to_stats(csv, variant_col="variant", metrics=specs, period_col="day")
    assert [p.label for p in periods] == ["1", "2", "3"]
    (total,) = reduce_to_stats(csv, variant_col="variant", metrics=specs)
    merged = periods[0] + periods[1] + periods[2]
    assert merged.units == total.units
    assert merged.metrics["completed"] == total.metrics["completed"]  # integer sums: exact
    _close(
        periods[1].metrics["completed"]["treatment"],
        _numpy_stats(table, "treatment", 2)["completed"],
    )


def test_reduce_input_errors(table: pa.Table, tmp_path: Path) -> None:
    with pytest.raises(ExperimentInputError, match="missing column"):
        reduce_to_stats(table, variant_col="arm", metrics=SPECS)
    bad = table.set_column(2, "completed", pa.array(np.full(table.num_rows, 0.5)))
    with pytest.raises(ExperimentInputError, match="values other than 0 and 1"):
        reduce_to_stats(bad, variant_col="variant", metrics=[SPECS[0]])
    bad2 = table.set_column(2, "completed", pa.array(np.full(table.num_rows, 2.0)))
    with pytest.raises(ExperimentInputError, match="outside"):
        reduce_to_stats(bad2, variant_col="variant", metrics=[SPECS[0]])
    with pytest.raises(ExperimentInputError, match="no such file"):
        reduce_to_stats(tmp_path / "nope.parquet", variant_col="variant", metrics=SPECS)
    (tmp_path / "x.txt.gz2").write_text("x")
    with pytest.raises(ExperimentInputError, match=r"expected a \.csv or \.parquet"):
        reduce_to_stats(tmp_path / "x.txt.gz2", variant_col="variant", metrics=SPECS)
    no_day = table.set_column(
        1, "day", pa.array([None] * 5 + [1] * (table.num_rows - 5), pa.int64())
    )
    with pytest.raises(ExperimentInputError, match="5 row"):
        reduce_to_stats(no_day, variant_col="variant", metrics=SPECS, period_col="day")
    none = table.set_column(0, "variant", pa.nulls(table.num_rows, pa.string()))
    with pytest.raises(ExperimentInputError, match="no row has a value"):
        reduce_to_stats(none, variant_col="variant", metrics=SPECS)


def test_json_round_trip_and_analysis_agree(table: pa.Table, tmp_path: Path) -> None:
    periods = reduce_to_stats(table, variant_col="variant", metrics=SPECS, period_col="day")
    content = StatsFile(
        metrics=SPECS,
        periods=tuple(periods),
        control="control",
        expected_weights={"control": 1.0, "treatment": 1.0},
        experiment="demo",
    )
    path = tmp_path / "stats.json"
    write_stats_json(content, path)
    back = read_stats_json(path)
    assert back == content
    config = AnalysisConfig(sequential=SequentialParams(tuning_n=3000))
    a = analyze(SPECS, periods, config).to_dict()
    b = analyze(back.metrics, back.periods, config).to_dict()
    assert a == b


def test_json_shorthand_and_errors() -> None:
    doc = {
        "metrics": [{"name": "conv", "type": "binary"}],
        "units": {"control": 100, "treatment": 100},
        "stats": {
            "conv": {"control": {"n": 100, "sum_y": 30}, "treatment": {"n": 100, "sum_y": 40}}
        },
    }
    parsed = parse_stats_document(doc)
    assert parsed.periods[0].metrics["conv"]["treatment"].sum_yy == 40.0
    assert stats_document(parsed)["periods"][0]["units"] == {"control": 100, "treatment": 100}
    cases = [
        ({**doc, "version": 2}, "version 2"),
        ({**doc, "metrics": [{"name": "conv", "type": "median"}]}, r"metrics\[0\]"),
        (
            {**doc, "stats": {"conv": {"control": {"n": 100}}}},
            r"periods\[0\]\.stats\.conv\.control",
        ),
        ({**doc, "stats": {"conv": {"ctrl": {"n": 1, "sum_y": 1}}}}, "not listed in units"),
        ({**doc, "units": {"control": -1}}, "integers >= 0"),
        ({**doc, "extra": 1}, "unknown top-level"),
        (
            {
                **doc,
                "metrics": [{"name": "conv", "type": "ratio"}],
                "stats": {"conv": {"control": {"n": 2, "sum_y": 1, "sum_yy": 1}}},
            },
            "needs sum_d",
        ),
    ]
    for bad, message in cases:
        with pytest.raises(ExperimentInputError, match=message):
            parse_stats_document(bad)


def test_read_stats_json_reports_bad_json(tmp_path: Path) -> None:
    p = tmp_path / "s.json"
    p.write_text("{ not json")
    with pytest.raises(ExperimentInputError, match="invalid JSON at line 1"):
        read_stats_json(p)


def test_html_report_is_self_contained(table: pa.Table) -> None:
    periods = reduce_to_stats(table, variant_col="variant", metrics=SPECS, period_col="day")
    specs = (
        *SPECS[:2],
        MetricSpec(
            "rpe",
            MetricKind.RATIO,
            numerator="revenue",
            denominator="events",
            role=MetricRole.GUARDRAIL,
        ),
    )
    report = analyze(specs, periods, AnalysisConfig(sequential=SequentialParams(tuning_n=3000)))
    html = render_html(report, title="t <script>")
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("<svg") == 1 + 3
    assert "<title>t &lt;script&gt;</title>" in html  # the title is escaped
    assert not re.search(r"<script[^>]*\bsrc=", html)  # only inline scripts (tooltips)
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html
    assert "Trust checks passed" in html
    skewed = analyze(
        specs,
        [type(periods[0])(units={"control": 5000, "treatment": 4000}, metrics=periods[0].metrics)],
    )
    assert "Conclusions withheld" in render_html(skewed)
    assert "banner ok" not in render_html(skewed)


def test_degenerate_report_renders() -> None:
    from cohortlens.experiments import ExperimentStats

    data = ExperimentStats(
        units={"control": 1, "treatment": 2},
        metrics={"m": {"control": SufficientStats.from_arrays([1.0])}},
    )
    report = analyze([MetricSpec("m", MetricKind.MEAN)], data)
    html = render_html(report)
    assert "empty_arm" in html  # each comparison's reason is listed
    assert "banner refuse" in html  # a refusal, not a green banner over nothing
    assert "banner ok" not in html
    assert math.isnan(report.effects[0].pvalue)
    json.dumps(report.to_dict(), allow_nan=False)


def test_ratio_covariate_cuped_reduces_analyses_and_round_trips(tmp_path: Path) -> None:
    """CUPED of a ratio by its pre-period ratio (issue 14 §2): the reduction produces the
    four-column sums (w and its cross sums), the JSON file keeps them, the CLI takes
    ``--covariate METRIC=NUM/DEN``, and the adjustment narrows the CI."""
    from typer.testing import CliRunner

    from cohortlens.cli.experiment import app

    rng = np.random.default_rng(9)
    n = 4000
    pre_sessions = 1.0 + rng.poisson(4, n)
    rate = rng.gamma(1.0, 1.0, n)  # learners differ a lot: the pre-period ratio predicts
    sessions = 1.0 + rng.poisson(4, n)
    variant = np.where(rng.random(n) < 0.5, "control", "treatment")
    orders = rng.poisson(rate * sessions).astype(float)
    pre_orders = rng.poisson(rate * pre_sessions).astype(float)
    pre_orders[::50] = np.nan  # no pre-period activity: counts as 0
    table = pa.table(
        {
            "variant": variant,
            "orders": orders,
            "sessions": sessions,
            "pre_orders": pa.array(pre_orders, mask=np.isnan(pre_orders)),  # nulls
            "pre_sessions": pre_sessions,
        }
    )
    spec = MetricSpec(
        "opr",
        MetricKind.RATIO,
        numerator="orders",
        denominator="sessions",
        covariate="pre_orders",
        covariate_denominator="pre_sessions",
    )
    (stats,) = reduce_to_stats(table, variant_col="variant", metrics=[spec])
    for v in ("control", "treatment"):
        rows = variant == v
        expected = SufficientStats.from_arrays(
            orders[rows],
            d=sessions[rows],
            x=np.nan_to_num(pre_orders[rows]),
            w=pre_sessions[rows],
        )
        got = stats.metrics["opr"][v]
        assert got.columns == ("y", "d", "x", "w")
        for field in ("n", "sum_w", "sum_ww", "sum_yw", "sum_xw", "sum_dw", "sum_xd"):
            assert getattr(got, field) == pytest.approx(getattr(expected, field), rel=1e-12)
    e = analyze([spec], stats).effect("opr")
    assert e.cuped_applied
    assert e.std_error < 0.9 * e.std_error_unadjusted
    path = tmp_path / "s.json"
    write_stats_json(StatsFile(metrics=(spec,), periods=(stats,)), path)
    back = read_stats_json(path)
    assert back.metrics[0].covariate_denominator == "pre_sessions"
    assert back.periods[0].metrics["opr"]["treatment"] == stats.metrics["opr"]["treatment"]
    data = tmp_path / "d.parquet"
    pq.write_table(table, data)
    args = ["analyze", str(data), "--metric", "opr:ratio:orders/sessions", "--json"]
    result = CliRunner().invoke(app, [*args, "--covariate", "opr=pre_orders/pre_sessions"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["effects"][0]["cuped_theta"] == pytest.approx(e.cuped_theta)
    bad = CliRunner().invoke(
        app,
        [
            "analyze",
            str(data),
            "--metric",
            "orders:mean",
            "--covariate",
            "orders=pre_orders/pre_sessions",
        ],
    )
    assert bad.exit_code == 2
    assert "a ratio covariate (covariate_denominator) is for ratio metrics" in bad.output
