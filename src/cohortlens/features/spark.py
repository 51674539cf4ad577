"""Features on Apache Spark: the same global pass, learner hash and partition kernel, at scale.

The local engine's plan (docs/FEATURES.md), with Spark doing the data movement
(docs/SCALING.md):

1. **Global pass** — item graded counts and per-domain event counts from one Spark
   aggregate, finished by the local code (:class:`ItemStatsAccumulator`); the review-pair
   sample of the retention population and the graded-first-attempt sample of the velocity
   population drawn per group by :func:`sample_pairs` / :func:`sample_trend` over the
   learners with the lowest hashes, cut to ``max_fit_pairs`` / ``max_fit_attempts`` in Spark,
   collected, and fitted on the driver (:func:`global_stats_from`). The
   :class:`GlobalStats` is broadcast.
2. **Kernel pass** — every event gets its learner's bucket (``learner_hash % n_buckets``,
   computed by an Arrow UDF calling :func:`partition_of`, so both engines share one hash
   implementation); ``groupBy(bucket).applyInArrow`` hands each bucket's events to
   :func:`feature_kernel` unchanged. Rows are identical to the local engine's because a
   learner's row depends only on its own events and the global statistics.

No feature math lives here. Requires pyspark (``pip install cohortlens[spark]``); Spark 4.0+
runs ``applyInArrow``, older versions fall back to ``applyInPandas``.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlparse

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812 - the conventional alias
from pyspark.sql import types as T  # noqa: N812

from cohortlens.budget import MemoryBudget, format_bytes
from cohortlens.errors import InputError
from cohortlens.features._hash import in_fit_sample, learner_hash, partition_of
from cohortlens.features._prep import prepare
from cohortlens.features.engine import (
    FEATURE_SCHEMA,
    PairSample,
    TrendSample,
    feature_kernel,
    global_stats_from,
    sample_pairs,
    sample_trend,
)
from cohortlens.features.params import FeatureParams
from cohortlens.features.pipeline import EVENTS_PER_PARTITION
from cohortlens.features.stats import GlobalStats, ItemStats, ItemStatsAccumulator
from cohortlens.features.velocity import trend_observations

if TYPE_CHECKING:
    from pyspark.sql.column import Column

V = TypeVar("V")

#: Columns an events dataset must have, and the optional ones the engines read.
REQUIRED_COLUMNS = ("learner_id", "ts", "item_id")
OPTIONAL_COLUMNS = ("domain", "outcome", "duration_s")
_TS = pa.timestamp("us", tz="UTC")
#: Flipping the top bit of the unsigned hash makes signed 64-bit order equal unsigned order.
_TOP_BIT = np.uint64(1 << 63)
#: The fit pass first selects learners in this many times the share of the hash space that
#: the cap on fit pairs would need at one pair per graded event.
FIT_SHARE_SLACK = 16.0
#: Peak memory of a Python worker per event of the bucket it holds, interpreter included:
#: workers peaked at 0.77–0.86 GB with 2M-event buckets (docs/SCALING.md, "Memory and
#: partitions"), i.e. at most about 0.43 KB per event.
WORKER_BYTES_PER_EVENT = 430
#: Share of the memory budget the Python workers get; the rest is the JVM's (heap, shuffle).
PYTHON_SHARE = 0.5
#: The smallest bucket worth a task: a budget that allows less is refused.
MIN_BUCKET_EVENTS = 100_000
#: One row per sampled review pair: the learner's ``hash_key`` and the pair's model inputs.
_SAMPLE_SCHEMA = T.StructType(
    [T.StructField("hash_key", T.LongType(), False)]
    + [T.StructField(c, T.DoubleType(), False) for c in ("gap_days", "recalled", "x0", "x1", "x2")]
)
#: One row per sampled graded first attempt of the velocity population fit.
_TREND_SCHEMA = T.StructType(
    [T.StructField("hash_key", T.LongType(), False)]
    + [T.StructField(c, T.DoubleType(), False) for c in ("t_weeks", "difficulty", "outcome")]
)


@dataclass(frozen=True)
class SparkFeatures:
    """A lazily evaluated feature DataFrame (``FEATURE_SCHEMA`` columns) and its inputs.

    Attributes:
        frame: one row per learner; evaluating it runs the kernel pass.
        stats: the global statistics every bucket received (computed eagerly).
        n_events: events in the input.
        n_buckets: learner buckets (``learner_hash % n_buckets``), one kernel call each.
    """

    frame: DataFrame
    stats: GlobalStats
    n_events: int
    n_buckets: int


# ---------------------------------------------------------------------------- schema


def _spark_type(t: pa.DataType) -> T.DataType:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return T.StringType()
    if pa.types.is_int64(t):
        return T.LongType()
    if pa.types.is_float64(t):
        return T.DoubleType()
    if pa.types.is_timestamp(t):
        return T.TimestampType()
    raise TypeError(f"no Spark type for {t}")  # pragma: no cover - FEATURE_SCHEMA is fixed


#: ``FEATURE_SCHEMA`` as a Spark schema (timestamps as ``TimestampType``, UTC instants).
FEATURE_SPARK_SCHEMA = T.StructType(
    [T.StructField(f.name, _spark_type(f.type), f.nullable) for f in FEATURE_SCHEMA]
)


# ---------------------------------------------------------------------------- input


def read_events(spark: SparkSession, events: str | Iterable[str] | DataFrame) -> DataFrame:
    """Canonical event columns from Parquet at any Hadoop-compatible path(s), or a DataFrame.

    Strings are cast to string, ``outcome`` / ``duration_s`` to double; an absent ``domain``
    reads as ``"unknown"`` (as in the local engine), absent numbers as null.

    Raises:
        InputError: unreadable path, missing required columns, or ``ts`` not a timestamp.
    """
    if not isinstance(events, str | DataFrame):
        events = list(events)
    label = _label(events)
    if isinstance(events, DataFrame):
        df = events
    else:
        paths = [events] if isinstance(events, str) else events
        try:
            df = spark.read.parquet(*paths)
        except AnalysisException as exc:
            raise InputError(f"{label}: cannot read Parquet events: {_first_line(exc)}") from None
    names = {f.name: f.dataType for f in df.schema.fields}
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise InputError(
            f"{label}: missing required column(s) {', '.join(missing)}; found "
            f"{', '.join(names) or 'none'} (events need learner_id, ts, item_id and optionally "
            "domain, outcome, duration_s)"
        )
    if not isinstance(names["ts"], T.TimestampType | T.TimestampNTZType):
        raise InputError(
            f"{label}: column ts has type {names['ts'].simpleString()}; expected a timestamp"
        )
    for c in ("outcome", "duration_s"):
        if c in names and not isinstance(names[c], T.NumericType | T.BooleanType):
            raise InputError(
                f"{label}: column {c} has type {names[c].simpleString()}; expected a number"
            )
    cols = [
        F.col("learner_id").cast("string").alias("learner_id"),
        F.col("ts"),
        F.coalesce(F.col("domain").cast("string"), F.lit("unknown")).alias("domain")
        if "domain" in names
        else F.lit("unknown").alias("domain"),
        F.col("item_id").cast("string").alias("item_id"),
    ]
    for c in ("outcome", "duration_s"):
        cols.append(
            F.col(c).cast("double").alias(c) if c in names else F.lit(None).cast("double").alias(c)
        )
    return df.select(*cols)


def _label(events: str | Iterable[str] | DataFrame) -> str:
    if isinstance(events, DataFrame):
        return "the events DataFrame"
    return events if isinstance(events, str) else ", ".join(events)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------- bucket UDF


def _vectorized(fn: Callable[[pa.Array], pa.Array], return_type: str) -> Callable[..., Column]:
    """``fn`` (Arrow array in, Arrow array out) as a Spark UDF: Arrow UDF, else pandas UDF."""
    if hasattr(F, "arrow_udf"):  # Spark >= 4.1: Arrow arrays in and out, no pandas

        def arrow_fn(ids: pa.Array) -> pa.Array:
            return fn(ids)

        arrow_udf: Any = F.arrow_udf
        return cast("Callable[..., Column]", arrow_udf(arrow_fn, return_type))

    import pandas as pd  # pragma: no cover - Spark < 4.1

    def pandas_fn(ids: pd.Series) -> pd.Series:  # pragma: no cover - Spark < 4.1
        return fn(pa.array(ids, pa.string())).to_pandas()

    pandas_udf: Any = F.pandas_udf  # pragma: no cover
    return cast("Callable[..., Column]", pandas_udf(pandas_fn, return_type))  # pragma: no cover


def _non_null(ids: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Ids with nulls replaced by "" (hashable), and the null mask (null ids get null keys)."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    null = np.asarray(ids.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    return (ids.fill_null("") if null.any() else ids), null


def bucket_column(learner_id: Column | str, n_buckets: int) -> Column:
    """``learner_hash(learner_id) % n_buckets`` (int) as a vectorized UDF over Arrow.

    Calls :func:`partition_of`, the same numba FNV-1a/SplitMix64 code as the local engine.
    A null id gets a null bucket (the global pass reports null ids as an input error).
    """
    if n_buckets < 1:
        raise ValueError("n_buckets must be >= 1")
    n = int(n_buckets)

    def bucket(ids: pa.Array) -> pa.Array:
        ids, null = _non_null(ids)
        return pa.array(partition_of(ids, n).astype(np.int32), pa.int32(), mask=null)

    return _vectorized(bucket, "int")(learner_id)


def fit_key_column(learner_id: Column | str, permille: int) -> Column:
    """The learner's hash as an order key (``hash ^ 2**63`` as int64), null outside the fit sample.

    Signed order of the key is the unsigned order of :func:`learner_hash`, so "the lowest
    hashes" is a plain ``<=`` in Spark.
    """
    keep_permille = int(permille)

    def key(ids: pa.Array) -> pa.Array:
        ids, null = _non_null(ids)
        h = learner_hash(ids)
        out = (h ^ _TOP_BIT).view(np.int64)
        return pa.array(out, pa.int64(), mask=null | ~in_fit_sample(h, keep_permille))

    return _vectorized(key, "long")(learner_id)


# ---------------------------------------------------------------------------- grouped apply


def _task_threads() -> None:
    """Numba threads in a Spark task = the task's CPUs (tasks already share the cores)."""
    cpus = 1
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx is not None:
            cpus = int(ctx.cpus())
    except Exception:  # pragma: no cover - outside a task or an old Spark
        cpus = 1
    nb.set_num_threads(max(1, min(cpus, int(nb.config.NUMBA_NUM_THREADS))))  # type: ignore[attr-defined]


