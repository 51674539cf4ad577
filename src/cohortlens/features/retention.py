"""Retention strength: per-learner memory half-life under a forgetting curve with a guess floor.

Review pairs: consecutive graded attempts of one item by one learner, at least ``min_gap_hours``
apart (closer repeats are same-session and only update the item's history). For pair j of
learner l: ``p_j = g + (1 - g) 2^(-gap_j / h_j)``, ``ln h_j = a_l + coef . x_j`` with x_j the
item-history terms of :class:`RetentionPopulation`. ``a_l`` (the feature, ``h_l = exp(a_l)``) is
the maximum a posteriori under the population prior ``N(mu, sigma^2)``, fitted by empirical
Bayes on a hash sample of learners (``fit_population``).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numba as nb
import numpy as np

from cohortlens.features._prep import DAY_US, Prepared
from cohortlens.features.params import RetentionParams
from cohortlens.features.stats import RetentionPopulation

LN2 = float(np.log(2.0))
RETENTION_STATUS = ("ok", "no_review_pairs", "too_few_review_pairs")
_P_EPS = 1e-6


@dataclass(frozen=True)
class ReviewPairs:
    """Review pairs, learner-major (``starts`` index them per learner of the ``Prepared``)."""

    learner: np.ndarray
    starts: np.ndarray
    gap_days: np.ndarray
    recalled: np.ndarray
    x: np.ndarray  # (n, 3) item-history terms
    event_index: np.ndarray  # row (in the Prepared order) of the attempt being predicted

    def __len__(self) -> int:
        return len(self.gap_days)

    def take(self, mask: np.ndarray, n_learners: int) -> ReviewPairs:
        """Subset of pairs (learner-major order kept), with ``starts`` recomputed."""
        learner = self.learner[mask]
        return ReviewPairs(
            learner,
            np.searchsorted(learner, np.arange(n_learners + 1)),
            self.gap_days[mask],
            self.recalled[mask],
            self.x[mask],
            self.event_index[mask],
        )


@dataclass(frozen=True)
class ReuseStats:
    """Per-learner item reuse: distinct items and those attempted again >= threshold later."""

    distinct_items: np.ndarray
    reused_items: np.ndarray


def _group_sort(prep: Prepared, mask: np.ndarray) -> np.ndarray:
    """Rows selected by ``mask`` ordered by (learner, item), keeping time order inside."""
    rows = prep.item_order
    return rows[mask[rows]]


def review_pairs(prep: Prepared, params: RetentionParams) -> ReviewPairs:
    """All review pairs of the learners in ``prep`` (vectorized; no loop per learner)."""
    rows = _group_sort(prep, ~np.isnan(prep.outcome))
    n = len(rows)
    learner = prep.learner[rows]
    key = learner * np.int64(max(prep.n_local_items, 1)) + prep.item_local[rows]
    ts = prep.ts_us[rows]
    y = prep.outcome[rows]
    same = np.zeros(n, bool)
    if n > 1:
        same[1:] = key[1:] == key[:-1]
    gap_us = np.zeros(n, np.int64)
    gap_us[1:] = ts[1:] - ts[:-1]
    # earlier attempts of the same item: counts within the (learner, item) run
    run_start = np.flatnonzero(~same)
    run_id = np.cumsum(~same) - 1
    pos = np.arange(n) - run_start[run_id]
    cs = np.concatenate(([0.0], np.cumsum(y)))
    before_correct = cs[np.arange(n)] - cs[run_start[run_id]]
    before_wrong = pos - before_correct
    prev_y = np.zeros(n)
    prev_y[1:] = y[:-1]
    pair = same & (gap_us >= np.int64(params.min_gap_hours * 3_600_000_000))
    idx = np.flatnonzero(pair)
    x = np.column_stack(
        (
            np.sqrt(before_correct[idx]) - 1.0,
            np.sqrt(np.maximum(before_wrong[idx], 0.0)),
            1.0 - prev_y[idx],
        )
    )
    pl = learner[idx]
    # pairs are learner-major because rows are sorted by (learner, item)
    return ReviewPairs(
        learner=pl,
        starts=np.searchsorted(pl, np.arange(prep.n_learners + 1)),
        gap_days=gap_us[idx] / DAY_US,
        recalled=y[idx],
        x=np.ascontiguousarray(x),
        event_index=rows[idx],
    )


def reuse_stats(prep: Prepared, params: RetentionParams) -> ReuseStats:
    """Distinct items per learner, and those attempted again >= ``reuse_min_gap_days`` later."""
    rows = _group_sort(prep, np.ones(len(prep.ts_us), bool))
    n = len(rows)
    if n == 0:
        z = np.zeros(prep.n_learners, np.int64)
        return ReuseStats(z, z.copy())
    learner = prep.learner[rows]
    key = learner * np.int64(max(prep.n_local_items, 1)) + prep.item_local[rows]
    first = np.ones(n, bool)
    first[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], n) - 1
    ts = prep.ts_us[rows]
    span = ts[ends] - ts[starts]
    reused = span >= np.int64(params.reuse_min_gap_days * DAY_US)
    lrn = learner[starts]
    return ReuseStats(
        np.bincount(lrn, minlength=prep.n_learners).astype(np.int64),
        np.bincount(lrn, weights=reused, minlength=prep.n_learners).astype(np.int64),
    )


@nb.njit(cache=True, nogil=True)
def _map_kernel(  # pragma: no cover - jit
    starts: np.ndarray,
    gap: np.ndarray,
    y: np.ndarray,
    offset: np.ndarray,
    g: float,
    mu: float,
    sigma: float,
    lo: float,
    hi: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-learner MAP of a = ln h by Fisher scoring; returns (a, posterior sd)."""
    n_l = starts.shape[0] - 1
    a_out = np.full(n_l, mu)
    sd_out = np.full(n_l, sigma)
    prec0 = 1.0 / (sigma * sigma)
    ln2 = np.log(2.0)
    for li in range(n_l):
        s = starts[li]
        t = starts[li + 1]
        if s == t:
            continue
        a = mu
        info = prec0
        for _ in range(50):
            grad = -(a - mu) * prec0
            info = prec0
            for j in range(s, t):
                lnh = a + offset[j]
                if lnh < lo:
                    lnh = lo
                elif lnh > hi:
                    lnh = hi
                r = ln2 * gap[j] * np.exp(-lnh)
                e = np.exp(-r)
                p = g + (1.0 - g) * e
                if p < 1e-6:
                    p = 1e-6
                elif p > 1.0 - 1e-6:
                    p = 1.0 - 1e-6
                dp = (1.0 - g) * e * r
                q = p * (1.0 - p)
                grad += (y[j] - p) / q * dp
                info += dp * dp / q
            step = grad / info
            if step > 2.0:
                step = 2.0
            elif step < -2.0:
                step = -2.0
            a += step
            if a < lo:
                a = lo
            elif a > hi:
                a = hi
            if abs(step) < 1e-10:
                break
        a_out[li] = a
        sd_out[li] = 1.0 / np.sqrt(info)
    return a_out, sd_out


