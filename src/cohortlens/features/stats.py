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
    ``ln((fails + m(1-pbar_d)) / (successes + m pbar_d))`` with ``m`` pseudo-events at the
    success rate ``pbar_d`` of the item's domain (``item_domain``; the first by name when an item
    appears in several): an average learner (ability 0) succeeds with the item's smoothed rate.
    Smoothing within the domain keeps one domain's difficulties independent of the others.
    ``mean_outcome`` (all graded events) gives ``default_difficulty``, for items unknown to
    the stats.
    """

    item_ids: pa.Array
    n_graded: np.ndarray
    sum_outcome: np.ndarray
    difficulty: np.ndarray
    domains: pa.Array
    domain_events: np.ndarray
    mean_outcome: float
    default_difficulty: float
    item_domain: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

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
class VelocityPopulation:
    """Population model of the ability trend (empirical Bayes prior and shared terms).

    Graded first attempt j of learner l at ``t_j`` weeks after the learner's first one:
    ``P = g + (1 - g) sigmoid(a_l + v_l t_j - kappa b_j)``, ``b_j`` the item difficulty of
    :class:`ItemStats` and ``kappa`` its scale (the smoothed error logits of items are compressed
    by the spread of the learners who attempted them; ``kappa`` restores the scale of the
    learners' logits). ``a_l ~ N(mu_start, sigma_start^2)`` is the ability at the first attempt,
    ``v_l ~ N(mu_velocity, sigma_velocity^2)`` the trend in logits per week.
    """

    kappa: float = 1.0
    guess_floor: float = 0.25
    mu_start_logit: float = 0.0
    sigma_start_logit: float = 1.5
    mu_velocity: float = 0.0
    sigma_velocity: float = 0.25
    n_attempts: int = 0
    n_learners: int = 0


@dataclass(frozen=True)
class GlobalStats:
    """Everything a partition kernel needs besides its own events."""

    items: ItemStats
    retention: RetentionPopulation = field(default_factory=RetentionPopulation)
    velocity: VelocityPopulation = field(default_factory=VelocityPopulation)


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
        dom = (
            table.column("domain").cast(pa.string()).fill_null("unknown")
            if "domain" in table.column_names
            else pa.array(["unknown"] * table.num_rows, pa.string())
        )
        items = pa.table(
            {"item_id": table.column("item_id").cast(pa.string()), "o": outcome, "d": dom}
        )
        self._items.append(
            items.group_by("item_id").aggregate([("o", "count"), ("o", "sum"), ("d", "min")])
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
            .aggregate([("o_count", "sum"), ("o_sum", "sum"), ("d_min", "min")])
        )
        self._items = [it.rename_columns(["item_id", "o_count", "o_sum", "d_min"])]
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
        domains = dm.column("domain").combine_chunks()
        item_domain = pc.index_in(it.column("d_min"), value_set=domains)
        return item_stats_from_counts(
            it.column("item_id").combine_chunks(),
            np.asarray(it.column("o_count").to_numpy(), dtype=np.int64),
            np.asarray(it.column("o_sum").fill_null(0.0).to_numpy(), dtype=np.float64),
            domains,
            np.asarray(dm.column("count_all").to_numpy(), dtype=np.float64),
            params,
            np.asarray(item_domain.fill_null(0).to_numpy(), dtype=np.int64),
        )


def item_stats_from_counts(
    item_ids: pa.Array,
    n_graded: np.ndarray,
    sum_outcome: np.ndarray,
    domains: pa.Array,
    domain_events: np.ndarray,
    params: VelocityParams | None = None,
    item_domain: np.ndarray | None = None,
) -> ItemStats:
    """Difficulties from per-item graded counts and outcome sums (items and domains sorted).

    ``item_domain`` (index into ``domains`` per item) selects the success rate each item's
    difficulty is smoothed toward: its domain's (all items in domain 0 when absent).
    """
    params = params or VelocityParams()
    n, s = n_graded, sum_outcome
    total_n = int(n.sum())
    pbar = float(s.sum() / total_n) if total_n else 0.5
    pbar = min(max(pbar, 1e-3), 1 - 1e-3)
    k = max(len(domains), 1)
    if item_domain is None:
        item_domain = np.zeros(len(n), np.int64)
    dn = np.bincount(item_domain, weights=n, minlength=k)
    ds = np.bincount(item_domain, weights=s, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        pbar_d = np.clip(np.where(dn > 0, ds / np.maximum(dn, 1), 0.5), 1e-3, 1 - 1e-3)
    pd_item = pbar_d[item_domain] if len(n) else np.zeros(0)
    m = params.difficulty_prior_events
    diff = np.log((n - s + m * (1 - pd_item)) / (s + m * pd_item))
    return ItemStats(
        item_ids=item_ids,
        n_graded=n,
        sum_outcome=s,
        difficulty=diff,
        domains=domains,
        domain_events=domain_events,
        mean_outcome=pbar,
        default_difficulty=float(np.log((1 - pbar) / pbar)),
        item_domain=np.asarray(item_domain, dtype=np.int64),
    )


def item_stats(table: pa.Table, params: VelocityParams | None = None) -> ItemStats:
    """Item statistics of one in-memory table (same result as streaming it in batches)."""
    from cohortlens.features._prep import encode_table, encoded_item_stats

    return encoded_item_stats(encode_table(table), params)