def _events_table(table: pa.Table) -> pa.Table:
    """A bucket's events as the kernel expects them (bucket column dropped, ts as UTC)."""
    if "bucket" in table.column_names:
        table = table.drop_columns(["bucket"])
    ts = table.column("ts")
    if ts.type != _TS:
        table = table.set_column(table.schema.get_field_index("ts"), "ts", ts.cast(_TS))
    return table.combine_chunks()


def _apply_grouped(
    df: DataFrame,
    fn: Callable[[pa.Table], pa.Table],
    schema: T.StructType,
    *,
    use_arrow: bool | None = None,
) -> DataFrame:
    """``df.groupBy("bucket").applyInArrow(fn, schema)``; ``applyInPandas`` before Spark 4.

    The pandas fallback converts each group to Arrow and back; float NaN (which pandas uses
    for null) is turned back into null afterwards — the kernels never emit NaN values.
    """
    grouped = df.groupBy("bucket")
    if use_arrow is None:
        use_arrow = hasattr(grouped, "applyInArrow")
    if use_arrow:
        return grouped.applyInArrow(fn, schema)
    arrow_schema = pa.schema(
        [pa.field(f.name, _arrow_type(f.dataType), f.nullable) for f in schema.fields]
    )

    def pandas_fn(pdf: Any) -> Any:
        table = pa.Table.from_pandas(pdf, preserve_index=False)
        if "ts" in table.column_names:  # pandas gives naive session-local datetimes: use micros
            table = table.set_column(
                table.schema.get_field_index("ts"),
                "ts",
                table.column("ts_us").cast(pa.int64()).cast(_TS),
            ).drop_columns(["ts_us"])
        out = fn(table)
        cols = {}
        for f in arrow_schema:
            col = out.column(f.name)
            cols[f.name] = col.cast(pa.int64()) if pa.types.is_timestamp(col.type) else col
        return pa.table(cols).to_pandas()

    pandas_schema = T.StructType(
        [
            T.StructField(f.name, T.LongType(), f.nullable)
            if isinstance(f.dataType, T.TimestampType)
            else f
            for f in schema.fields
        ]
    )
    if "ts" in df.columns:
        ntz = isinstance(df.schema["ts"].dataType, T.TimestampNTZType)
        # naive timestamps count as UTC (as in the local engine), whatever the session zone
        micros = (
            F.expr("timestampdiff(MICROSECOND, TIMESTAMP_NTZ'1970-01-01 00:00:00', ts)")
            if ntz
            else F.unix_micros(F.col("ts"))
        )
        df = df.withColumn("ts_us", micros)
    out = df.groupBy("bucket").applyInPandas(pandas_fn, pandas_schema)
    fixed = []
    for f in schema.fields:
        c = F.col(f.name)
        if isinstance(f.dataType, T.TimestampType):
            c = F.timestamp_micros(c)
        elif isinstance(f.dataType, T.DoubleType):
            c = F.when(F.isnan(c), F.lit(None).cast("double")).otherwise(c)
        fixed.append(c.alias(f.name))
    return out.select(*fixed)


