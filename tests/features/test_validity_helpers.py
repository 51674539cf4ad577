"""Helpers of the real-data validity harness (benchmarks/validity_features.py), exact values."""

from __future__ import annotations

import numpy as np
from tests.features.featsynth import events_table

from cohortlens.features._prep import prepare
from cohortlens.features.stats import item_stats


def _prep():  # type: ignore[no-untyped-def]
    t = events_table(
        ["a"] * 5 + ["b"],
        [0.0, 1.0, 2.0, 2.5, 5.2, 0.0],
        ["i1", "i2", "i1", "i3", "i1", "i1"],
        [1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
        domain=["d0", "d0", "d0", "d1", "d0", "d0"],
    )
    return prepare(t, item_stats(t))


def test_history_counts_use_only_earlier_attempts() -> None:
    from benchmarks.validity_features import _history_counts

    prep = _prep()
    h = _history_counts(prep, np.zeros(6, np.bool_))
    # learner a in time order: i1 ok, i2 wrong, i1 wrong, i3 ok (d1), i1 ok; learner b: i1 ok
    assert h["tot_s"].tolist() == [0, 1, 1, 1, 2, 0]
    assert h["tot_f"].tolist() == [0, 0, 1, 2, 2, 0]
    assert h["part_s"].tolist() == [0, 1, 1, 0, 1, 0]
    assert h["part_f"].tolist() == [0, 0, 1, 0, 2, 0]
    assert h["item_s"].tolist() == [0, 0, 1, 0, 1, 0]
    assert h["item_f"].tolist() == [0, 0, 0, 0, 1, 0]


def test_fsrs_chains_link_attempts_of_one_item() -> None:
    from benchmarks.validity_features import _fsrs_chains

    prev, rating, delta = _fsrs_chains(_prep())
    assert prev.tolist() == [-1, -1, 0, -1, 2, -1]
    assert rating.tolist() == [3, 1, 1, 3, 3, 3]
    assert delta.tolist() == [0, 0, 2, 0, 3, 0]  # whole days: 2.0 and 3.2
