"""Canonical events (Arrow) -> numpy columns sorted by (learner, ts), coded against global stats."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cohortlens.features.stats import ItemStats

#: Microseconds in one day / week, and the first Monday of the Unix epoch (1970-01-05 00:00 UTC).
DAY_US = 86_400_000_000
WEEK_US = 7 * DAY_US
MONDAY0_US = 4 * DAY_US


@dataclass(frozen=True)
class Prepared:
    """Events of a set of learners as flat numpy columns, sorted by (learner, ts, item, outcome).

    ``starts[k]:starts[k+1]`` are learner k's rows; learners are in ``learner_ids`` order
    (sorted ids). ``item_local`` codes distinct item ids within this table; ``item_global``
    indexes ``ItemStats.item_ids`` (-1 when the item is unknown to the stats).
    """

    learner_ids: pa.Array
    starts: np.ndarray
    learner: np.ndarray
    ts_us: np.ndarray
    item_local: np.ndarray
    n_local_items: int
    item_global: np.ndarray
    domain: np.ndarray
    outcome: np.ndarray
    duration_s: np.ndarray

    @property
    def n_learners(self) -> int:
        """Number of learners."""
        return len(self.learner_ids)

    @cached_property
    def item_order(self) -> np.ndarray:
        """Row order by (learner, item), time order kept inside each (learner, item) run."""
        key = self.learner * np.int64(max(self.n_local_items, 1)) + self.item_local
        return np.argsort(key, kind="stable")

    @cached_property
    def first_attempt(self) -> np.ndarray:
        """Whether each row is the learner's first attempt of its item (graded or not)."""
        rows = self.item_order
        key = (self.learner * np.int64(max(self.n_local_items, 1)) + self.item_local)[rows]
        first = np.ones(len(rows), bool)
        if len(rows) > 1:
            first[1:] = key[1:] != key[:-1]
        out = np.zeros(len(rows), bool)
        out[rows] = first
        return out


def _float_col(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    col = table.column(name).cast(pa.float64())
    return np.asarray(col.to_numpy(), dtype=np.float64)


def _codes(values: pa.Array, dictionary: pa.Array) -> np.ndarray:
    """Index of each value in ``dictionary`` (-1 when absent) as int64."""
    idx = pc.index_in(values, value_set=dictionary)
    return np.asarray(idx.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _sorted_codes(col: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Codes of a string column in the order of its sorted distinct values (one hash pass)."""
    enc = pc.dictionary_encode(col.cast(pa.string())).unify_dictionaries()
    if enc.num_chunks == 0:
        return np.zeros(0, np.int64), pa.array([], pa.string())
    dictionary = enc.chunk(0).dictionary
    sorted_pos = np.asarray(pc.array_sort_indices(dictionary).to_numpy(), dtype=np.int64)
    rank = np.empty(len(sorted_pos), np.int64)
    rank[sorted_pos] = np.arange(len(sorted_pos))
    idx = np.concatenate(
        [np.asarray(c.indices.to_numpy(zero_copy_only=False), dtype=np.int64) for c in enc.chunks]
    )
    return rank[idx], dictionary.take(pa.array(sorted_pos))


def prepare(table: pa.Table, items: ItemStats) -> Prepared:
    """Encode and sort one table of canonical events (any learner order; rows stay intact)."""
    learner, learner_ids = _sorted_codes(table.column("learner_id"))
    ts = np.asarray(
        table.column("ts").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(),
        dtype=np.int64,
    )
    # local item code = rank of the id among this table's distinct ids (a canonical order)
    item_local, item_dict = _sorted_codes(table.column("item_id"))
    local_to_global = _codes(item_dict, items.item_ids)
    item_global = local_to_global[item_local] if len(item_local) else item_local
    if "domain" in table.column_names:
        dom_codes, dom_dict = _sorted_codes(table.column("domain").fill_null("unknown"))
    else:
        dom_codes = np.zeros(table.num_rows, np.int64)
        dom_dict = pa.array(["unknown"], pa.string())
    dom_map = _codes(dom_dict, items.domains)
    if len(dom_map) and dom_map.min() < 0:
        missing = pc.filter(dom_dict, pc.equal(pa.array(dom_map), -1)).to_pylist()[:5]
        raise ValueError(f"domains absent from the global stats: {missing}")
    domain = dom_map[dom_codes] if len(dom_codes) else dom_codes
    outcome = _float_col(table, "outcome")
    duration = _float_col(table, "duration_s")
    # Deterministic order: (learner, ts, item, outcome, duration); full ties are interchangeable.
    outcome_key = np.where(np.isnan(outcome), -1.0, outcome)
    duration_key = np.where(np.isnan(duration), -1.0, duration)
    order, starts = _learner_time_order(
        learner, len(learner_ids), ts, item_local, outcome_key, duration_key
    )
    learner = learner[order]
    local_sorted = item_local[order]
    return Prepared(
        learner_ids=learner_ids,
        starts=starts.astype(np.int64),
        learner=learner,
        ts_us=ts[order],
        item_local=local_sorted,
        n_local_items=len(item_dict),
        item_global=item_global[order],
        domain=domain[order],
        outcome=outcome[order],
        duration_s=duration[order],
    )


@nb.njit(cache=True, nogil=True)
def _learner_time_order(  # pragma: no cover - jit
    learner: np.ndarray,
    n_learners: int,
    ts: np.ndarray,
    item: np.ndarray,
    outcome_key: np.ndarray,
    duration_key: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Counting sort by learner, then each learner's rows by (ts, item, outcome, duration)."""
    n = learner.shape[0]
    starts = np.zeros(n_learners + 1, np.int64)
    for i in range(n):
        starts[learner[i] + 1] += 1
    for k in range(n_learners):
        starts[k + 1] += starts[k]
    fill = starts[:-1].copy()
    order = np.empty(n, np.int64)
    for i in range(n):
        k = learner[i]
        order[fill[k]] = i
        fill[k] += 1
    for k in range(n_learners):
        a = starts[k]
        b = starts[k + 1]
        if b - a < 2:
            continue
        seg = order[a:b]
        seg = seg[np.argsort(ts[seg], kind="mergesort")]
        # ties on ts: insertion sort by (item, outcome, duration); tie runs are short
        j = 1
        while j < b - a:
            if ts[seg[j]] == ts[seg[j - 1]]:
                m = j
                while m > 0 and ts[seg[m]] == ts[seg[m - 1]]:
                    x = seg[m]
                    y = seg[m - 1]
                    greater = False
                    if item[y] != item[x]:
                        greater = item[y] > item[x]
                    elif outcome_key[y] != outcome_key[x]:
                        greater = outcome_key[y] > outcome_key[x]
                    else:
                        greater = duration_key[y] > duration_key[x]
                    if not greater:
                        break
                    seg[m] = y
                    seg[m - 1] = x
                    m -= 1
            j += 1
        order[a:b] = seg
    return order, starts