def _arrow_type(t: T.DataType) -> pa.DataType:
    mapping: dict[type, pa.DataType] = {
        T.StringType: pa.string(),
        T.LongType: pa.int64(),
        T.DoubleType: pa.float64(),
        T.TimestampType: _TS,
    }
    return mapping[type(t)]


def _shared(spark: SparkSession, value: V) -> Callable[[], V]:
    """A broadcast of ``value`` (or, on Spark Connect, the value captured in the closure)."""
    try:
        bc = spark.sparkContext.broadcast(value)
    except Exception:  # pragma: no cover - Spark Connect has no SparkContext
        return lambda: value
    return lambda: bc.value


# ---------------------------------------------------------------------------- global pass


def _collect_arrow(df: DataFrame) -> pa.Table:
    if hasattr(df, "toArrow"):
        return df.toArrow()
    return pa.Table.from_pandas(df.toPandas(), preserve_index=False)  # pragma: no cover


def item_stats_spark(
    events: DataFrame, params: FeatureParams, label: str = "events"
) -> tuple[ItemStats, int]:
    """Item statistics and the event count from one Spark aggregate, finished by local code.

    The aggregate is per (item, domain): graded count, outcome sum, events, and null counts
    of the required columns; :class:`ItemStatsAccumulator` folds it per item and per domain
    exactly as the local spill path folds its batches.

    Raises:
        InputError: no events, or nulls in learner_id, ts or item_id.
    """
    agg = _collect_arrow(
        events.groupBy("item_id", "domain").agg(
            F.count(F.lit(1)).alias("count_all"),
            F.count("outcome").alias("o_count"),
            F.sum("outcome").alias("o_sum"),
            F.sum(F.col("learner_id").isNull().cast("long")).alias("null_learner_id"),
            F.sum(F.col("ts").isNull().cast("long")).alias("null_ts"),
        )
    )
    n_events = int(sum(agg.column("count_all").to_pylist()))
    if n_events == 0:
        raise InputError(f"{label}: no events")
    nulls = {
        "learner_id": sum(agg.column("null_learner_id").to_pylist()),
        "ts": sum(agg.column("null_ts").to_pylist()),
        "item_id": pc.sum(agg.filter(pc.is_null(agg["item_id"]))["count_all"]).as_py() or 0,
    }
    for c, n in nulls.items():
        if n:
            raise InputError(f"{label}: {n:,} event(s) have a null {c}; it is required")
    acc = ItemStatsAccumulator()
    agg = agg.append_column("d_min", agg.column("domain").cast(pa.string()).fill_null("unknown"))
    item_schema = pa.schema(
        [
            ("item_id", pa.string()),
            ("o_count", pa.int64()),
            ("o_sum", pa.float64()),
            ("d_min", pa.string()),
        ]
    )
    domain_schema = pa.schema([("domain", pa.string()), ("count_all", pa.int64())])
    acc.merge(
        [agg.select(item_schema.names).cast(item_schema)],
        [agg.select(domain_schema.names).cast(domain_schema)],
    )
    return acc.finish(params.velocity), n_events


