"""Global statistics: the only things one learner's features share with other learners.

Computed in a first pass over all events (item difficulty, platform domain shares) and over
a hash sample of learners (the retention population model). Every partition receives the same
:class:`GlobalStats` (a broadcast value in a distributed engine).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cohortlens.features.params import VelocityParams


@dataclass(frozen=True)
class ItemStats:
    """Per-item graded counts and difficulty, and the platform's domains.

    ``difficulty`` is the smoothed logit of the item's error rate,
    ``ln((fails + m(1-pbar)) / (successes + m pbar))`` with ``m`` pseudo-events at the global
    success rate ``pbar``: an average learner (ability 0) succeeds with the item's smoothed rate.
    """

    item_ids: pa.Array
    n_graded: np.ndarray
    sum_outcome: np.ndarray
    difficulty: np.ndarray
    domains: pa.Array
    domain_events: np.ndarray
    mean_outcome: float
    default_difficulty: float

    @property
    def domain_share(self) -> np.ndarray:
        """Platform share of events per domain (the Dirichlet prior's direction)."""
        total = float(self.domain_events.sum())
        k = len(self.domain_events)
        if total <= 0:
            return np.full(k, 1.0 / max(k, 1))
        return self.domain_events / total


@dataclass(frozen=True)
class RetentionPopulation:
    """Population forgetting model (empirical Bayes prior and shared terms).

    Half-life of pair j of learner l: ``ln h = a_l + coef . x_j`` (days), where x_j =
    (sqrt(earlier correct) - 1, sqrt(earlier wrong), previous attempt wrong), so ``exp(a_l)``
    is the learner's half-life after one correct attempt. ``a_l ~ N(mu_ln_h, sigma_ln_h^2)``.
    Recall after ``t`` days: ``g + (1 - g) 2^(-(t / h)^curve_shape)`` (1 = exponential).
    """

    guess_floor: float = 0.25
    coef: tuple[float, float, float] = (0.0, 0.0, 0.0)
    mu_ln_h: float = float(np.log(7.0))
    sigma_ln_h: float = 1.5
    n_pairs: int = 0
    n_learners: int = 0
    curve_shape: float = 1.0


@dataclass(frozen=True)
class GlobalStats:
    """Everything a partition kernel needs besides its own events."""

    items: ItemStats
    retention: RetentionPopulation = field(default_factory=RetentionPopulation)


class ItemStatsAccumulator:
    """Streaming first pass: per-item graded counts and per-domain event counts."""

    def __init__(self) -> None:
        self._items: list[pa.Table] = []
        self._domains: list[pa.Table] = []

    def add(self, table: pa.Table) -> None:
        """Fold one batch of canonical events (only item_id, domain, outcome are read)."""
        if table.num_rows == 0:
            return
        outcome = (
            table.column("outcome").cast(pa.float64())
            if "outcome" in table.column_names
            else pa.nulls(table.num_rows, pa.float64())
        )
        items = pa.table({"item_id": table.column("item_id").cast(pa.string()), "o": outcome})
        self._items.append(items.group_by("item_id").aggregate([("o", "count"), ("o", "sum")]))
        dom = (
            table.column("domain").cast(pa.string()).fill_null("unknown")
            if "domain" in table.column_names
            else pa.array(["unknown"] * table.num_rows, pa.string())
        )
        self._domains.append(
            pa.table({"domain": dom}).group_by("domain").aggregate([([], "count_all")])
        )
        if len(self._items) > 64:
            self._compact()

    def partials(self) -> tuple[list[pa.Table], list[pa.Table]]:
        """Compacted partial aggregates (items, domains), to merge with :meth:`merge`."""
        if self._items:
            self._compact()
        return list(self._items), list(self._domains)

    def merge(self, items: list[pa.Table], domains: list[pa.Table]) -> None:
        """Fold partial aggregates produced by another accumulator."""
        self._items.extend(items)
        self._domains.extend(domains)

    def _compact(self) -> None:
        it = (
            pa.concat_tables(self._items)
            .group_by("item_id")
            .aggregate([("o_count", "sum"), ("o_sum", "sum")])
        )
        self._items = [it.rename_columns(["item_id", "o_count", "o_sum"])]
        dm = pa.concat_tables(self._domains).group_by("domain").aggregate([("count_all", "sum")])
        self._domains = [dm.rename_columns(["domain", "count_all"])]

    def finish(self, params: VelocityParams | None = None) -> ItemStats:
        """Final per-item difficulties (sorted by item id) and domain counts (sorted by name)."""
        params = params or VelocityParams()
        if not self._items:
            empty = pa.array([], pa.string())
            return ItemStats(
                empty,
                np.zeros(0, np.int64),
                np.zeros(0),
                np.zeros(0),
                pa.array(["unknown"], pa.string()),
                np.zeros(1),
                0.5,
                0.0,
            )
        self._compact()
        it = self._items[0]
        it = it.take(pc.sort_indices(it, [("item_id", "ascending")]))
        dm = self._domains[0]
        dm = dm.take(pc.sort_indices(dm, [("domain", "ascending")]))
        return item_stats_from_counts(
            it.column("item_id").combine_chunks(),
            np.asarray(it.column("o_count").to_numpy(), dtype=np.int64),
            np.asarray(it.column("o_sum").fill_null(0.0).to_numpy(), dtype=np.float64),
            dm.column("domain").combine_chunks(),
            np.asarray(dm.column("count_all").to_numpy(), dtype=np.float64),
            params,
        )


def item_stats_from_counts(
    item_ids: pa.Array,
    n_graded: np.ndarray,
    sum_outcome: np.ndarray,
    domains: pa.Array,
    domain_events: np.ndarray,
    params: VelocityParams | None = None,
) -> ItemStats:
    """Difficulties from per-item graded counts and outcome sums (items and domains sorted)."""
    params = params or VelocityParams()
    n, s = n_graded, sum_outcome
    total_n = int(n.sum())
    pbar = float(s.sum() / total_n) if total_n else 0.5
    pbar = min(max(pbar, 1e-3), 1 - 1e-3)
    m = params.difficulty_prior_events
    diff = np.log((n - s + m * (1 - pbar)) / (s + m * pbar))
    return ItemStats(
        item_ids=item_ids,
        n_graded=n,
        sum_outcome=s,
        difficulty=diff,
        domains=domains,
        domain_events=domain_events,
        mean_outcome=pbar,
        default_difficulty=float(np.log((1 - pbar) / pbar)),
    )


def item_stats(table: pa.Table, params: VelocityParams | None = None) -> ItemStats:
    """Item statistics of one in-memory table (same result as streaming it in batches)."""
    from cohortlens.features._prep import encode_table, encoded_item_stats

    return encoded_item_stats(encode_table(table), params)
