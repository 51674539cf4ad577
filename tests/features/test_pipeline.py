"""The partitioned pipeline gives exactly the in-memory features, whatever the partitioning."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.features.featsynth import Synth

from cohortlens.features import FEATURE_SCHEMA, build_features, compute_features, write_features


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory: pytest.TempPathFactory, synth: Synth) -> Path:
    d = tmp_path_factory.mktemp("events")
    half = synth.events.num_rows // 2
    pq.write_table(synth.events.slice(0, half), d / "a.parquet", row_group_size=4000)
    pq.write_table(synth.events.slice(half), d / "b.parquet", row_group_size=4000)
    return d


@pytest.mark.parametrize("n_partitions", [1, 3, 8])
def test_build_features_equals_in_memory(
    parquet_dir: Path, synth: Synth, n_partitions: int
) -> None:
    expected = compute_features(synth.events)
    got = build_features(
        parquet_dir, n_partitions=n_partitions, n_workers=1, flush_rows=3000, batch_rows=2500
    )
    assert got.schema == FEATURE_SCHEMA
    assert got.equals(expected)


def test_build_features_from_reader_and_processes(
    parquet_dir: Path, synth: Synth, tmp_path: Path
) -> None:
    expected = compute_features(synth.events)
    reader = pa.RecordBatchReader.from_batches(
        synth.events.schema, synth.events.to_batches(max_chunksize=1500)
    )
    assert build_features(reader, n_partitions=5, n_workers=1).equals(expected)
    got = build_features(parquet_dir, n_partitions=4, n_workers=2, out_dir=tmp_path / "out")
    assert got.equals(expected)
    assert len(list((tmp_path / "out").glob("features-*.parquet"))) == 4


def test_write_features_keeps_params_and_run_id(synth: Synth, tmp_path: Path) -> None:
    from cohortlens.features import FeatureParams

    feats = compute_features(synth.events.slice(0, 500))
    path = write_features(feats, tmp_path / "f.parquet", FeatureParams(), run_id="run-1")
    back = pq.read_table(path)
    assert back.schema.metadata[b"cohortlens.run_id"] == b"run-1"
    assert b"half_life_weeks" in back.schema.metadata[b"cohortlens.feature_params"]
    assert back.cast(FEATURE_SCHEMA).equals(feats)