def _sample_table(sample: PairSample) -> pa.Table:
    key = (sample.learner_hash ^ _TOP_BIT).view(np.int64)
    x = np.asarray(sample.x, dtype=np.float64).reshape(-1, 3)
    return pa.table(
        {
            "hash_key": pa.array(key, pa.int64()),
            "gap_days": pa.array(sample.gap_days, pa.float64()),
            "recalled": pa.array(sample.recalled, pa.float64()),
            "x0": pa.array(x[:, 0], pa.float64()),
            "x1": pa.array(x[:, 1], pa.float64()),
            "x2": pa.array(x[:, 2], pa.float64()),
        }
    )


def _pair_sample(table: pa.Table) -> PairSample:
    key = np.asarray(table.column("hash_key").to_numpy(), dtype=np.int64)
    return PairSample(
        key.view(np.uint64) ^ _TOP_BIT,
        np.asarray(table.column("gap_days").to_numpy(), dtype=np.float64),
        np.asarray(table.column("recalled").to_numpy(), dtype=np.float64),
        np.ascontiguousarray(
            np.column_stack(
                [np.asarray(table.column(c).to_numpy(), np.float64) for c in ("x0", "x1", "x2")]
            )
        ),
    )


def _trend_table(sample: TrendSample) -> pa.Table:
    return pa.table(
        {
            "hash_key": pa.array((sample.learner_hash ^ _TOP_BIT).view(np.int64), pa.int64()),
            "t_weeks": pa.array(sample.t_weeks, pa.float64()),
            "difficulty": pa.array(sample.difficulty, pa.float64()),
            "outcome": pa.array(sample.outcome, pa.float64()),
        }
    )


