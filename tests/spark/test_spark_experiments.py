"""Experiment statistics reduced by Spark SQL match the DuckDB reduction; same analysis."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from tests.spark.conftest import PANDAS_WARNING

from cohortlens.experiments import (
    ExperimentInputError,
    ExperimentStats,
    MetricKind,
    MetricSpec,
    SufficientStats,
    analyze,
    reduce_to_stats,
)
from cohortlens.experiments.spark import reduce_to_stats_spark, to_spark_sql

pytestmark = pytest.mark.filterwarnings(PANDAS_WARNING)

SPECS = (
    MetricSpec("completed", MetricKind.BINARY),
    MetricSpec("revenue", MetricKind.MEAN, covariate="pre_revenue", cap_quantile=0.9),
    MetricSpec("rpe", MetricKind.RATIO, numerator="revenue", denominator="events"),
    MetricSpec(
        "rpe_cuped",
        MetricKind.RATIO,
        numerator="revenue",
        denominator="events",
        covariate="pre_revenue",
    ),
)


@pytest.fixture(scope="module")
def table() -> pa.Table:
    """Per-learner rows with null metrics, null covariates, null variants and three periods."""
    rng = np.random.default_rng(5)
    n = 4000
    revenue = rng.exponential(20, n)
    revenue[::17] = np.nan
    pre = rng.exponential(10, n)
    pre[::13] = np.nan
    variant = rng.choice(["control", "treatment", "b"], n).astype(object)
    variant[::29] = None
    return pa.table(
        {
            "variant": pa.array(variant, pa.string()),
            "day": pa.array(rng.integers(1, 4, n)),
            "completed": pa.array(rng.random(n) < 0.3),
            "revenue": pa.array(revenue, mask=np.isnan(revenue)),
            "pre_revenue": pa.array(pre, mask=np.isnan(pre)),
            "events": pa.array(rng.poisson(5, n).astype(float) + 1),
        }
    )


def _assert_close(a: SufficientStats, b: SufficientStats) -> None:
    assert a.n == b.n
    for field in (
        "sum_y",
        "sum_yy",
        "sum_d",
        "sum_dd",
        "sum_yd",
        "sum_x",
        "sum_xx",
        "sum_xy",
        "sum_xd",
    ):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None), field
        if x is not None:
            assert math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-9), (field, x, y)


def _assert_same(duck: list[ExperimentStats], spark: list[ExperimentStats]) -> None:
    assert [s.label for s in spark] == [s.label for s in duck]
    for d, s in zip(duck, spark, strict=True):
        assert s.units == d.units
        assert list(s.metrics) == list(d.metrics)
        for name in d.metrics:
            assert list(s.metrics[name]) == list(d.metrics[name])
            for v in d.metrics[name]:
                _assert_close(s.metrics[name][v], d.metrics[name][v])


@pytest.mark.parametrize("period", [None, "day"])
def test_spark_reduction_matches_duckdb(spark: Any, table: pa.Table, period: str | None) -> None:
    duck = reduce_to_stats(table, variant_col="variant", metrics=SPECS, period_col=period)
    got = reduce_to_stats_spark(
        spark.createDataFrame(table), variant_col="variant", metrics=SPECS, period_col=period
    )
    _assert_same(duck, got)
    in_experiment = table.num_rows - table.column("variant").null_count
    assert sum(sum(s.units.values()) for s in got) == in_experiment


def test_same_analysis_from_parquet_and_csv_paths(
    spark: Any, table: pa.Table, tmp_path: Path
) -> None:
    path = tmp_path / "learners.parquet"
    pq.write_table(table, path)
    (duck,) = reduce_to_stats(path, variant_col="variant", metrics=SPECS)
    (got,) = reduce_to_stats_spark(str(path), variant_col="variant", metrics=SPECS, spark=spark)
    _assert_same([duck], [got])
    csv = tmp_path / "learners.csv"
    pacsv.write_csv(table, csv)
    (from_csv,) = reduce_to_stats_spark(str(csv), variant_col="variant", metrics=SPECS, spark=spark)
    _assert_same([reduce_to_stats(csv, variant_col="variant", metrics=SPECS)[0]], [from_csv])
    a, b = analyze(SPECS, duck), analyze(SPECS, got)
    assert len(a.effects) == 2 * len(SPECS)
    for ea, eb in zip(a.effects, b.effects, strict=True):
        assert (ea.metric, ea.variant, ea.status, ea.verdict) == (
            eb.metric,
            eb.variant,
            eb.status,
            eb.verdict,
        )
        assert math.isclose(ea.pvalue, eb.pvalue, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(ea.effect_size, eb.effect_size, rel_tol=1e-9, abs_tol=1e-12)


def test_input_errors(spark: Any, table: pa.Table, tmp_path: Path) -> None:
    df = spark.createDataFrame(table)
    with pytest.raises(ExperimentInputError, match="missing column"):
        reduce_to_stats_spark(df, variant_col="arm", metrics=SPECS)
    bad = spark.createDataFrame(table.set_column(2, "completed", pa.array([2.0] * table.num_rows)))
    with pytest.raises(ExperimentInputError, match="outside"):
        reduce_to_stats_spark(bad, variant_col="variant", metrics=SPECS[:1])
    none = spark.createDataFrame(
        table.set_column(0, "variant", pa.nulls(table.num_rows, pa.string()))
    )
    with pytest.raises(ExperimentInputError, match="no row has a value"):
        reduce_to_stats_spark(none, variant_col="variant", metrics=SPECS[:1])
    with pytest.raises(ExperimentInputError, match=r"nope\.parquet: cannot read"):
        reduce_to_stats_spark(
            str(tmp_path / "nope.parquet"), variant_col="variant", metrics=SPECS, spark=spark
        )


def test_to_spark_sql_translates_quotes_and_words_outside_literals() -> None:
    sql = (
        'SELECT quantile_cont(CAST("a ""b"" `c`" AS DOUBLE), 0.9), '
        "CAST(\"v\" as varchar) AS x, 'it''s \"quoted\" AS VARCHAR' FROM t"
    )
    assert to_spark_sql(sql) == (
        'SELECT percentile(CAST(`a "b" ``c``` AS DOUBLE), 0.9), '
        "CAST(`v` AS STRING) AS x, 'it\\'s \"quoted\" AS VARCHAR' FROM t"
    )
    with pytest.raises(ValueError, match="unterminated"):
        to_spark_sql('SELECT "a FROM t')