def _ln_bounds(params: RetentionParams) -> tuple[float, float]:
    lo, hi = params.half_life_bounds_days
    return float(np.log(lo)), float(np.log(hi))


def learner_map(
    pairs: ReviewPairs, pop: RetentionPopulation, params: RetentionParams
) -> tuple[np.ndarray, np.ndarray]:
    """MAP ln half-life and its posterior sd (Laplace, Fisher information) per learner."""
    lo, hi = _ln_bounds(params)
    offset = pairs.x @ np.asarray(pop.coef, dtype=np.float64) if len(pairs) else np.zeros(0)
    return _map_kernel(
        pairs.starts,
        pairs.gap_days,
        pairs.recalled,
        np.ascontiguousarray(offset),
        pop.guess_floor,
        pop.mu_ln_h,
        pop.sigma_ln_h,
        lo,
        hi,
    )


def predict_recall(gap_days: np.ndarray, ln_h: np.ndarray, guess_floor: float) -> np.ndarray:
    """Forgetting curve p = g + (1 - g) 2^(-gap / h), with h = exp(ln_h) in days."""
    return guess_floor + (1.0 - guess_floor) * np.exp(-LN2 * gap_days * np.exp(-ln_h))


def _shared_nll(
    theta: np.ndarray,
    gap: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    a: np.ndarray,
    lo: float,
    hi: float,
) -> tuple[float, np.ndarray]:
    """Pooled negative log-likelihood and gradient in (logit g, coef) given per-pair a."""
    g = 1.0 / (1.0 + np.exp(-theta[0]))
    raw = a + x @ theta[1:]
    lnh = np.clip(raw, lo, hi)
    inside = (raw > lo) & (raw < hi)
    r = LN2 * gap * np.exp(-lnh)
    e = np.exp(-r)
    p = np.clip(g + (1.0 - g) * e, _P_EPS, 1.0 - _P_EPS)
    nll = -float(np.sum(y * np.log(p) + (1.0 - y) * np.log1p(-p)))
    dl = (y - p) / (p * (1.0 - p))
    grad = np.empty_like(theta)
    grad[0] = -float(np.sum(dl * (1.0 - e))) * g * (1.0 - g)
    grad[1:] = -((dl * (1.0 - g) * e * r * inside) @ x)
    return nll, grad