def _trend_sample(table: pa.Table) -> TrendSample:
    key = np.asarray(table.column("hash_key").to_numpy(), dtype=np.int64)

    def col(name: str) -> np.ndarray:
        return np.asarray(table.column(name).to_numpy(), dtype=np.float64)

    return TrendSample(
        key.view(np.uint64) ^ _TOP_BIT, col("t_weeks"), col("difficulty"), col("outcome")
    )


def _hash_cut(counts: pa.Table, max_pairs: int) -> tuple[str, int]:
    """Which pairs to keep when whole learners are taken in hash order up to the cap.

    ``("all", 0)``, ``("none", 0)`` (even the first learner exceeds the cap) or
    ``("upto", key)``: keep ``hash_key <= key``. Learners sharing a hash form one run, kept
    or dropped together, as in the local engine's cap.
    """
    key = np.asarray(counts.column("hash_key").to_numpy(), dtype=np.int64)
    n = np.asarray(counts.column("n").to_numpy(), dtype=np.int64)
    order = np.argsort(key, kind="stable")
    key, cum = key[order], np.cumsum(n[order])
    if not len(key) or cum[-1] <= max_pairs:
        return "all", 0
    keep = np.flatnonzero(cum <= max_pairs)
    return ("upto", int(key[keep[-1]])) if len(keep) else ("none", 0)


def global_stats_spark(
    spark: SparkSession,
    events: DataFrame,
    params: FeatureParams,
    n_buckets: int | None = None,
    *,
    events_per_bucket: int = EVENTS_PER_PARTITION,
    label: str = "events",
    use_arrow: bool | None = None,
) -> tuple[GlobalStats, int, int]:
    """The global pass in Spark over canonical events: ``(GlobalStats, n_events, n_buckets)``."""
    n_events = int(events.count())
    if n_events == 0:
        raise InputError(f"{label}: no events")
    n_buckets = n_buckets or _default_buckets(spark, n_events, events_per_bucket)
    return _global_stats(events, params, n_buckets, label, use_arrow), n_events, n_buckets


def _default_buckets(spark: SparkSession, n_events: int, events_per_bucket: int) -> int:
    return max(math.ceil(n_events / max(events_per_bucket, 1)), _parallelism(spark))


def _global_stats(
    events: DataFrame,
    params: FeatureParams,
    n_buckets: int,
    label: str,
    use_arrow: bool | None,
) -> GlobalStats:
    """Item statistics (one aggregate), then the population fits on the samples.

    The retention population is fitted on the review pairs of the hash-sampled learners with
    the lowest hashes, up to ``max_fit_pairs`` pairs, and the velocity population on their
    graded first attempts (learners with at least ``min_graded_events``), up to
    ``max_fit_attempts``. Only the graded events of learners in the lowest share of the hash
    space are shuffled (:func:`_sample_until_complete`); each bucket returns its sample in
    hash order (:func:`sample_pairs`, :func:`sample_trend`), the cut is found from per-learner
    counts, and only the kept rows reach the driver — the same rows, in the same order, as
    the local engine's fits.
    """
    items, _ = item_stats_spark(events, params, label)
    retention, velocity = params.retention, params.velocity
    # both samples use graded events only (pairs and first graded attempts skip the others)
    graded = events.where(F.col("outcome").isNotNull()).drop("duration_s")

    def pairs_of(table: pa.Table) -> pa.Table:
        return _sample_table(sample_pairs(prepare(_events_table(table), items), retention))

    def attempts_of(table: pa.Table) -> pa.Table:
        prep = prepare(_events_table(table), items)
        return _trend_table(sample_trend(prep, velocity, trend_observations(prep, items)))

    expected = float(items.n_graded.sum())
    pairs = _sample_until_complete(
        graded,
        pairs_of,
        _SAMPLE_SCHEMA,
        retention.fit_sample_permille,
        retention.max_fit_pairs,
        expected * retention.fit_sample_permille / 1000.0,
        n_buckets,
        use_arrow,
    )
    attempts = _sample_until_complete(
        graded,
        attempts_of,
        _TREND_SCHEMA,
        velocity.fit_sample_permille,
        velocity.max_fit_attempts,
        expected * velocity.fit_sample_permille / 1000.0,
        n_buckets,
        use_arrow,
    )
    return global_stats_from(items, [_pair_sample(pairs)], params, [_trend_sample(attempts)])


