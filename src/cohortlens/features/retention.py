"""Retention strength: per-learner memory half-life under a forgetting curve with a guess floor.

Review pairs: consecutive graded attempts of one item by one learner, at least ``min_gap_hours``
apart (closer repeats are same-session and only update the item's history). For pair j of
learner l: ``p_j = g + (1 - g) 2^(-(gap_j / h_j)^kappa)``, ``ln h_j = a_l + coef . x_j`` with x_j
the item-history terms of :class:`RetentionPopulation` and kappa its ``curve_shape`` (1 is the
exponential curve; below 1 a stretched exponential with a heavier tail, Rubin & Wenzel 1996).
``a_l`` (the feature, ``h_l = exp(a_l)``) is the maximum a posteriori under the population prior
``N(mu, sigma^2)``, fitted by empirical Bayes on a hash sample of learners (``fit_population``).
"""

from __future__ import annotations

import dataclasses
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


@nb.njit(cache=True, nogil=True, parallel=True)
def _pair_counts(  # pragma: no cover - jit
    starts: np.ndarray,
    order: np.ndarray,
    item: np.ndarray,
    ts: np.ndarray,
    y: np.ndarray,
    min_gap_us: int,
    reuse_gap_us: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per learner: review pairs, distinct items, items reused >= ``reuse_gap_us`` later."""
    n_l = starts.shape[0] - 1
    n_pairs = np.zeros(n_l, np.int64)
    distinct = np.zeros(n_l, np.int64)
    reused = np.zeros(n_l, np.int64)
    for k in nb.prange(n_l):
        cnt = 0
        nd = 0
        nr = 0
        run_item = -1
        run_t0 = 0
        run_t1 = 0
        g_item = -1  # item of the previous graded row (in item order)
        g_t = 0
        for j in range(starts[k], starts[k + 1]):
            r = order[j]
            it = item[r]
            if it != run_item:
                if run_item >= 0 and run_t1 - run_t0 >= reuse_gap_us:
                    nr += 1
                run_item = it
                run_t0 = ts[r]
                nd += 1
            run_t1 = ts[r]
            if np.isnan(y[r]):
                continue
            if it == g_item and ts[r] - g_t >= min_gap_us:
                cnt += 1
            g_item = it
            g_t = ts[r]
        if run_item >= 0 and run_t1 - run_t0 >= reuse_gap_us:
            nr += 1
        n_pairs[k] = cnt
        distinct[k] = nd
        reused[k] = nr
    return n_pairs, distinct, reused


@nb.njit(cache=True, nogil=True, parallel=True)
def _pair_fill(  # pragma: no cover - jit
    starts: np.ndarray,
    pair_starts: np.ndarray,
    order: np.ndarray,
    item: np.ndarray,
    ts: np.ndarray,
    y: np.ndarray,
    min_gap_us: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fill the pairs of every learner at ``pair_starts`` (learner-major, ``item_order``)."""
    n_l = starts.shape[0] - 1
    m = pair_starts[n_l]
    learner = np.empty(m, np.int64)
    gap_days = np.empty(m)
    recalled = np.empty(m)
    x = np.empty((m, 3))
    event_index = np.empty(m, np.int64)
    for k in nb.prange(n_l):
        p = pair_starts[k]
        if p == pair_starts[k + 1]:
            continue
        g_item = -1
        g_t = 0
        g_y = 0.0
        pos = 0
        bc = 0.0
        for j in range(starts[k], starts[k + 1]):
            r = order[j]
            yr = y[r]
            if np.isnan(yr):
                continue
            it = item[r]
            if it != g_item:
                pos = 0
                bc = 0.0
            else:
                gap = ts[r] - g_t
                if gap >= min_gap_us:
                    learner[p] = k
                    gap_days[p] = gap / DAY_US
                    recalled[p] = yr
                    x[p, 0] = np.sqrt(bc) - 1.0
                    x[p, 1] = np.sqrt(max(pos - bc, 0.0))
                    x[p, 2] = 1.0 - g_y
                    event_index[p] = r
                    p += 1
            g_item = it
            g_t = ts[r]
            g_y = yr
            pos += 1
            bc += yr
    return learner, gap_days, recalled, x, event_index


def _pair_stats(
    prep: Prepared, params: RetentionParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pair counts, pair starts, distinct items, reused items) per learner."""
    counts, distinct, reused = _pair_counts(
        prep.starts,
        prep.item_order,
        prep.item_local,
        prep.ts_us,
        prep.outcome,
        int(np.int64(params.min_gap_hours * 3_600_000_000)),
        int(np.int64(params.reuse_min_gap_days * DAY_US)),
    )
    pair_starts = np.zeros(prep.n_learners + 1, np.int64)
    np.cumsum(counts, out=pair_starts[1:])
    return counts, pair_starts, distinct, reused


def review_pairs(prep: Prepared, params: RetentionParams) -> ReviewPairs:
    """All review pairs of the learners in ``prep`` (numba, one pass per learner in parallel).

    Pairs are learner-major and, inside a learner, in ``Prepared.item_order``; ``x`` counts the
    earlier correct / wrong attempts of the item within the learner's own history.
    """
    _, pair_starts, _, _ = _pair_stats(prep, params)
    return _pairs_at(prep, params, pair_starts)


def _pairs_at(prep: Prepared, params: RetentionParams, pair_starts: np.ndarray) -> ReviewPairs:
    learner, gap_days, recalled, x, rows = _pair_fill(
        prep.starts,
        pair_starts,
        prep.item_order,
        prep.item_local,
        prep.ts_us,
        prep.outcome,
        int(np.int64(params.min_gap_hours * 3_600_000_000)),
    )
    return ReviewPairs(
        learner=learner,
        starts=pair_starts,
        gap_days=gap_days,
        recalled=recalled,
        x=x,
        event_index=rows,
    )


def reuse_stats(prep: Prepared, params: RetentionParams) -> ReuseStats:
    """Distinct items per learner, and those attempted again >= ``reuse_min_gap_days`` later."""
    _, _, distinct, reused = _pair_stats(prep, params)
    return ReuseStats(distinct, reused)


def pairs_and_reuse(prep: Prepared, params: RetentionParams) -> tuple[ReviewPairs, ReuseStats]:
    """:func:`review_pairs` and :func:`reuse_stats` sharing one counting pass."""
    _, pair_starts, distinct, reused = _pair_stats(prep, params)
    return _pairs_at(prep, params, pair_starts), ReuseStats(distinct, reused)


@nb.njit(cache=True, nogil=True, parallel=True)
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
    kappa: float,
    start: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-learner MAP of a = ln h by Fisher scoring from ``start``; returns (a, posterior sd)."""
    n_l = starts.shape[0] - 1
    a_out = np.full(n_l, mu)
    sd_out = np.full(n_l, sigma)
    prec0 = 1.0 / (sigma * sigma)
    ln2 = np.log(2.0)
    exponential = kappa == 1.0
    for li in nb.prange(n_l):
        s = starts[li]
        t = starts[li + 1]
        if s == t:
            continue
        a = start[li]
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
                w = gap[j] * np.exp(-lnh)
                v = ln2 * (w if exponential else w**kappa)  # skip pow for the default curve
                e = np.exp(-v)
                p = g + (1.0 - g) * e
                if p < 1e-6:
                    p = 1e-6
                elif p > 1.0 - 1e-6:
                    p = 1.0 - 1e-6
                dp = (1.0 - g) * e * v * kappa
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


@nb.njit(cache=True, nogil=True)
def _offsets(x: np.ndarray, coef: np.ndarray) -> np.ndarray:  # pragma: no cover - jit
    """``x @ coef`` without BLAS (OpenBLAS's threads would spin on the cores our kernels use)."""
    out = np.zeros(x.shape[0])
    for j in range(x.shape[0]):
        for k in range(x.shape[1]):
            out[j] += x[j, k] * coef[k]
    return out


def _ln_bounds(params: RetentionParams) -> tuple[float, float]:
    lo, hi = params.half_life_bounds_days
    return float(np.log(lo)), float(np.log(hi))


def learner_map(
    pairs: ReviewPairs,
    pop: RetentionPopulation,
    params: RetentionParams,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """MAP ln half-life and its posterior sd (Laplace, Fisher information) per learner.

    Scoring starts at the prior mean, or at ``start`` (the population fit passes the previous
    alternation's estimates, which are already close).
    """
    lo, hi = _ln_bounds(params)
    n_l = len(pairs.starts) - 1
    a0 = np.full(n_l, pop.mu_ln_h) if start is None else np.ascontiguousarray(start, np.float64)
    return _map_kernel(
        pairs.starts,
        pairs.gap_days,
        pairs.recalled,
        _offsets(pairs.x, np.asarray(pop.coef, dtype=np.float64)),
        pop.guess_floor,
        pop.mu_ln_h,
        pop.sigma_ln_h,
        lo,
        hi,
        pop.curve_shape,
        a0,
    )


def predict_recall(
    gap_days: np.ndarray, ln_h: np.ndarray, guess_floor: float, curve_shape: float = 1.0
) -> np.ndarray:
    """Forgetting curve p = g + (1 - g) 2^(-(gap / h)^kappa), with h = exp(ln_h) in days."""
    v = LN2 * (gap_days * np.exp(-ln_h)) ** curve_shape
    return guess_floor + (1.0 - guess_floor) * np.exp(-v)


#: Fixed number of partial sums in :func:`_nll_kernel`: the pooled sums are added in the same
#: order whatever the thread count, so the population fit is the same on every machine.
_NLL_CHUNKS = 32


@nb.njit(cache=True, nogil=True, parallel=True)
def _nll_kernel(  # pragma: no cover - jit
    g: float,
    kappa: float,
    coef: np.ndarray,
    ln_gap: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    a: np.ndarray,
    lo: float,
    hi: float,
) -> np.ndarray:
    """Pooled sums over pairs: (nll, sum dl (1 - e), sum dv ln w, sum_inside dv x_k ...)."""
    n = ln_gap.shape[0]
    m = x.shape[1]
    part = np.zeros((_NLL_CHUNKS, 3 + m))
    size = (n + _NLL_CHUNKS - 1) // _NLL_CHUNKS
    ln2 = np.log(2.0)
    for c in nb.prange(_NLL_CHUNKS):
        row = part[c]
        for j in range(c * size, min(n, (c + 1) * size)):
            raw = a[j]
            for k in range(m):
                raw += x[j, k] * coef[k]
            lnh = min(max(raw, lo), hi)
            ln_w = ln_gap[j] - lnh  # ln(gap / h)
            v = ln2 * np.exp(kappa * ln_w)
            e = np.exp(-v)
            p = min(max(g + (1.0 - g) * e, _P_EPS), 1.0 - _P_EPS)
            yj = y[j]
            if yj > 0.0:  # graded 0/1 outcomes need one of the two logarithms
                row[0] -= yj * np.log(p)
            if yj < 1.0:
                row[0] -= (1.0 - yj) * np.log1p(-p)
            dl = (yj - p) / (p * (1.0 - p))
            dv = dl * (1.0 - g) * e * v  # -d loglik / d ln v
            row[1] += dl * (1.0 - e)
            row[2] += dv * ln_w
            if lo < raw < hi:
                for k in range(m):
                    row[3 + k] += dv * x[j, k]
    total = np.zeros(3 + m)
    for c in range(_NLL_CHUNKS):
        total += part[c]
    return total


def _shared_nll(
    theta: np.ndarray,
    ln_gap: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    a: np.ndarray,
    lo: float,
    hi: float,
) -> tuple[float, np.ndarray]:
    """Pooled negative log-likelihood and gradient in (logit g, ln kappa, coef) given a per pair.

    ``ln_gap`` is ln(gap in days), taken once per fit rather than once per evaluation.
    d ln v = kappa d ln w + ln w d kappa, with w = gap / h and ln h = a + coef . x (clipped:
    no gradient through the coefficients where the clip binds).
    """
    g = 1.0 / (1.0 + np.exp(-theta[0]))
    kappa = float(np.exp(theta[1]))
    coef = np.ascontiguousarray(theta[2:], dtype=np.float64)
    s = _nll_kernel(g, kappa, coef, ln_gap, y, x, a, lo, hi)
    grad = np.empty_like(theta)
    grad[0] = -s[1] * g * (1.0 - g)
    grad[1] = s[2] * kappa
    grad[2:] = -kappa * s[3:]
    return float(s[0]), grad


def _shared_nll_exponential(
    theta: np.ndarray,
    ln_gap: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    a: np.ndarray,
    lo: float,
    hi: float,
) -> tuple[float, np.ndarray]:
    """:func:`_shared_nll` at kappa = 1, in (logit g, coef)."""
    nll, grad = _shared_nll(np.insert(theta, 1, 0.0), ln_gap, y, x, a, lo, hi)
    return nll, np.delete(grad, 1)


def fit_population(pairs: ReviewPairs, params: RetentionParams) -> RetentionPopulation:
    """Empirical-Bayes fit: alternate shared terms (g, kappa, coef), per-learner MAP, prior.

    ``pairs`` are those of the fit sample. The prior update is the EM step of a normal
    hierarchy under the Laplace approximation: ``sigma^2 = mean((a - mu)^2 + sd^2)``.
    The curve shape kappa is fitted when ``params.fit_curve_shape`` (else kept at 1).
    """
    from threadpoolctl import threadpool_limits

    # L-BFGS-B's BLAS calls wake OpenBLAS's threads, which then spin on the cores our numba
    # kernels run on: with them the fit took 1.7x as long on this 2-core machine
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_population(pairs, params)


def _fit_population(pairs: ReviewPairs, params: RetentionParams) -> RetentionPopulation:
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
        curve_shape=1.0,
    )
    a, sd = learner_map(pairs, pop, params)
    shape = params.fit_curve_shape
    # theta = (logit g, [ln kappa,] coef): ln kappa is a free parameter only when fitted
    theta = np.zeros(5 if shape else 4)
    theta[0] = np.log(0.25 / 0.75)
    bounds = [(-8.0, 4.0)] + [(-5.0, 5.0)] * 3
    if shape:
        lo_k, hi_k = np.log(params.curve_shape_bounds)
        bounds.insert(1, (float(lo_k), float(hi_k)))
    previous = _population_vector(pop)
    ln_gap = np.log(pairs.gap_days)
    for _ in range(params.em_iterations):
        a_pair = a[pairs.learner]
        res = optimize.minimize(
            _shared_nll if shape else _shared_nll_exponential,
            theta,
            args=(ln_gap, pairs.recalled, pairs.x, a_pair, lo, hi),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
        )
        theta = res.x
        full = theta if shape else np.insert(theta, 1, 0.0)
        pop = dataclasses.replace(
            pop,
            guess_floor=float(1.0 / (1.0 + np.exp(-full[0]))),
            curve_shape=float(np.exp(full[1])),
            coef=(float(full[2]), float(full[3]), float(full[4])),
        )
        a, sd = learner_map(pairs, pop, params, start=a)
        mu = float(a[has].mean())
        sigma = float(np.sqrt(np.mean((a[has] - mu) ** 2 + sd[has] ** 2)))
        pop = dataclasses.replace(pop, mu_ln_h=mu, sigma_ln_h=max(sigma, 0.05))
        a, sd = learner_map(pairs, pop, params, start=a)
        current = _population_vector(pop)
        if np.abs(current - previous).max() <= params.em_tolerance:
            break
        previous = current
    return pop


def _population_vector(pop: RetentionPopulation) -> np.ndarray:
    """The fitted population parameters on their unconstrained scales (convergence check)."""
    g = min(max(pop.guess_floor, 1e-12), 1.0 - 1e-12)
    return np.array(
        [np.log(g / (1.0 - g)), np.log(pop.curve_shape), *pop.coef, pop.mu_ln_h, pop.sigma_ln_h]
    )


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
    g, kappa = pop.guess_floor, pop.curve_shape
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
        p_recall_7d=np.where(ok, predict_recall(np.full_like(a, 7.0), a, g, kappa), nan),
        p_recall_30d=np.where(ok, predict_recall(np.full_like(a, 30.0), a, g, kappa), nan),
        reuse_rate=reuse_rate,
        status=status,
    )
