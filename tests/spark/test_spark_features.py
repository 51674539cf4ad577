"""Features computed by Spark (local[2]) equal the local engine's, learner for learner."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from tests.spark.conftest import PANDAS_WARNING

from cohortlens.errors import InputError
from cohortlens.features import (
    FEATURE_SCHEMA,
    FeatureParams,
    RetentionParams,
    build_features,
    compute_features,
    compute_global_stats,
    partition_of,
)
from cohortlens.features.spark import (
    _hash_cut,
    bucket_column,
    feature_frame,
    read_events,
    spark_features,
    write_parquet,
)

pytestmark = pytest.mark.filterwarnings(PANDAS_WARNING)

RTOL = 1e-9


def assert_same_features(got: pa.Table, expected: pa.Table, rtol: float = RTOL) -> None:
    """Same learners and columns; per value relative difference <= rtol; nulls equal."""
    got = got.cast(FEATURE_SCHEMA)
    got = got.take(pc.sort_indices(got, [("learner_id", "ascending")]))
    expected = expected.take(pc.sort_indices(expected, [("learner_id", "ascending")]))
    assert got.column("learner_id").equals(expected.column("learner_id"))
    for name in FEATURE_SCHEMA.names:
        a, b = got.column(name), expected.column(name)
        assert a.is_null().equals(b.is_null()), f"{name}: nulls differ"
        if pa.types.is_floating(a.type):
            x = np.asarray(a.drop_null().to_numpy(), dtype=float)
            y = np.asarray(b.drop_null().to_numpy(), dtype=float)
            scale = np.maximum(np.abs(x), np.abs(y))
            rel = np.divide(np.abs(x - y), scale, out=np.zeros_like(x), where=scale > 0)
            assert rel.max(initial=0.0) <= rtol, f"{name}: relative difference {rel.max()}"
        else:
            assert a.equals(b), f"{name} differs"


def test_spark_features_equal_local_engine(
    spark: Any, events_dir: Path, sim_events: pa.Table, tmp_path: Path
) -> None:
    expected = compute_features(sim_events)
    assert expected.equals(build_features(events_dir, n_workers=1))
    out = str(tmp_path / "features.parquet")
    run = spark_features(spark, str(events_dir), out, n_buckets=3)
    assert run.n_events == sim_events.num_rows
    assert run.n_buckets == 3
    local_stats = compute_global_stats(sim_events)
    assert run.stats.retention == local_stats.retention
    assert run.stats.items.item_ids.equals(local_stats.items.item_ids)
    np.testing.assert_array_equal(run.stats.items.difficulty, local_stats.items.difficulty)
    written = pq.read_table(out)
    # microsecond UTC timestamps (not Spark's INT96 default), whatever the session time zone
    assert written.schema.field("first_ts").type == pa.timestamp("us", tz="UTC")
    assert written.num_rows == expected.num_rows == len(sim_events.column("learner_id").unique())
    assert_same_features(written, expected)
    # the writer's timestamp setting was restored
    assert spark.conf.get("spark.sql.parquet.outputTimestampType") == "INT96"


def test_sampled_and_capped_population_fit_matches(
    spark: Any, few_learners: pa.Table, tmp_path: Path
) -> None:
    """A hash sample and a pair cap that cuts inside buckets: the same population fit."""
    sampled = RetentionParams(fit_sample_permille=600)
    n_sampled = compute_global_stats(
        few_learners, FeatureParams(retention=sampled)
    ).retention.n_pairs
    params = FeatureParams(retention=replace(sampled, max_fit_pairs=n_sampled // 2))
    local = compute_global_stats(few_learners, params)
    assert 0 < local.retention.n_pairs <= n_sampled // 2 < n_sampled
    path = tmp_path / "few.parquet"
    pq.write_table(few_learners, path)
    run = feature_frame(spark, str(path), params, n_buckets=4)
    assert run.stats.retention == local.retention
    assert_same_features(run.frame.toArrow(), compute_features(few_learners, params))


@pytest.mark.parametrize("use_arrow", [True, False], ids=["applyInArrow", "applyInPandas"])
def test_naive_timestamps_missing_columns_and_pandas_fallback(
    spark: Any, few_learners: pa.Table, tmp_path: Path, use_arrow: bool
) -> None:
    """Naive timestamps count as UTC, absent domain is "unknown", in both grouped-map paths."""
    events = few_learners.select(["learner_id", "ts", "item_id", "outcome"])
    events = events.set_column(1, "ts", events.column("ts").cast(pa.timestamp("us")))
    path = tmp_path / "naive.parquet"
    pq.write_table(events, path)
    assert str(spark.read.parquet(str(path)).schema["ts"].dataType) == "TimestampNTZType()"
    run = feature_frame(spark, str(path), n_buckets=2, use_arrow=use_arrow)
    assert_same_features(run.frame.toArrow(), compute_features(events))


def test_fixed_stats_and_dataframe_input(
    spark: Any, sim_events: pa.Table, few_learners: pa.Table
) -> None:
    """Scoring against given global statistics, from a DataFrame: the kernel's own result."""
    stats = compute_global_stats(sim_events)
    df = spark.createDataFrame(few_learners.drop_columns(["event_id"]))
    run = feature_frame(spark, df, stats=stats, n_buckets=2)
    assert run.stats is stats
    assert_same_features(run.frame.toArrow(), compute_features(few_learners, stats=stats))