def _sample_until_complete(
    graded: DataFrame,
    sampler: Callable[[pa.Table], pa.Table],
    schema: T.StructType,
    permille: int,
    cap: int,
    expected: float,
    n_buckets: int,
    use_arrow: bool | None,
) -> pa.Table:
    """The sample rows of the lowest-hash learners up to ``cap``, as the local engine's.

    Only learners in the lowest share of the hash space (``FIT_SHARE_SLACK`` times what the
    cap needs at one row per graded event; widened and re-run in the rare case it holds too
    few rows) are shuffled.
    """
    keyed = graded.withColumn("_key", fit_key_column("learner_id", permille))
    keyed = keyed.where(F.col("_key").isNotNull())
    share = FIT_SHARE_SLACK * cap / max(expected, 1.0)
    share = 1.0 if share <= 0.0 else min(1.0, share)
    while True:
        rows, complete = _fit_sample(keyed, sampler, schema, cap, share, n_buckets, use_arrow)
        if complete or share >= 1.0:
            return rows
        share = min(1.0, share * 8.0)


def _fit_sample(
    keyed: DataFrame,
    sampler: Callable[[pa.Table], pa.Table],
    schema: T.StructType,
    cap: int,
    share: float,
    n_buckets: int,
    use_arrow: bool | None,
) -> tuple[pa.Table, bool]:
    """Sample rows of the learners in the lowest ``share`` of the hash space, cut to the cap.

    Returns the kept rows and whether they are certainly the global sample: true when the
    cap falls inside the selected learners, every lower hash being selected (the caller also
    accepts the result once the share is the whole hash space).
    """
    selected = keyed
    if share < 1.0:
        limit = max(math.floor(share * 2.0**64) - 2**63 - 1, -(2**63))
        selected = selected.where(F.col("_key") <= F.lit(limit))
    # any grouping of whole learners gives the same merged sample: group by the key at hand
    # (the learner hash) rather than hashing again
    selected = selected.withColumn("bucket", F.pmod(F.col("_key"), F.lit(n_buckets)))
    selected = selected.drop("_key")

    def fit_sample(table: pa.Table) -> pa.Table:
        _task_threads()
        return sampler(table)

    samples = _apply_grouped(selected, fit_sample, schema, use_arrow=use_arrow).persist()
    try:
        counts = _collect_arrow(samples.groupBy("hash_key").agg(F.count(F.lit(1)).alias("n")))
        how, cut = _hash_cut(counts, cap)
        if how == "all":
            kept = samples
        elif how == "none":
            kept = samples.limit(0)
        else:
            kept = samples.where(F.col("hash_key") <= F.lit(cut))
        return _collect_arrow(kept), how != "all"
    finally:
        samples.unpersist()


def bucket_events(budget: MemoryBudget, concurrent_tasks: int) -> int:
    """Events per bucket so that ``concurrent_tasks`` Python workers fit the budget at once.

    ``budget`` is the memory of one machine that runs tasks: the whole local machine in local
    mode, one executor on a cluster (its ``spark.executor.pyspark.memory`` or
    ``memoryOverhead`` plus heap). The Python workers get :data:`PYTHON_SHARE` of it, split
    evenly among the tasks that run at once, at :data:`WORKER_BYTES_PER_EVENT` each.

    Raises:
        InputError: the budget leaves a task fewer than :data:`MIN_BUCKET_EVENTS` events
            (the message names the smallest budget that works).
    """
    tasks = max(1, int(concurrent_tasks))
    events = int(budget.limit_bytes * PYTHON_SHARE / tasks) // WORKER_BYTES_PER_EVENT
    if events < MIN_BUCKET_EVENTS:
        minimum = math.ceil(MIN_BUCKET_EVENTS * WORKER_BYTES_PER_EVENT * tasks / PYTHON_SHARE)
        raise InputError(
            f"--memory-limit {format_bytes(budget.limit_bytes)} is too small for Spark with "
            f"{tasks} concurrent task(s): give at least {format_bytes(minimum)}"
        )
    return events


def n_buckets_for(
    budget: MemoryBudget, n_events: int, concurrent_tasks: int, parallelism: int
) -> int:
    """The bucket count the budget implies: ``ceil(events / bucket_events)``, ≥ ``parallelism``."""
    per = bucket_events(budget, concurrent_tasks)
    return max(math.ceil(n_events / per), int(parallelism), 1)