def fit_population(pairs: ReviewPairs, params: RetentionParams) -> RetentionPopulation:
    """Empirical-Bayes fit: alternate shared terms (g, coef), per-learner MAP, prior (mu, sigma).

    ``pairs`` are those of the fit sample. The prior update is the EM step of a normal
    hierarchy under the Laplace approximation: ``sigma^2 = mean((a - mu)^2 + sd^2)``.
    """
    from scipy import optimize  # imported here: workers never fit, and scipy is slow to import

    if len(pairs) == 0:
        return RetentionPopulation()
    lo, hi = _ln_bounds(params)
    has = np.diff(pairs.starts) > 0
    n_learners = int(has.sum())
    pop = RetentionPopulation(
        guess_floor=0.25,
        coef=(0.0, 0.0, 0.0),
        mu_ln_h=float(np.clip(np.log(max(np.median(pairs.gap_days), 1e-3)), lo, hi)),
        sigma_ln_h=1.5,
        n_pairs=len(pairs),
        n_learners=n_learners,
    )
    a, sd = learner_map(pairs, pop, params)
    theta = np.array([np.log(0.25 / 0.75), 0.0, 0.0, 0.0])
    for _ in range(params.em_iterations):
        a_pair = a[pairs.learner]
        res = optimize.minimize(
            _shared_nll,
            theta,
            args=(pairs.gap_days, pairs.recalled, pairs.x, a_pair, lo, hi),
            jac=True,
            method="L-BFGS-B",
            bounds=[(-8.0, 4.0), (-5.0, 5.0), (-5.0, 5.0), (-5.0, 5.0)],
        )
        theta = res.x
        g = float(1.0 / (1.0 + np.exp(-theta[0])))
        pop = RetentionPopulation(
            g,
            (float(theta[1]), float(theta[2]), float(theta[3])),
            pop.mu_ln_h,
            pop.sigma_ln_h,
            len(pairs),
            n_learners,
        )
        a, sd = learner_map(pairs, pop, params)
        mu = float(a[has].mean())
        sigma = float(np.sqrt(np.mean((a[has] - mu) ** 2 + sd[has] ** 2)))
        pop = RetentionPopulation(g, pop.coef, mu, max(sigma, 0.05), len(pairs), n_learners)
        a, sd = learner_map(pairs, pop, params)
    return pop


@dataclass(frozen=True)
class RetentionResult:
    """Per-learner retention columns (learner order of the ``Prepared`` input)."""

    half_life_days: np.ndarray
    half_life_lo_days: np.ndarray
    half_life_hi_days: np.ndarray
    review_pairs: np.ndarray
    p_recall_7d: np.ndarray
    p_recall_30d: np.ndarray
    reuse_rate: np.ndarray
    status: np.ndarray


def compute_retention(
    prep: Prepared, pop: RetentionPopulation, params: RetentionParams
) -> RetentionResult:
    """Per-learner half-life (MAP, credible interval), recall at 7/30 days and reuse rate."""
    return retention_from_pairs(
        review_pairs(prep, params), reuse_stats(prep, params), prep.n_learners, pop, params
    )


def retention_from_pairs(
    pairs: ReviewPairs,
    reuse: ReuseStats,
    n_learners: int,
    pop: RetentionPopulation,
    params: RetentionParams,
) -> RetentionResult:
    """The retention columns from already extracted pairs and reuse counts."""
    a, sd = learner_map(pairs, pop, params)
    n_pairs = np.diff(pairs.starts).astype(np.int64)
    z = NormalDist().inv_cdf(0.5 + params.credible_mass / 2.0)
    ok = n_pairs >= max(params.min_review_pairs, 1)
    status = np.where(n_pairs == 0, 1, np.where(ok, 0, 2)).astype(np.int64)
    nan = np.full(n_learners, np.nan)
    h = np.where(ok, np.exp(a), nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        reuse_rate = np.where(
            reuse.distinct_items > 0,
            reuse.reused_items / np.maximum(reuse.distinct_items, 1),
            np.nan,
        )
    return RetentionResult(
        half_life_days=h,
        half_life_lo_days=np.where(ok, np.exp(a - z * sd), nan),
        half_life_hi_days=np.where(ok, np.exp(a + z * sd), nan),
        review_pairs=n_pairs,
        p_recall_7d=np.where(ok, predict_recall(np.full_like(a, 7.0), a, pop.guess_floor), nan),
        p_recall_30d=np.where(ok, predict_recall(np.full_like(a, 30.0), a, pop.guess_floor), nan),
        reuse_rate=reuse_rate,
        status=status,
    )
