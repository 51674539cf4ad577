"""Canonical events (Arrow) -> numpy columns sorted by (learner, ts), coded against global stats.

Two steps, so a streaming reader can fill the first one batch by batch:
:class:`EventEncoder` turns record batches into :class:`Encoded` columns (input row order,
strings coded by :mod:`cohortlens.features._encode`), and :func:`prepare_encoded` sorts them
into learner-major :class:`Prepared` columns (counting sort by learner, then time order inside
each learner; segments that are already in time order, as in append-only logs, are not sorted).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cohortlens.features._encode import StringCoder, remap_codes
from cohortlens.features.params import VelocityParams
from cohortlens.features.stats import ItemStats, ItemStatsAccumulator, item_stats_from_counts

#: Microseconds in one day / week, and the first Monday of the Unix epoch (1970-01-05 00:00 UTC).
DAY_US = 86_400_000_000
WEEK_US = 7 * DAY_US
MONDAY0_US = 4 * DAY_US
_TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Prepared:
    """Events of a set of learners as flat numpy columns, sorted by (learner, ts, item, outcome).

    ``starts[k]:starts[k+1]`` are learner k's rows; learners are in ``learner_ids`` order
    (sorted ids). ``item_local`` (int32) codes distinct item ids within this table in sorted-id
    order; ``local_to_global`` maps them to ``ItemStats.item_ids`` (-1 when unknown to the
    stats). ``domain`` (int32) indexes ``ItemStats.domains``.
    """

    learner_ids: pa.Array
    starts: np.ndarray
    ts_us: np.ndarray
    item_local: np.ndarray
    n_local_items: int
    local_to_global: np.ndarray
    domain: np.ndarray
    outcome: np.ndarray
    duration_s: np.ndarray

    @property
    def n_learners(self) -> int:
        """Number of learners."""
        return len(self.learner_ids)

    @cached_property
    def learner(self) -> np.ndarray:
        """Learner index (int64) of each row."""
        return np.repeat(np.arange(self.n_learners, dtype=np.int64), np.diff(self.starts))

    @cached_property
    def item_global(self) -> np.ndarray:
        """Index of each row's item in ``ItemStats.item_ids`` (-1 when unknown), int64."""
        if not len(self.item_local):
            return np.zeros(0, np.int64)
        return self.local_to_global.astype(np.int64)[self.item_local]

    @cached_property
    def _item_runs(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.item_local)
        order = np.empty(n, np.int32 if n < 2**31 else np.int64)
        first = np.zeros(n, np.bool_)
        # Learners of one chunk share an item -> slot table (4 bytes per item): a few chunks per
        # thread balance the load, fewer when the tables would pass 64 MiB in all.
        threads = nb.get_num_threads()
        chunks = min(4 * threads, max(threads, (64 << 20) // max(4 * self.n_local_items, 1)))
        _item_order(self.starts, self.item_local, self.n_local_items, chunks, order, first)
        return order, first

    @property
    def item_order(self) -> np.ndarray:
        """Row order by (learner, item, time); inside a learner, items in the order of the
        learner's first attempt of them (the same for any partitioning)."""
        return self._item_runs[0]

    @property
    def first_attempt(self) -> np.ndarray:
        """Whether each row is the learner's first attempt of its item (graded or not)."""
        return self._item_runs[1]


@dataclass(frozen=True)
class Encoded:
    """Canonical events as numpy columns in input row order; strings as sorted-rank codes.

    ``columns`` holds ``learner``, ``item``, ``domain`` (int32 codes into ``learner_ids``,
    ``item_ids``, ``domains``), ``ts_us`` (int64), ``outcome`` and ``duration_s`` (float64,
    NaN for null). It is a dict so :func:`prepare_encoded` can release columns as it goes.
    """

    columns: dict[str, np.ndarray]
    learner_ids: pa.Array
    item_ids: pa.Array
    domains: pa.Array

    @property
    def num_rows(self) -> int:
        """Number of events."""
        return len(self.columns["ts_us"])


def _float_col(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    col = table.column(name).cast(pa.float64())
    return np.asarray(col.to_numpy(), dtype=np.float64)


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    """Threads for coding string columns concurrently (shared by all encoders)."""
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="cohortlens-encode")


@dataclass
class EventEncoder:
    """Folds batches of canonical events into :class:`Encoded` columns (one pass per batch).

    With ``capacity`` (total rows, e.g. from Parquet metadata) the columns are preallocated and
    filled in place, so peak memory is the columns plus one batch.
    """

    capacity: int | None = None
    _learners: StringCoder = field(default_factory=lambda: StringCoder("learner_id"))
    _items: StringCoder = field(default_factory=lambda: StringCoder("item_id"))
    _domains: StringCoder = field(default_factory=lambda: StringCoder("domain", "unknown"))
    _parts: dict[str, list[np.ndarray]] = field(default_factory=dict)
    _cols: dict[str, np.ndarray] = field(default_factory=dict)
    _n: int = 0

    def __post_init__(self) -> None:
        if self.capacity is not None:
            cap = int(self.capacity)
            self._cols = {
                "learner": np.empty(cap, np.int32),
                "item": np.empty(cap, np.int32),
                "domain": np.empty(cap, np.int32),
                "ts_us": np.empty(cap, np.int64),
                "outcome": np.empty(cap, np.float64),
                "duration_s": np.empty(cap, np.float64),
            }

    def add(self, table: pa.Table | pa.RecordBatch) -> None:
        """Encode one batch (columns: learner_id, ts, item_id; optional domain/outcome/duration_s)."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        n = table.num_rows
        if n == 0:
            return
        # the three string columns are coded concurrently (Arrow and numba release the GIL)
        pool = _pool()
        learner = pool.submit(self._learners.add, table.column("learner_id"))
        item = pool.submit(self._items.add, table.column("item_id"))
        if "domain" in table.column_names:
            domain = self._domains.add(table.column("domain"))
        else:
            domain = np.full(n, self._domains.add(pa.array(["unknown"]))[0], np.int32)
        ts = table.column("ts")
        if ts.type != _TS:
            ts = ts.cast(_TS)
        cols = {
            "learner": learner.result(),
            "item": item.result(),
            "domain": domain,
            "ts_us": np.asarray(ts.cast(pa.int64()).to_numpy(), dtype=np.int64),
            "outcome": _float_col(table, "outcome"),
            "duration_s": _float_col(table, "duration_s"),
        }
        if self._cols:
            if self._n + n > len(self._cols["ts_us"]):
                raise ValueError("EventEncoder: more rows than the declared capacity")
            for k, v in cols.items():
                self._cols[k][self._n : self._n + n] = v
        else:
            for k, v in cols.items():
                self._parts.setdefault(k, []).append(v)
        self._n += n

    def finish(self) -> Encoded:
        """Renumber codes to sorted-value ranks; the encoder must not be used afterwards."""
        if self._cols:
            cols = {k: v[: self._n] for k, v in self._cols.items()}
        else:
            empty = {"learner": np.int32, "item": np.int32, "domain": np.int32}
            # one batch: its arrays are the columns (fresh memory is costly to fault in)
            cols = {
                k: _joined(self._parts[k])
                if self._parts
                else np.zeros(0, empty.get(k, np.float64 if k != "ts_us" else np.int64))
                for k in ("learner", "item", "domain", "ts_us", "outcome", "duration_s")
            }
        self._cols, self._parts = {}, {}
        lt, learner_ids = self._learners.finish()
        it, item_ids = self._items.finish()
        dt, domains = self._domains.finish()
        remap_codes(cols["learner"], lt)
        remap_codes(cols["item"], it)
        remap_codes(cols["domain"], dt)
        return Encoded(cols, learner_ids, item_ids, domains)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def encode_table(table: pa.Table) -> Encoded:
    """Encode one in-memory table of canonical events."""
    enc = EventEncoder()
    enc.add(table)
    return enc.finish()


def _codes(values: pa.Array, dictionary: pa.Array) -> np.ndarray:
    """Index of each value in ``dictionary`` (-1 when absent) as int64."""
    idx = pc.index_in(values, value_set=dictionary)
    return np.asarray(idx.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def prepare(table: pa.Table, items: ItemStats) -> Prepared:
    """Encode and sort one table of canonical events (any learner order; rows stay intact)."""
    return prepare_encoded(encode_table(table), items)


def prepare_encoded(enc: Encoded, items: ItemStats, *, release: bool = False) -> Prepared:
    """Sort encoded events by (learner, ts, item, outcome, duration) and code them globally.

    With ``release`` the input columns are dropped from ``enc.columns`` as soon as they are
    gathered (lower peak memory for large inputs).
    """
    cols = enc.columns if release else dict(enc.columns)
    local_to_global = _codes(enc.item_ids, items.item_ids).astype(np.int32)
    dom_map = _codes(enc.domains, items.domains)
    if len(dom_map) and dom_map.min() < 0:
        missing = pc.filter(enc.domains, pc.equal(pa.array(dom_map), -1)).to_pylist()[:5]
        raise ValueError(f"domains absent from the global stats: {missing}")
    n_l = len(enc.learner_ids)
    learner = cols.pop("learner")
    starts, in_order = _sorted_starts(learner, n_l)
    if in_order:
        # already learner-major (canonical events sorted by learner_id): the columns are used
        # as they are, and only segments out of time order are sorted below
        del learner
        ts, item_local = _own(cols.pop("ts_us"), release), _own(cols.pop("item"), release)
        domain = remap_codes(_own(cols.pop("domain"), release), dom_map.astype(np.int32))
        outcome = _own(cols.pop("outcome"), release)
        duration = _own(cols.pop("duration_s"), release)
    else:
        # stable counting sort by learner as a scatter (two passes to bound peak memory)
        base, starts = _scatter_plan(learner, n_l, nb.get_num_threads())
        ts, item_local, domain = _scatter3(
            learner,
            base,
            cols.pop("ts_us"),
            cols.pop("item"),
            cols.pop("domain"),
            dom_map.astype(np.int32),
        )
        outcome, duration = _scatter2(learner, base, cols.pop("outcome"), cols.pop("duration_s"))
        del learner, base
    # deterministic order: (learner, ts, item, outcome, duration); full ties are interchangeable
    _sort_segments(starts, ts, item_local, domain, outcome, duration)
    return Prepared(
        learner_ids=enc.learner_ids,
        starts=starts,
        ts_us=ts,
        item_local=item_local,
        n_local_items=len(enc.item_ids),
        local_to_global=local_to_global,
        domain=domain,
        outcome=outcome,
        duration_s=duration,
    )


def _own(column: np.ndarray, released: bool) -> np.ndarray:
    """The column itself if the caller gave it up and it is writable (sorted in place), else a
    copy."""
    return column if released and column.flags.writeable else column.copy()


@nb.njit(cache=True, nogil=True)
def _sorted_starts(  # pragma: no cover - jit
    learner: np.ndarray, n_learners: int
) -> tuple[np.ndarray, bool]:
    """Per-learner starts if the rows are already in learner order (codes 0, 0, 1, 2, 2, ...)."""
    starts = np.zeros(n_learners + 1, np.int64)
    n = learner.shape[0]
    if n == 0:
        return starts, n_learners == 0
    if learner[0] != 0:
        return starts, False
    k = 0
    for i in range(1, n):
        c = learner[i]
        if c != k:
            if c != k + 1:
                return starts, False
            k = c
            starts[k] = i
    starts[n_learners] = n
    return starts, k == n_learners - 1


@nb.njit(cache=True, nogil=True, parallel=True)
def _scatter_plan(  # pragma: no cover - jit
    learner: np.ndarray, n_learners: int, n_chunks: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row chunk, the first destination of each learner; and the per-learner starts.

    Rows are split into ``n_chunks`` contiguous chunks; chunk t's rows of learner k go after
    chunk t-1's, so the scatter is a stable counting sort done by ``n_chunks`` threads.
    """
    n = learner.shape[0]
    n_chunks = max(1, min(n_chunks, n))
    step = (n + n_chunks - 1) // n_chunks if n else 1
    hist = np.zeros((n_chunks, n_learners), np.int64)
    for t in nb.prange(n_chunks):
        for i in range(t * step, min(n, (t + 1) * step)):
            hist[t, learner[i]] += 1
    starts = np.zeros(n_learners + 1, np.int64)
    base = np.empty((n_chunks, n_learners), np.int64)
    acc = 0
    for k in range(n_learners):
        starts[k] = acc
        for t in range(n_chunks):
            base[t, k] = acc
            acc += hist[t, k]
    starts[n_learners] = acc
    return base, starts


@nb.njit(cache=True, nogil=True, parallel=True)
def _scatter3(  # pragma: no cover - jit
    learner: np.ndarray,
    base: np.ndarray,
    ts: np.ndarray,
    item: np.ndarray,
    domain: np.ndarray,
    dom_map: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scatter ts, item and (mapped) domain into learner-major order."""
    n = learner.shape[0]
    n_chunks = base.shape[0]
    step = (n + n_chunks - 1) // n_chunks if n else 1
    out_ts = np.empty(n, np.int64)
    out_item = np.empty(n, np.int32)
    out_dom = np.empty(n, np.int32)
    for t in nb.prange(n_chunks):
        fill = base[t].copy()
        for i in range(t * step, min(n, (t + 1) * step)):
            k = learner[i]
            d = fill[k]
            fill[k] = d + 1
            out_ts[d] = ts[i]
            out_item[d] = item[i]
            out_dom[d] = dom_map[domain[i]]
    return out_ts, out_item, out_dom


@nb.njit(cache=True, nogil=True, parallel=True)
def _scatter2(  # pragma: no cover - jit
    learner: np.ndarray, base: np.ndarray, x: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Scatter two float columns into learner-major order (same plan as :func:`_scatter3`)."""
    n = learner.shape[0]
    n_chunks = base.shape[0]
    step = (n + n_chunks - 1) // n_chunks if n else 1
    out_x = np.empty(n, np.float64)
    out_z = np.empty(n, np.float64)
    for t in nb.prange(n_chunks):
        fill = base[t].copy()
        for i in range(t * step, min(n, (t + 1) * step)):
            k = learner[i]
            d = fill[k]
            fill[k] = d + 1
            out_x[d] = x[i]
            out_z[d] = z[i]
    return out_x, out_z


@nb.njit(cache=True, nogil=True, inline="always")
def _tie_greater(  # pragma: no cover - jit
    y: int, x: int, item: np.ndarray, outcome: np.ndarray, duration: np.ndarray
) -> bool:
    """Whether row y sorts after row x on (item, outcome, duration), NaN as -1."""
    if item[y] != item[x]:
        return item[y] > item[x]
    oy = -1.0 if np.isnan(outcome[y]) else outcome[y]
    ox = -1.0 if np.isnan(outcome[x]) else outcome[x]
    if oy != ox:
        return oy > ox
    dy = -1.0 if np.isnan(duration[y]) else duration[y]
    dx = -1.0 if np.isnan(duration[x]) else duration[x]
    return dy > dx


@nb.njit(cache=True, nogil=True, inline="always")
def _swap(a: np.ndarray, i: int, j: int) -> None:  # pragma: no cover - jit
    t = a[i]
    a[i] = a[j]
    a[j] = t


@nb.njit(cache=True, nogil=True, parallel=True)
def _sort_segments(  # pragma: no cover - jit
    starts: np.ndarray,
    ts: np.ndarray,
    item: np.ndarray,
    domain: np.ndarray,
    outcome: np.ndarray,
    duration: np.ndarray,
) -> None:
    """Each learner's rows by ts (stable), ties by (item, outcome, duration); in place.

    Rows arrive in input order within each learner; segments found in time order (append-only
    logs) are left alone.
    """
    n_l = starts.shape[0] - 1
    for k in nb.prange(n_l):
        a = starts[k]
        b = starts[k + 1]
        if b - a < 2:
            continue
        unsorted = False
        ties = False
        for j in range(a + 1, b):
            if ts[j] < ts[j - 1]:
                unsorted = True
                break
            if ts[j] == ts[j - 1]:
                ties = True
        if unsorted:
            perm = np.argsort(ts[a:b], kind="mergesort")
            ts[a:b] = ts[a:b][perm]
            item[a:b] = item[a:b][perm]
            domain[a:b] = domain[a:b][perm]
            outcome[a:b] = outcome[a:b][perm]
            duration[a:b] = duration[a:b][perm]
            ties = True
        if not ties:
            continue
        # ties on ts: insertion sort by (item, outcome, duration); tie runs are short
        for j in range(a + 1, b):
            if ts[j] == ts[j - 1]:
                m = j
                while m > a and ts[m] == ts[m - 1]:
                    if not _tie_greater(m - 1, m, item, outcome, duration):
                        break
                    _swap(item, m, m - 1)
                    _swap(domain, m, m - 1)
                    _swap(outcome, m, m - 1)
                    _swap(duration, m, m - 1)
                    m -= 1


@nb.njit(cache=True, nogil=True, parallel=True)
def _item_order(  # pragma: no cover - jit
    starts: np.ndarray,
    item: np.ndarray,
    n_items: int,
    n_chunks: int,
    order: np.ndarray,
    first: np.ndarray,
) -> None:
    """Fill rows by (learner, item, time) and first-attempt flags; no sort.

    Inside a learner, items come in the order of the learner's first attempt of them: a
    counting sort over slots handed out on first sight (a per-chunk item -> slot table, reset
    after each learner), so the cost is linear in the rows.
    """
    n_l = starts.shape[0] - 1
    n_chunks = min(n_l, n_chunks)
    if n_chunks <= 0:
        return
    step = (n_l + n_chunks - 1) // n_chunks
    for c in nb.prange(n_chunks):
        lo = c * step
        hi = min(n_l, lo + step)
        longest = 0
        for k in range(lo, hi):
            longest = max(longest, starts[k + 1] - starts[k])
        slot = np.full(n_items, -1, np.int32)
        seen = np.empty(longest, np.int64)
        fill = np.empty(longest, np.int64)
        for k in range(lo, hi):
            a = starts[k]
            b = starts[k + 1]
            d = 0
            for r in range(a, b):
                it = item[r]
                s = slot[it]
                if s < 0:
                    s = d
                    slot[it] = d
                    seen[d] = it
                    fill[d] = 0
                    first[r] = True
                    d += 1
                fill[s] += 1
            acc = a
            for s in range(d):  # counts -> first row of each slot
                cnt = fill[s]
                fill[s] = acc
                acc += cnt
            for r in range(a, b):
                s = slot[item[r]]
                order[fill[s]] = r
                fill[s] += 1
            for s in range(d):
                slot[seen[s]] = -1


@nb.njit(cache=True, nogil=True)
def _item_sums(  # pragma: no cover - jit
    item: np.ndarray, y: np.ndarray, n_items: int, domain: np.ndarray, n_domains: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Graded events and outcome sums per item code (in row order); events per domain code;
    the smallest domain code each item appears with (domain codes are sorted names)."""
    n = np.zeros(n_items, np.int64)
    s = np.zeros(n_items)
    dom = np.zeros(n_domains)
    item_dom = np.full(n_items, n_domains, np.int64)
    for i in range(item.shape[0]):
        d = domain[i]
        dom[d] += 1.0
        it = item[i]
        if d < item_dom[it]:
            item_dom[it] = d
        if not np.isnan(y[i]):
            n[it] += 1
            s[it] += y[i]
    return n, s, dom, item_dom


def encoded_item_stats(enc: Encoded, params: VelocityParams | None = None) -> ItemStats:
    """:class:`ItemStats` of encoded events (same values as ``item_stats`` on their table)."""
    if enc.num_rows == 0:
        return ItemStatsAccumulator().finish(params)
    c = enc.columns
    n, s, dom, item_dom = _item_sums(
        c["item"], c["outcome"], len(enc.item_ids), c["domain"], len(enc.domains)
    )
    return item_stats_from_counts(enc.item_ids, n, s, enc.domains, dom, params, item_dom)
