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
from cohortlens.features.params import FeatureParams, RetentionParams
from cohortlens.features.retention import (
    RETENTION_STATUS,
    ReuseStats,
    ReviewPairs,
    fit_population,
    pairs_and_reuse,
    retention_from_pairs,
    review_pairs,
)
from cohortlens.features.stats import GlobalStats, ItemStats, RetentionPopulation
from cohortlens.features.velocity import VELOCITY_STATUS, compute_velocity

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
        pa.field("velocity_status", pa.string(), nullable=False),
        pa.field("graded_weeks", pa.int64(), nullable=False),
        pa.field("engagement_events_per_week", pa.float64()),
        pa.field("engagement_minutes_per_week", pa.float64()),
        pa.field("affinity_entropy_norm", pa.float64()),
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


_RETENTION_COLUMNS = (
    "half_life_days",
    "half_life_lo_days",
    "half_life_hi_days",
    "review_pairs",
    "p_recall_7d",
    "p_recall_30d",
    "reuse_rate",
    "retention_status",
)


@dataclass(frozen=True)
class PartialFeatures:
    """Everything but the retention MAP (computable before the population fit)."""

    table: pa.Table
    pairs: ReviewPairs
    reuse: ReuseStats


def partial_features(prep: Prepared, items: ItemStats, params: FeatureParams) -> PartialFeatures:
    """Velocity and affinity columns, plus the review pairs and reuse counts."""
    vel = compute_velocity(
        prep,
        items,
        params.velocity,
        as_of_us=params.as_of_us,
        duration_cap_s=params.affinity.duration_cap_s,
        predictions=False,
    )
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
        "n_graded_events": pa.array(vel.graded_events, pa.int64()),
        "first_ts": pa.array(first_ts, pa.int64()).cast(_TS),
        "last_ts": pa.array(last_ts, pa.int64()).cast(_TS),
        "active_weeks": pa.array(vel.active_weeks, pa.int64()),
        "ability_logit": _f64(vel.ability_logit),
        "velocity_logit_per_week": _f64(vel.velocity_logit_per_week),
        "velocity_status": _labels(vel.status, VELOCITY_STATUS),
        "graded_weeks": pa.array(vel.graded_weeks, pa.int64()),
        "engagement_events_per_week": _f64(vel.engagement_events_per_week),
        "engagement_minutes_per_week": _f64(vel.engagement_minutes_per_week),
        "affinity_entropy_norm": _f64(aff.entropy_norm),
        "affinity_top_domain": top_name,
        "affinity_top_share": _f64(aff.top_share),
        "affinity_breadth": pa.array(aff.breadth, pa.int64()),
        "affinity_archetype": _labels(aff.archetype, ARCHETYPES),
    }
    schema = pa.schema([f for f in FEATURE_SCHEMA if f.name in cols])
    pairs, reuse = pairs_and_reuse(prep, params.retention)
    return PartialFeatures(pa.table(cols, schema=schema), pairs, reuse)


def finish_features(
    partial: PartialFeatures, pop: RetentionPopulation, params: FeatureParams
) -> pa.Table:
    """Add the retention columns (per-learner MAP under the population model)."""
    ret = retention_from_pairs(
        partial.pairs, partial.reuse, partial.table.num_rows, pop, params.retention
    )
    cols = {
        "half_life_days": _f64(ret.half_life_days),
        "half_life_lo_days": _f64(ret.half_life_lo_days),
        "half_life_hi_days": _f64(ret.half_life_hi_days),
        "review_pairs": pa.array(ret.review_pairs, pa.int64()),
        "p_recall_7d": _f64(ret.p_recall_7d),
        "p_recall_30d": _f64(ret.p_recall_30d),
        "reuse_rate": _f64(ret.reuse_rate),
        "retention_status": _labels(ret.status, RETENTION_STATUS),
    }
    table = partial.table
    for name in _RETENTION_COLUMNS:
        table = table.append_column(name, cols[name])
    return table.cast(FEATURE_SCHEMA)


def features_from_prepared(prep: Prepared, stats: GlobalStats, params: FeatureParams) -> pa.Table:
    """All three engines on prepared events -> one row per learner (sorted by learner_id)."""
    return finish_features(partial_features(prep, stats.items, params), stats.retention, params)


def feature_kernel(events: pa.Table, stats: GlobalStats, params: FeatureParams) -> pa.Table:
    """Partition kernel: events of whole learners (any row order) -> their feature rows.

    Pure: the output depends only on these events, ``stats`` and ``params``; learners are
    independent of one another, so any partitioning of learners gives the same rows.
    """
    return features_from_prepared(prepare(events, stats.items), stats, params)


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
    """Pairs of this partition's learners in the fit sample, ordered by learner hash, capped."""
    hashes = learner_hash(prep.learner_ids)
    keep_learner = in_fit_sample(hashes, params.fit_sample_permille)
    if pairs is None:
        pairs = review_pairs(prep, params)
    # whole learners in increasing hash order (ties: learner order), capped, then their pairs:
    # the same rows as sorting every pair by hash (stable) and applying ``_cap``
    counts = np.diff(pairs.starts)
    sel = np.flatnonzero(keep_learner & (counts > 0))
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
    items: ItemStats, samples: list[PairSample], params: FeatureParams
) -> GlobalStats:
    """Finish the global pass: item stats plus the retention population fitted on the sample."""
    pairs = merge_pair_samples(samples, params.retention)
    return GlobalStats(items=items, retention=fit_population(pairs, params.retention))


def compute_global_stats(events: pa.Table, params: FeatureParams | None = None) -> GlobalStats:
    """Global pass over an in-memory table (item difficulty, domain shares, retention prior)."""
    params = params or FeatureParams()
    enc = encode_table(events)
    items = encoded_item_stats(enc, params.velocity)
    prep = prepare_encoded(enc, items, release=True)
    return global_stats_from(items, [sample_pairs(prep, params.retention)], params)


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
        sample = sample_pairs(prep, params.retention, partial.pairs)
        stats = global_stats_from(items, [sample], params)
        return finish_features(partial, stats.retention, params)
    return feature_kernel(events, stats, params)