def concurrent_tasks(spark: SparkSession) -> int:
    """Tasks that run at once on one machine: local cores, or an executor's cores ÷ task CPUs.

    On a cluster without ``spark.executor.cores`` (Databricks sizes executors from the node
    type) it is the default parallelism: as if every task shared one budget, which errs towards
    more, smaller buckets.
    """
    conf = spark.conf
    master = str(conf.get("spark.master", "local") or "local")
    cores = conf.get("spark.executor.cores", None)
    if master.startswith("local") or not cores:
        return _parallelism(spark)
    return max(1, int(cores) // int(conf.get("spark.task.cpus", "1") or 1))


def _parallelism(spark: SparkSession) -> int:
    try:
        return int(spark.sparkContext.defaultParallelism)
    except Exception:  # pragma: no cover - Spark Connect
        return int(spark.conf.get("spark.sql.shuffle.partitions") or 2)


# ---------------------------------------------------------------------------- entry points


def feature_frame(
    spark: SparkSession,
    events: str | Iterable[str] | DataFrame,
    params: FeatureParams | None = None,
    *,
    n_buckets: int | None = None,
    events_per_bucket: int = EVENTS_PER_PARTITION,
    stats: GlobalStats | None = None,
    use_arrow: bool | None = None,
    budget: MemoryBudget | None = None,
) -> SparkFeatures:
    """Features of every learner in ``events`` as a Spark DataFrame (kernel pass is lazy).

    ``n_buckets`` defaults to about ``events_per_bucket`` events per bucket and at least the
    cluster's default parallelism; with a ``budget`` (and no ``n_buckets``) the bucket size
    comes from it instead (:func:`n_buckets_for`). One bucket is one ``feature_kernel`` call,
    so its events must fit in a Python worker. ``stats`` skips the
    global pass (score new learners against a fixed population). ``use_arrow=False`` forces
    the ``applyInPandas`` path (the default picks ``applyInArrow`` when available).
    """
    params = params or FeatureParams()
    if not isinstance(events, str | DataFrame):
        events = list(events)
    label = _label(events)
    df = read_events(spark, events)
    n_events = int(df.count())
    if n_events == 0:
        raise InputError(f"{label}: no events")
    if n_buckets is None and budget is not None:
        n_buckets = n_buckets_for(budget, n_events, concurrent_tasks(spark), _parallelism(spark))
    n_buckets = n_buckets or _default_buckets(spark, n_events, events_per_bucket)
    if stats is None:
        stats = _global_stats(df, params, n_buckets, label, use_arrow)
    bucketed = df.withColumn("bucket", bucket_column("learner_id", n_buckets))
    get_stats = _shared(spark, stats)

    def kernel(table: pa.Table) -> pa.Table:
        _task_threads()
        return feature_kernel(_events_table(table), get_stats(), params)

    frame = _apply_grouped(bucketed, kernel, FEATURE_SPARK_SCHEMA, use_arrow=use_arrow)
    return SparkFeatures(frame, stats, n_events, int(n_buckets))


def write_parquet(frame: DataFrame, out_path: str, mode: str = "overwrite") -> str:
    """Write a feature DataFrame as Parquet with microsecond UTC timestamps (not INT96)."""
    spark = frame.sparkSession
    key = "spark.sql.parquet.outputTimestampType"
    previous = spark.conf.get(key, None)
    spark.conf.set(key, "TIMESTAMP_MICROS")
    try:
        frame.write.mode(mode).parquet(out_path)
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)
    return out_path


def spark_features(
    spark: SparkSession,
    events: str | Iterable[str] | DataFrame,
    out_path: str,
    params: FeatureParams | None = None,
    *,
    n_buckets: int | None = None,
    events_per_bucket: int = EVENTS_PER_PARTITION,
    mode: str = "overwrite",
    budget: MemoryBudget | None = None,
) -> SparkFeatures:
    """Compute features with Spark and write them to ``out_path`` (a Parquet directory).

    ``out_path`` may be any Hadoop-compatible URI (``s3a://``, ``abfss://``, ``hdfs://``,
    ``dbfs:/``, local). Returns the run's :class:`SparkFeatures` (``frame`` re-reads nothing;
    read the written files for further work). ``budget`` sizes the buckets (see
    :func:`feature_frame`).
    """
    run = feature_frame(
        spark,
        events,
        params,
        n_buckets=n_buckets,
        events_per_bucket=events_per_bucket,
        budget=budget,
    )
    write_parquet(run.frame, out_path, mode)
    return run


def is_local_path(path: str) -> bool:
    """Whether ``path`` names the local file system (no scheme, or ``file:``)."""
    scheme = urlparse(path).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and sys.platform == "win32")


