"""The fast paths (numba string coding, scatter sort, in-memory pipeline) against references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.features.featsynth import Synth, events_table

from cohortlens.features import FeatureParams, RetentionParams, build_features, compute_features
from cohortlens.features._encode import encode_strings
from cohortlens.features._prep import encode_table, encoded_item_stats, prepare
from cohortlens.features.engine import PairSample, _cap, sample_pairs
from cohortlens.features.retention import review_pairs
from cohortlens.features.stats import ItemStatsAccumulator, item_stats

_words = st.lists(st.text(alphabet="abcé\x00xyz0123456789", max_size=20), min_size=1, max_size=60)


def _reference_codes(values: list[str]) -> tuple[list[int], list[str]]:
    distinct = sorted(set(values), key=lambda s: s.encode())
    rank = {v: i for i, v in enumerate(distinct)}
    return [rank[v] for v in values], distinct


@settings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(_words, min_size=1, max_size=5),
    as_dict=st.booleans(),
    run_length=st.sampled_from([1, 5, 40]),
)
def test_string_codes_are_sorted_ranks_across_chunks(
    chunks: list[list[str]], as_dict: bool, run_length: int
) -> None:
    """Codes are sorted-value ranks whatever the chunking, encoding and run structure (runs of
    4+ equal values take the run-head path)."""
    chunks = [[v for v in c for _ in range(run_length)] for c in chunks]
    arrays = [pa.array(c, pa.string()) for c in chunks]
    if as_dict:  # every chunk has its own dictionary (as Parquet row groups do)
        arrays = [pc.dictionary_encode(a) for a in arrays]
    codes, distinct = encode_strings(pa.chunked_array(arrays))
    ref_codes, ref_distinct = _reference_codes([v for c in chunks for v in c])
    assert codes.tolist() == ref_codes
    assert distinct.to_pylist() == ref_distinct


def test_same_length_dictionaries_are_not_confused() -> None:
    # two chunks whose temporary dictionaries have the same length (a freed buffer can be
    # reused at the same address): codes must follow the values, not the buffers
    chunks = [["a", "b"] * 3, ["c", "d"] * 3, ["b", "c"] * 3]
    codes, distinct = encode_strings(pa.chunked_array([pa.array(c) for c in chunks]))
    assert distinct.to_pylist() == ["a", "b", "c", "d"]
    assert codes.tolist() == _reference_codes([v for c in chunks for v in c])[0]


def test_string_nulls_fill_or_raise() -> None:
    plain = pa.chunked_array([pa.array(["x", None, "a"]), pa.array([None, "x"])])
    dict_ = pa.chunked_array([pc.dictionary_encode(c) for c in plain.chunks])
    for arr in (plain, dict_):
        codes, distinct = encode_strings(arr, fill="unknown")
        assert distinct.to_pylist() == ["a", "unknown", "x"]
        assert codes.tolist() == [2, 1, 0, 1, 2]
        with pytest.raises(ValueError, match="nulls"):
            encode_strings(arr)


_event = st.tuples(
    st.integers(0, 4),
    st.integers(0, 6),  # hour: many timestamp ties
    st.integers(0, 3),
    st.sampled_from([0.0, 1.0, 0.5, None]),
    st.integers(0, 2),
    st.sampled_from([None, 10.0, 20.0]),
)


@settings(max_examples=40, deadline=None)
@given(
    evs=st.lists(_event, min_size=1, max_size=150),
    n_chunks=st.integers(1, 4),
    learner_major=st.booleans(),
)
def test_prepare_order_matches_lexsort(
    evs: list[tuple], n_chunks: int, learner_major: bool
) -> None:
    """Any input order gives the (learner, ts, item, outcome, duration) order; input already
    in learner order (the path that sorts in place) included."""
    if learner_major:
        evs = sorted(evs, key=lambda e: e[0])  # stable: time order inside a learner stays random
    t = events_table(
        [f"L{e[0]}" for e in evs],
        [e[1] / 24 for e in evs],
        [f"i{e[2]}" for e in evs],
        [e[3] for e in evs],
        domain=["d0"] * len(evs),  # full ties differ in no column
        duration=[e[5] for e in evs],
    )
    t = pa.Table.from_batches(t.to_batches(max_chunksize=max(1, len(evs) // n_chunks)))
    prep = prepare(t, item_stats(t))
    learner = np.array([e[0] for e in evs])
    ts = np.array([e[1] for e in evs])
    item = np.array([e[2] for e in evs])
    y = np.array([-1.0 if e[3] is None else e[3] for e in evs])
    dur = np.array([-1.0 if e[5] is None else e[5] for e in evs])
    order = np.lexsort((dur, y, item, ts, learner))
    assert np.array_equal(np.diff(prep.starts), np.bincount(learner)[np.unique(learner)])
    got = np.column_stack(
        (
            prep.learner,
            (prep.ts_us - prep.ts_us.min()) // 3_600_000_000,
            prep.item_local,
            np.nan_to_num(prep.outcome, nan=-1.0),
            np.nan_to_num(prep.duration_s, nan=-1.0),
        )
    )
    ref = np.column_stack(
        (
            np.unique(learner, return_inverse=True)[1][order],
            ts[order] - ts.min(),
            np.unique(item, return_inverse=True)[1][order],
            y[order],
            dur[order],
        )
    )
    assert np.array_equal(got, ref)


@settings(max_examples=40, deadline=None)
@given(evs=st.lists(_event, min_size=1, max_size=150), cap=st.integers(0, 40))
def test_sample_pairs_equals_sorting_every_pair(evs: list[tuple], cap: int) -> None:
    t = events_table(
        [f"L{e[0]}" for e in evs],
        [e[1] / 2 for e in evs],
        [f"i{e[2]}" for e in evs],
        [e[3] for e in evs],
        duration=[e[5] for e in evs],
    )
    params = RetentionParams(max_fit_pairs=cap)
    prep = prepare(t, item_stats(t))
    pairs = review_pairs(prep, params)
    got = sample_pairs(prep, params, pairs)
    # reference: the previous implementation (sort all pairs by learner hash, then cap)
    from cohortlens.features import learner_hash

    # learners with fewer pairs than a half-life needs stay out of the sample
    counts = np.bincount(pairs.learner, minlength=prep.n_learners)
    kept = pairs.take(counts[pairs.learner] >= params.min_review_pairs, prep.n_learners)
    h = learner_hash(prep.learner_ids)[kept.learner]
    o = np.argsort(h, kind="stable")
    ref = _cap(PairSample(h[o], kept.gap_days[o], kept.recalled[o], kept.x[o]), cap)
    assert np.array_equal(got.learner_hash, ref.learner_hash)
    assert np.array_equal(got.gap_days, ref.gap_days)
    assert np.array_equal(got.recalled, ref.recalled)
    assert np.array_equal(got.x, ref.x)


def test_encoded_item_stats_equal_streaming_accumulator(synth: Synth) -> None:
    acc = ItemStatsAccumulator()
    for b in synth.events.to_batches(max_chunksize=3000):
        acc.add(pa.Table.from_batches([b]))
    a = acc.finish()
    b = encoded_item_stats(encode_table(synth.events))
    assert a.item_ids.equals(b.item_ids)
    assert a.domains.equals(b.domains)
    for f in ("n_graded", "sum_outcome", "difficulty", "domain_events"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert (a.mean_outcome, a.default_difficulty) == (b.mean_outcome, b.default_difficulty)


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory: pytest.TempPathFactory, synth: Synth) -> Path:
    d = tmp_path_factory.mktemp("events_fast")
    ev = synth.events.take(pa.array(np.random.default_rng(5).permutation(synth.events.num_rows)))
    pq.write_table(ev.slice(0, 15_000), d / "a.parquet", row_group_size=4000)
    pq.write_table(ev.slice(15_000), d / "b.parquet", row_group_size=3000)
    return d


def test_in_memory_and_spill_paths_agree(parquet_dir: Path, synth: Synth, tmp_path: Path) -> None:
    expected = compute_features(synth.events, FeatureParams())
    fast = build_features(parquet_dir, n_workers=2, out_dir=tmp_path / "fast", n_partitions=3)
    spill = build_features(parquet_dir, n_workers=1, n_partitions=3, in_memory_max_events=0)
    assert fast.equals(expected)
    assert spill.equals(expected)
    parts = pa.concat_tables(
        [pq.read_table(p) for p in sorted((tmp_path / "fast").glob("features-*.parquet"))]
    )
    assert len(list((tmp_path / "fast").glob("features-*.parquet"))) == 3
    assert parts.num_rows == expected.num_rows


@settings(max_examples=40, deadline=None)
@given(evs=st.lists(_event, min_size=1, max_size=150))
def test_item_order_against_a_naive_walk(evs: list[tuple]) -> None:
    """Inside each learner: items in order of first attempt, each item's rows in time order;
    first-attempt flags on each (learner, item)'s earliest row."""
    t = events_table(
        [f"L{e[0]}" for e in evs],
        [e[1] / 24 for e in evs],
        [f"i{e[2]}" for e in evs],
        [e[3] for e in evs],
    )
    prep = prepare(t, item_stats(t))
    expected: list[int] = []
    first = np.zeros(len(prep.ts_us), np.bool_)
    for k in range(prep.n_learners):
        rows = list(range(prep.starts[k], prep.starts[k + 1]))
        items = list(dict.fromkeys(int(prep.item_local[r]) for r in rows))
        for it in items:
            mine = [r for r in rows if prep.item_local[r] == it]
            first[mine[0]] = True
            expected.extend(mine)
    assert prep.item_order.tolist() == expected
    assert np.array_equal(prep.first_attempt, first)
