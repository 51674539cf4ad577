"""One feature table per learner: the partition kernel and the in-memory entry point.

``feature_kernel(events, stats, params)`` is the unit a distributed engine calls per bucket
(e.g. Spark ``groupBy(bucket).applyInArrow``): Arrow table of one bucket's events, the
broadcast :class:`GlobalStats` and the params in, an Arrow table of ``FEATURE_SCHEMA`` out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from cohortlens.features._hash import in_fit_sample, learner_hash
from cohortlens.features._prep import (
    Prepared,
    encode_table,
    encoded_item_stats,
    prepare,
    prepare_encoded,
)
from cohortlens.features.affinity import ARCHETYPES, compute_affinity
from cohortlens.features.params import FeatureParams, RetentionParams, VelocityParams
from cohortlens.features.retention import (
    RETENTION_STATUS,
    ReuseStats,
    ReviewPairs,
    fit_population,
    pairs_and_reuse,
    retention_from_pairs,
    review_pairs,
)
from cohortlens.features.stats import (
    GlobalStats,
    ItemStats,
    VelocityPopulation,
)
from cohortlens.features.velocity import (
    VELOCITY_STATUS,
    TrendObs,
    compute_engagement,
    fit_velocity_population,
    trend_observations,
    velocity_from_obs,
)

_TS = pa.timestamp("us", tz="UTC")

#: Columns of the feature table (units in names; see docs/FEATURES.md).
FEATURE_SCHEMA = pa.schema(
    [
        pa.field("learner_id", pa.string(), nullable=False),
        pa.field("n_events", pa.int64(), nullable=False),
        pa.field("n_graded_events", pa.int64(), nullable=False),
        pa.field("first_ts", _TS, nullable=False),
        pa.field("last_ts", _TS, nullable=False),
        pa.field("active_weeks", pa.int64(), nullable=False),
        pa.field("ability_logit", pa.float64()),
        pa.field("velocity_logit_per_week", pa.float64()),
        pa.field("velocity_lo_logit_per_week", pa.float64()),
        pa.field("velocity_hi_logit_per_week", pa.float64()),
        pa.field("velocity_status", pa.string(), nullable=False),
        pa.field("graded_weeks", pa.int64(), nullable=False),
        pa.field("engagement_events_per_week", pa.float64()),
        pa.field("engagement_minutes_per_week", pa.float64()),
        pa.field("affinity_effective_domains", pa.float64()),
        pa.field("affinity_top_domain", pa.string()),
        pa.field("affinity_top_share", pa.float64()),
        pa.field("affinity_breadth", pa.int64(), nullable=False),
        pa.field("affinity_archetype", pa.string()),
        pa.field("half_life_days", pa.float64()),
        pa.field("half_life_lo_days", pa.float64()),
        pa.field("half_life_hi_days", pa.float64()),
        pa.field("review_pairs", pa.int64(), nullable=False),
        pa.field("p_recall_7d", pa.float64()),
        pa.field("p_recall_30d", pa.float64()),
        pa.field("reuse_rate", pa.float64()),
        pa.field("retention_status", pa.string(), nullable=False),
    ]
)


def _f64(x: np.ndarray) -> pa.Array:
    """float64 Arrow array with NaN as null."""
    return pa.array(x, pa.float64(), mask=np.isnan(x))


def _labels(codes: np.ndarray, labels: tuple[str, ...]) -> pa.Array:
    """Map int codes to strings (-1 -> null)."""
    dictionary = pa.array(labels, pa.string())
    idx = pa.array(codes, pa.int32(), mask=codes < 0)
    return pa.DictionaryArray.from_arrays(idx, dictionary).cast(pa.string())


@dataclass(frozen=True)
class PartialFeatures:
    """Everything computable before the population fits, and what the fits and MAPs need."""

    columns: dict[str, pa.Array]
    pairs: ReviewPairs
    reuse: ReuseStats
    trend: TrendObs

    @property
    def n_learners(self) -> int:
        """Number of learners."""
        return len(self.columns["learner_id"])


def partial_features(prep: Prepared, items: ItemStats, params: FeatureParams) -> PartialFeatures:
    """Engagement and affinity columns, plus the review pairs, reuse counts and trend attempts."""
    eng = compute_engagement(
        prep,
        params.velocity.half_life_weeks,
        as_of_us=params.as_of_us,
        duration_cap_s=params.affinity.duration_cap_s,
    )
    trend = trend_observations(prep, items)
    aff = compute_affinity(prep, items, params.affinity)
    starts = prep.starts
    n_events = np.diff(starts).astype(np.int64)
    if prep.n_learners:
        first_ts = prep.ts_us[starts[:-1]]
        last_ts = prep.ts_us[starts[1:] - 1]
    else:
        first_ts = last_ts = np.zeros(0, np.int64)
    top = aff.top_domain
    top_name = items.domains.take(pa.array(top, pa.int64(), mask=top < 0))
    cols = {
        "learner_id": prep.learner_ids,
        "n_events": pa.array(n_events, pa.int64()),
        "n_graded_events": pa.array(trend.counts, pa.int64()),
        "first_ts": pa.array(first_ts, pa.int64()).cast(_TS),
        "last_ts": pa.array(last_ts, pa.int64()).cast(_TS),
        "active_weeks": pa.array(eng.active_weeks, pa.int64()),
        "graded_weeks": pa.array(trend.graded_weeks, pa.int64()),
        "engagement_events_per_week": _f64(eng.events_per_week),
        "engagement_minutes_per_week": _f64(eng.minutes_per_week),
        "affinity_effective_domains": _f64(aff.effective_domains),
        "affinity_top_domain": top_name,
        "affinity_top_share": _f64(aff.top_share),
        "affinity_breadth": pa.array(aff.breadth, pa.int64()),
        "affinity_archetype": _labels(aff.archetype, ARCHETYPES),
    }
    pairs, reuse = pairs_and_reuse(prep, params.retention)
    return PartialFeatures(cols, pairs, reuse, trend)


def finish_features(
    partial: PartialFeatures, stats: GlobalStats, params: FeatureParams
) -> pa.Table:
    """Add the velocity and retention columns (per-learner MAPs under the population models)."""
    n = partial.n_learners
    vel = velocity_from_obs(partial.trend, stats.velocity, params.velocity)
    ret = retention_from_pairs(partial.pairs, partial.reuse, n, stats.retention, params.retention)
    cols = dict(partial.columns)
    cols.update(
        {
            "ability_logit": _f64(vel.ability_logit),
            "velocity_logit_per_week": _f64(vel.velocity_logit_per_week),
            "velocity_lo_logit_per_week": _f64(vel.velocity_lo_logit_per_week),
            "velocity_hi_logit_per_week": _f64(vel.velocity_hi_logit_per_week),
            "velocity_status": _labels(vel.status, VELOCITY_STATUS),
            "half_life_days": _f64(ret.half_life_days),
            "half_life_lo_days": _f64(ret.half_life_lo_days),
            "half_life_hi_days": _f64(ret.half_life_hi_days),
            "review_pairs": pa.array(ret.review_pairs, pa.int64()),
            "p_recall_7d": _f64(ret.p_recall_7d),
            "p_recall_30d": _f64(ret.p_recall_30d),
            "reuse_rate": _f64(ret.reuse_rate),
            "retention_status": _labels(ret.status, RETENTION_STATUS),
        }
    )
    return pa.table([cols[f.name] for f in FEATURE_SCHEMA], schema=FEATURE_SCHEMA)


def features_from_prepared(prep: Prepared, stats: GlobalStats, params: FeatureParams) -> pa.Table:
    """All three engines on prepared events -> one row per learner (sorted by learner_id)."""
    return finish_features(partial_features(prep, stats.items, params), stats, params)


def feature_kernel(events: pa.Table, stats: GlobalStats, params: FeatureParams) -> pa.Table:
    """Partition kernel: events of whole learners (any row order) -> their feature rows.

    Pure: the output depends only on these events, ``stats`` and ``params``; learners are
    independent of one another, so any partitioning of learners gives the same rows.
    """
    return features_from_prepared(prepare(events, stats.items), stats, params)


@dataclass(frozen=True)
class TrendSample:
    """Graded first attempts of the velocity fit sample, keyed by learner hash (mergeable)."""

    learner_hash: np.ndarray
    t_weeks: np.ndarray
    difficulty: np.ndarray
    outcome: np.ndarray

    @staticmethod
    def empty() -> TrendSample:
        """No attempts."""
        return TrendSample(np.zeros(0, np.uint64), np.zeros(0), np.zeros(0), np.zeros(0))


def sample_trend(prep: Prepared, params: VelocityParams, trend: TrendObs) -> TrendSample:
    """Attempts of this partition's learners in the velocity fit sample, in hash order, capped.

    A learner is in the sample when its hash falls in ``fit_sample_permille`` and it has at
    least ``min_graded_events`` attempts (smaller learners cannot move the population, so
    adding them changes nothing); whole learners in increasing hash order up to
    ``max_fit_attempts``.
    """
    hashes = learner_hash(prep.learner_ids)
    counts = trend.counts
    keep = in_fit_sample(hashes, params.fit_sample_permille)
    sel = np.flatnonzero(keep & (counts >= max(params.min_graded_events, 1)))
    sel = sel[np.argsort(hashes[sel], kind="stable")]
    sel = sel[: _cap_count(hashes[sel], counts[sel], params.max_fit_attempts)]
    sub = trend.take(sel)
    return TrendSample(np.repeat(hashes[sel], sub.counts), sub.t_weeks, sub.difficulty, sub.outcome)


def _cap_count(hashes: np.ndarray, counts: np.ndarray, cap: int) -> int:
    """How many of the learners (in hash order) to keep: whole runs of equal hashes while the
    cumulative count stays within ``cap``."""
    cum = np.cumsum(counts)
    if not len(cum) or cum[-1] <= cap:
        return len(cum)
    run_last = np.append(hashes[1:] != hashes[:-1], True)
    ends = np.flatnonzero(run_last & (cum <= cap))
    return int(ends[-1]) + 1 if len(ends) else 0


def merge_trend_samples(samples: list[TrendSample], params: VelocityParams) -> TrendObs:
    """Merge partition samples into one learner-major ``TrendObs`` (hash order, capped)."""
    samples = [s for s in samples if len(s.t_weeks)]
    if not samples:
        s = TrendSample.empty()
    else:
        h = np.concatenate([x.learner_hash for x in samples])
        order = np.argsort(h, kind="stable")
        s = TrendSample(
            h[order],
            np.concatenate([x.t_weeks for x in samples])[order],
            np.concatenate([x.difficulty for x in samples])[order],
            np.concatenate([x.outcome for x in samples])[order],
        )
    uniq, counts = np.unique(s.learner_hash, return_counts=True)
    keep = _cap_count(uniq, counts, params.max_fit_attempts)
    cut = int(counts[:keep].sum())
    starts = np.zeros(keep + 1, np.int64)
    np.cumsum(counts[:keep], out=starts[1:])
    zeros = np.zeros(keep)
    return TrendObs(
        starts,
        np.ascontiguousarray(s.t_weeks[:cut]),
        np.ascontiguousarray(s.difficulty[:cut]),
        np.ascontiguousarray(s.outcome[:cut]),
        zeros,
        zeros.astype(np.int64),
    )


@dataclass(frozen=True)
class PairSample:
    """Review pairs of the population-fit sample, keyed by learner hash (mergeable)."""

    learner_hash: np.ndarray
    gap_days: np.ndarray
    recalled: np.ndarray
    x: np.ndarray

    @staticmethod
    def empty() -> PairSample:
        """No pairs."""
        return PairSample(np.zeros(0, np.uint64), np.zeros(0), np.zeros(0), np.zeros((0, 3)))


def sample_pairs(
    prep: Prepared, params: RetentionParams, pairs: ReviewPairs | None = None
) -> PairSample:
    """Pairs of this partition's learners in the fit sample, ordered by learner hash, capped.

    A learner is in the sample when its hash falls in ``fit_sample_permille`` and it has at
    least ``min_review_pairs`` pairs (so learners without a half-life, e.g. new ones with a
    handful of events, cannot move the population).
    """
    hashes = learner_hash(prep.learner_ids)
    keep_learner = in_fit_sample(hashes, params.fit_sample_permille)
    if pairs is None:
        pairs = review_pairs(prep, params)
    # whole learners in increasing hash order (ties: learner order), capped, then their pairs:
    # the same rows as sorting every pair by hash (stable) and applying ``_cap``; learners
    # with fewer pairs than a half-life needs do not shape the population
    counts = np.diff(pairs.starts)
    sel = np.flatnonzero(keep_learner & (counts >= max(params.min_review_pairs, 1)))
    sel = sel[np.argsort(hashes[sel], kind="stable")]
    cum = np.cumsum(counts[sel])
    if len(cum) and cum[-1] > params.max_fit_pairs:
        h = hashes[sel]
        ends = cum[np.append(h[1:] != h[:-1], True)]
        cut = int(ends[ends <= params.max_fit_pairs].max(initial=0))
        sel = sel[cum <= cut]
        cum = cum[: len(sel)]
    lengths = counts[sel]
    first = np.zeros(len(sel), np.int64)
    first[1:] = cum[:-1]
    idx = np.repeat(pairs.starts[sel] - first, lengths) + np.arange(int(lengths.sum()))
    return PairSample(
        np.repeat(hashes[sel], lengths), pairs.gap_days[idx], pairs.recalled[idx], pairs.x[idx]
    )


def _cap(sample: PairSample, max_pairs: int) -> PairSample:
    """Keep whole learners in increasing hash order while the pair count stays <= max_pairs."""
    if len(sample.gap_days) <= max_pairs:
        return sample
    h = sample.learner_hash
    # first index of each learner's run; keep runs that end within the cap
    run_end = np.flatnonzero(np.append(h[1:] != h[:-1], True)) + 1
    cut = int(run_end[run_end <= max_pairs].max(initial=0))
    return PairSample(h[:cut], sample.gap_days[:cut], sample.recalled[:cut], sample.x[:cut])


def merge_pair_samples(samples: list[PairSample], params: RetentionParams) -> ReviewPairs:
    """Merge partition samples into one learner-major ``ReviewPairs`` (canonical order)."""
    samples = [s for s in samples if len(s.gap_days)]
    if not samples:
        s = PairSample.empty()
    else:
        h = np.concatenate([s.learner_hash for s in samples])
        order = np.argsort(h, kind="stable")
        s = PairSample(
            h[order],
            np.concatenate([s.gap_days for s in samples])[order],
            np.concatenate([s.recalled for s in samples])[order],
            np.concatenate([s.x for s in samples])[order],
        )
        s = _cap(s, params.max_fit_pairs)
    uniq, learner = np.unique(s.learner_hash, return_inverse=True)
    learner = learner.astype(np.int64)
    return ReviewPairs(
        learner,
        np.searchsorted(learner, np.arange(len(uniq) + 1)),
        s.gap_days,
        s.recalled,
        np.ascontiguousarray(s.x),
        np.zeros(len(learner), np.int64),
    )


def global_stats_from(
    items: ItemStats,
    samples: list[PairSample],
    params: FeatureParams,
    trend_samples: list[TrendSample] | None = None,
) -> GlobalStats:
    """Finish the global pass: item stats plus the retention and velocity populations fitted
    on the samples (without trend samples the velocity population keeps its defaults)."""
    pairs = merge_pair_samples(samples, params.retention)
    velocity = (
        VelocityPopulation(guess_floor=params.velocity.guess_floor)
        if trend_samples is None
        else fit_velocity_population(
            merge_trend_samples(trend_samples, params.velocity), params.velocity
        )
    )
    return GlobalStats(
        items=items, retention=fit_population(pairs, params.retention), velocity=velocity
    )


def compute_global_stats(events: pa.Table, params: FeatureParams | None = None) -> GlobalStats:
    """Global pass over an in-memory table (item difficulty, retention and velocity priors)."""
    params = params or FeatureParams()
    enc = encode_table(events)
    items = encoded_item_stats(enc, params.velocity)
    prep = prepare_encoded(enc, items, release=True)
    partial = partial_features(prep, items, params)
    return global_stats_from(
        items,
        [sample_pairs(prep, params.retention, partial.pairs)],
        params,
        [sample_trend(prep, params.velocity, partial.trend)],
    )


def compute_features(
    events: pa.Table, params: FeatureParams | None = None, stats: GlobalStats | None = None
) -> pa.Table:
    """Feature table (``FEATURE_SCHEMA``, one row per learner, sorted by learner_id).

    ``stats`` defaults to the global pass over ``events`` itself; pass precomputed stats to
    score new learners against a fixed population.
    """
    params = params or FeatureParams()
    if stats is None:
        enc = encode_table(events)
        items = encoded_item_stats(enc, params.velocity)
        prep = prepare_encoded(enc, items, release=True)
        partial = partial_features(prep, items, params)
        stats = global_stats_from(
            items,
            [sample_pairs(prep, params.retention, partial.pairs)],
            params,
            [sample_trend(prep, params.velocity, partial.trend)],
        )
        return finish_features(partial, stats, params)
    return feature_kernel(events, stats, params)