def test_bucket_column_is_the_local_partition(spark: Any) -> None:
    ids = ["", "a", "learner-1", "learner-2", "é😀", "x" * 300, "42"]
    df = spark.createDataFrame([(i,) for i in ids], "learner_id string")
    got = [r[0] for r in df.select(bucket_column("learner_id", 7)).collect()]
    assert got == partition_of(pa.array(ids), 7).tolist()
    with pytest.raises(ValueError, match="n_buckets"):
        bucket_column("learner_id", 0)


def test_write_parquet_restores_the_session_setting(spark: Any, tmp_path: Path) -> None:
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MILLIS")
    try:
        df = spark.sql("SELECT TIMESTAMP'2025-01-06 10:00:00.123456 UTC' AS t")
        write_parquet(df, str(tmp_path / "t"))
        assert pq.read_table(tmp_path / "t").schema.field("t").type == pa.timestamp("us", tz="UTC")
        assert spark.conf.get("spark.sql.parquet.outputTimestampType") == "TIMESTAMP_MILLIS"
    finally:
        spark.conf.unset("spark.sql.parquet.outputTimestampType")


# ---------------------------------------------------------------------------- bad input


def test_missing_path_is_an_input_error(spark: Any, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.parquet: cannot read Parquet events"):
        read_events(spark, str(tmp_path / "nope.parquet"))


def test_missing_and_mistyped_columns_are_named(
    spark: Any, sim_events: pa.Table, tmp_path: Path
) -> None:
    no_item = tmp_path / "no_item.parquet"
    pq.write_table(sim_events.drop_columns(["item_id", "event_id"]).slice(0, 10), no_item)
    with pytest.raises(
        InputError, match=r"missing required column\(s\) item_id; found learner_id, ts"
    ):
        read_events(spark, str(no_item))
    text_ts = tmp_path / "text_ts.parquet"
    t = sim_events.slice(0, 10)
    pq.write_table(t.set_column(2, "ts", t.column("ts").cast(pa.string())), text_ts)
    with pytest.raises(InputError, match="column ts has type string; expected a timestamp"):
        read_events(spark, str(text_ts))
    text_outcome = tmp_path / "text_outcome.parquet"
    pq.write_table(t.set_column(5, "outcome", pa.array(["yes"] * 10)), text_outcome)
    with pytest.raises(InputError, match="column outcome has type string; expected a number"):
        read_events(spark, str(text_outcome))


def test_null_learner_and_empty_input_are_input_errors(
    spark: Any, sim_events: pa.Table, tmp_path: Path
) -> None:
    t = sim_events.slice(0, 20).drop_columns(["event_id"])
    ids = pa.array([None] * 3 + t.column("learner_id").to_pylist()[3:], pa.string())
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(t.set_column(0, "learner_id", ids), nulls)
    with pytest.raises(InputError, match="3 event\\(s\\) have a null learner_id"):
        feature_frame(spark, str(nulls))
    empty = tmp_path / "empty.parquet"
    pq.write_table(t.slice(0, 0), empty)
    with pytest.raises(InputError, match="no events"):
        feature_frame(spark, str(empty))


# ---------------------------------------------------------------------------- the pair cut


def _counts(keys: list[int], n: list[int]) -> pa.Table:
    return pa.table({"hash_key": pa.array(keys, pa.int64()), "n": pa.array(n, pa.int64())})


def test_hash_cut_keeps_whole_learners_in_hash_order() -> None:
    assert _hash_cut(_counts([5, -3, 9], [1, 2, 3]), 6) == ("all", 0)
    assert _hash_cut(_counts([5, -3, 9], [1, 2, 3]), 5) == ("upto", 5)  # -3 (2), 5 (1) = 3
    assert _hash_cut(_counts([5, -3, 9], [1, 2, 3]), 2) == ("upto", -3)
    assert _hash_cut(_counts([5, -3, 9], [1, 2, 3]), 1) == ("none", 0)
    assert _hash_cut(_counts([], []), 1) == ("all", 0)


def test_fit_pass_widens_a_too_small_hash_share(
    spark: Any, few_learners: pa.Table, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first selection holding too few pairs is widened until the cap falls inside it."""
    import cohortlens.features.spark as spark_engine

    calls: list[float] = []
    original = spark_engine._fit_sample

    def counting(*args: Any) -> Any:
        calls.append(args[4])  # (keyed, sampler, schema, cap, share, ...)
        return original(*args)

    monkeypatch.setattr(spark_engine, "FIT_SHARE_SLACK", 0.05)
    monkeypatch.setattr(spark_engine, "_fit_sample", counting)
    params = FeatureParams(retention=RetentionParams(max_fit_pairs=200))
    path = tmp_path / "few.parquet"
    pq.write_table(few_learners, path)
    stats, _, _ = spark_engine.global_stats_spark(spark, read_events(spark, str(path)), params, 2)
    assert len(calls) >= 2
    assert calls[0] < 1.0
    local = compute_global_stats(few_learners, params)
    assert stats.retention == local.retention
    assert stats.velocity == local.velocity


def test_local_interpreter_only_when_this_process_starts_local_spark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cohortlens.features.spark import _launches_local_spark, is_local_path

    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS", raising=False)
    assert _launches_local_spark()
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--master local[2] pyspark-shell")
    assert _launches_local_spark()
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--master yarn --deploy-mode client pyspark-shell")
    assert not _launches_local_spark()
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS")
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "4040")
    assert not _launches_local_spark()
    assert is_local_path("/data/x.parquet")
    assert is_local_path("file:///data/x.parquet")
    assert is_local_path("rel/x.parquet")
    assert not is_local_path("s3a://bucket/events/")
    assert not is_local_path("dbfs:/events")


# ---------------------------------------------------------------- buckets from the memory budget


def test_bucket_events_splits_the_python_share_among_concurrent_tasks() -> None:
    from cohortlens.budget import MemoryBudget
    from cohortlens.features.spark import PYTHON_SHARE, WORKER_BYTES_PER_EVENT, bucket_events

    three = MemoryBudget(limit_bytes=3 << 30)
    assert bucket_events(three, 2) == int((3 << 30) * PYTHON_SHARE / 2) // WORKER_BYTES_PER_EVENT
    assert bucket_events(three, 2) == 1_872_805  # 1.5 GiB over two workers at 430 B/event
    assert bucket_events(three, 4) == bucket_events(MemoryBudget(limit_bytes=3 << 29), 2)


def test_n_buckets_for_grows_as_the_budget_shrinks_and_keeps_every_core_busy() -> None:
    from cohortlens.budget import MemoryBudget
    from cohortlens.features.spark import bucket_events, n_buckets_for

    events = 237_000_000
    big, small = MemoryBudget(limit_bytes=8 << 30), MemoryBudget(limit_bytes=2 << 30)
    assert n_buckets_for(big, events, 2, 2) == -(-events // bucket_events(big, 2)) == 48
    assert n_buckets_for(small, events, 2, 2) == -(-events // bucket_events(small, 2)) == 190
    assert n_buckets_for(big, 1000, 2, 6) == 6  # never fewer buckets than cores


def test_a_budget_too_small_for_one_bucket_names_the_minimum() -> None:
    from cohortlens.budget import MemoryBudget
    from cohortlens.features.spark import MIN_BUCKET_EVENTS, bucket_events

    with pytest.raises(
        InputError, match=r"--memory-limit 1\.0 MiB is too small .* at least 82\.0 MiB"
    ):
        bucket_events(MemoryBudget(limit_bytes=1 << 20), 1)
    # the named minimum works
    assert bucket_events(MemoryBudget(limit_bytes=86_000_000), 1) == MIN_BUCKET_EVENTS


def test_feature_frame_sizes_buckets_from_the_budget(
    spark: Any, events_dir: Path, sim_events: pa.Table
) -> None:
    from cohortlens.budget import MemoryBudget
    from cohortlens.features.spark import concurrent_tasks

    assert concurrent_tasks(spark) == 2  # local[2]: the cores
    run = feature_frame(spark, str(events_dir), budget=MemoryBudget(limit_bytes=1 << 30))
    assert run.n_buckets == 2  # 15k events fit one bucket; at least the 2 cores
    assert_same_features(run.frame.toArrow(), compute_features(sim_events))
