"""Experiment sufficient statistics reduced in Spark SQL, for per-learner data in a lake.

One aggregate definition drives both engines: the SQL is the one
:mod:`cohortlens.experiments.reduce` builds for DuckDB from the :class:`MetricSpec`\\ s (the
capping quantiles, the per-metric inclusion rules, the GROUP BY), translated token by token
to Spark's dialect (:func:`to_spark_sql`), and its rows are turned into
:class:`ExperimentStats` by the same code. The statistics then go to
:func:`cohortlens.experiments.analysis.analyze` unchanged. Requires pyspark.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession

from cohortlens.experiments.errors import ExperimentInputError
from cohortlens.experiments.reduce import aggregate_sql, check_columns, metric_caps, stats_from_rows
from cohortlens.experiments.spec import MetricSpec
from cohortlens.experiments.stats import ExperimentStats

#: DuckDB words of the reduction SQL and their Spark equivalents. ``quantile_cont`` and
#: Spark's exact ``percentile`` both interpolate linearly between order statistics.
_WORDS = (
    (re.compile(r"\bquantile_cont\s*\(", re.IGNORECASE), "percentile("),
    (re.compile(r"\bAS\s+VARCHAR\b", re.IGNORECASE), "AS STRING"),
)


def to_spark_sql(sql: str) -> str:
    """The reduction SQL in Spark's dialect: backtick identifiers, Spark type/function names.

    Double-quoted identifiers become backtick-quoted ones; string literals are copied as
    they are; the words in ``_WORDS`` are replaced outside quotes only.
    """
    out: list[str] = []
    plain: list[str] = []

    def flush() -> None:
        text = "".join(plain)
        for pattern, repl in _WORDS:
            text = pattern.sub(repl, text)
        out.append(text)
        plain.clear()

    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "\"'":
            flush()
            j = i + 1
            body: list[str] = []
            while j < n:
                if sql[j] == ch:
                    if j + 1 < n and sql[j + 1] == ch:  # doubled quote inside
                        body.append(ch)
                        j += 2
                        continue
                    break
                body.append(sql[j])
                j += 1
            else:
                raise ValueError(f"unterminated quote in SQL at offset {i}")
            text = "".join(body)
            if ch == '"':
                out.append("`" + text.replace("`", "``") + "`")
            else:
                out.append("'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'")
            i = j + 1
        else:
            plain.append(ch)
            i += 1
    flush()
    return "".join(out)


class _Result:
    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return self._rows


class _SparkConnection:
    """The slice of a DuckDB connection the reduction uses (``execute`` + fetch), on Spark."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark

    def execute(self, sql: str) -> _Result:
        return _Result(self.spark.sql(to_spark_sql(sql)).collect())


@contextmanager
def _temp_view(df: DataFrame) -> Iterator[str]:
    name = f"cohortlens_reduce_{uuid.uuid4().hex}"
    df.createOrReplaceTempView(name)
    try:
        yield name
    finally:
        df.sparkSession.catalog.dropTempView(name)


def _read(data: DataFrame | str, spark: SparkSession | None) -> tuple[DataFrame, str]:
    if isinstance(data, DataFrame):
        return data, "the DataFrame"
    spark = spark or SparkSession.getActiveSession()
    if spark is None:
        raise ExperimentInputError(f"{data}: no active Spark session to read it with")
    lower = data.lower().rstrip("/")
    try:
        if lower.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt")):
            sep = "\t" if ".tsv" in lower else ","
            df = spark.read.csv(data, header=True, inferSchema=True, sep=sep)
        else:
            df = spark.read.parquet(data)
    except PySparkException as exc:
        raise ExperimentInputError(f"{data}: cannot read: {_first_line(exc)}") from None
    return df, data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def reduce_to_stats_spark(
    data: DataFrame | str,
    *,
    variant_col: str,
    metrics: Sequence[MetricSpec],
    period_col: str | None = None,
    spark: SparkSession | None = None,
) -> list[ExperimentStats]:
    """Sufficient statistics per variant (and period) computed by Spark SQL.

    Same arguments, rules and result as :func:`cohortlens.experiments.reduce.reduce_to_stats`
    (``data``: a DataFrame, or a Parquet/CSV path Spark can read, with the active or given
    session). Sums may differ from DuckDB's in the last bits (summation order).

    Raises:
        ExperimentInputError: unreadable data, missing columns, non-binary values in a
            binary metric, non-finite values, or no row with a variant.
    """
    df, label = _read(data, spark)
    check_columns(list(df.columns), variant_col, metrics, period_col)
    con = _SparkConnection(df.sparkSession)
    try:
        with _temp_view(df) as view:
            caps = metric_caps(con, view, variant_col, metrics)  # type: ignore[arg-type]
            sql, layout = aggregate_sql(view, variant_col, metrics, period_col, caps)
            rows = [tuple(r) for r in con.execute(sql).fetchall()]
    except PySparkException as exc:
        raise ExperimentInputError(f"cannot reduce {label}: {_first_line(exc)}") from None
    return stats_from_rows(rows, metrics, layout, variant_col, period_col, label)


__all__ = ["reduce_to_stats_spark", "to_spark_sql"]