def _local(path: str) -> str:
    """A local path or ``file:`` URI as a plain path."""
    return urlparse(path).path if path.startswith("file:") else path


@dataclass(frozen=True)
class CliRun:
    """What ``cohortlens features --engine spark`` reports.

    Attributes:
        table: the written features read back (local outputs only; ``None`` for remote ones).
        learners: rows written.
        counts: value counts of the status / archetype columns (``"None"`` for null).
    """

    table: pa.Table | None
    learners: int
    counts: dict[str, dict[str, int]]


def cli_features(
    events: str,
    out_path: str,
    params: FeatureParams | None = None,
    budget: MemoryBudget | None = None,
) -> CliRun:
    """The CLI's Spark run: features of ``events`` written to ``out_path``, then summarized.

    The buckets are sized by ``budget`` (default: :meth:`MemoryBudget.default`); a Spark
    started here in local mode also gets the JVM's share of an explicit ``budget`` as
    ``spark.driver.memory``.
    """
    import pyarrow.parquet as pq

    if is_local_path(events) and not os.path.exists(_local(events)):
        raise InputError(f"{events}: no such file or directory")
    with warnings.catch_warnings():
        # pyspark warns about the pandas version on import and on every Arrow UDF; these UDFs
        # use no pandas
        warnings.filterwarnings("ignore", "PySpark does not yet fully support", FutureWarning)
        spark = session("cohortlens features", budget)
        spark_features(spark, events, out_path, params, budget=budget or MemoryBudget.default())
    if is_local_path(out_path):
        table = pq.read_table(_local(out_path)).cast(FEATURE_SCHEMA)
        counts = {c: _value_counts(table, c) for c in _SUMMARY_COLUMNS}
        return CliRun(table, table.num_rows, counts)
    rows = spark.read.parquet(out_path).groupBy(*_SUMMARY_COLUMNS).count().collect()
    counts = {}
    for i, c in enumerate(_SUMMARY_COLUMNS):
        per: dict[str, int] = {}
        for r in rows:
            per[str(r[i])] = per.get(str(r[i]), 0) + int(r[-1])
        counts[c] = dict(sorted(per.items()))
    return CliRun(None, sum(int(r[-1]) for r in rows), counts)


_SUMMARY_COLUMNS = ("velocity_status", "retention_status", "affinity_archetype")


def _value_counts(table: pa.Table, column: str) -> dict[str, int]:
    pairs = pc.value_counts(table.column(column)).to_pylist()
    return dict(sorted((str(p["values"]), int(p["counts"])) for p in pairs))


def _launches_local_spark() -> bool:
    """Whether this process will start its own JVM with a local master."""
    if "PYSPARK_GATEWAY_PORT" in os.environ:  # started by spark-submit: its settings rule
        return False
    args = os.environ.get("PYSPARK_SUBMIT_ARGS", "").split()
    master = args[args.index("--master") + 1] if "--master" in args[:-1] else "local"
    return master.startswith("local")


def session(app_name: str = "cohortlens", budget: MemoryBudget | None = None) -> SparkSession:
    """The active Spark session, or a new one (master from spark-submit / spark-defaults).

    When this process starts Spark itself in local mode (no spark-submit, no ``--master``
    other than ``local`` in ``PYSPARK_SUBMIT_ARGS``), the Python workers use this interpreter
    unless ``PYSPARK_PYTHON`` is set. On a cluster, set ``PYSPARK_PYTHON`` (or
    ``spark.pyspark.python``) to the executors' interpreter. With a ``budget``, a local Spark
    started here gets the JVM's share of it (1 − :data:`PYTHON_SHARE`) as
    ``spark.driver.memory`` (the Python workers get the rest through the bucket size).
    """
    builder = SparkSession.builder.appName(app_name).config("spark.ui.showConsoleProgress", "false")
    if SparkSession.getActiveSession() is None and _launches_local_spark():
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        if budget is not None:
            heap_mib = max(512, int(budget.limit_bytes * (1 - PYTHON_SHARE)) >> 20)
            builder = builder.config("spark.driver.memory", f"{heap_mib}m")
    return builder.getOrCreate()


__all__ = [
    "FEATURE_SPARK_SCHEMA",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "SparkFeatures",
    "bucket_column",
    "bucket_events",
    "concurrent_tasks",
    "feature_frame",
    "global_stats_spark",
    "is_local_path",
    "item_stats_spark",
    "n_buckets_for",
    "read_events",
    "session",
    "spark_features",
    "write_parquet",
]
