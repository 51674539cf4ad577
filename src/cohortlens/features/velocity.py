"""Learning velocity: the trend of each learner's ability, in logits per week.

A hierarchical logistic regression with a per-learner intercept and slope: graded first
attempt j of learner l, ``t_j`` weeks after the learner's first one, succeeds with
``g + (1 - g) sigmoid(a_l + v_l t_j - kappa b_j)`` (``b_j`` the item difficulty of the global
item statistics). ``a_l`` (ability at arrival) and ``v_l`` (the velocity) have normal priors
whose means and spreads, and the difficulty scale ``kappa``, are fitted by empirical Bayes on a
hash sample of learners (:func:`fit_velocity_population`, part of the global pass). Each
learner's (a, v) is the MAP under that prior, with a Laplace credible interval
(:func:`velocity_from_obs`). Repeats of an item measure memory (the retention engine) and are
not used.

Next-attempt predictions (validation only, :func:`predict_next_attempts`) come from an online
Elo (Pelánek 2016) and the prior/current knowledge model of Pelánek et al. (2017): a first
attempt is predicted from ``theta + theta_d - b_i`` before the update; a repeat from the
current knowledge of that item, which starts at the prior logit and moves by ``gamma (y - P)``
after a correct and ``delta (y - P)`` after a wrong answer, plus ``time_shift / seconds since
the previous attempt``. The features do not depend on it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from statistics import NormalDist

import numba as nb
import numpy as np

from cohortlens.features._prep import MONDAY0_US, WEEK_US, Prepared
from cohortlens.features.params import VelocityParams
from cohortlens.features.stats import ItemStats, VelocityPopulation

#: Clip of success probabilities in the likelihoods.
_P_EPS = 1e-9

#: ``velocity_status`` codes -> labels.
VELOCITY_STATUS = (
    "ok",
    "no_graded_events",
    "too_few_graded_events",
    "too_few_active_weeks",
    "too_uncertain",
)


def ema_rate(half_life_weeks: float) -> float:
    """Per-week EMA weight lambda = 1 - 2^(-1/half_life)."""
    return float(1.0 - 2.0 ** (-1.0 / half_life_weeks))


@nb.njit(cache=True, nogil=True, parallel=True)
def _engagement_kernel(  # pragma: no cover - jit
    starts: np.ndarray,
    ts: np.ndarray,
    duration: np.ndarray,
    lam: float,
    as_of_week: int,
    duration_cap: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Active weeks and the EMAs of weekly events and minutes (every event; silent weeks decay
    the EMA up to ``as_of_week``), normalized by 1 - (1 - lam)^weeks."""
    n_l = starts.shape[0] - 1
    active_weeks_out = np.zeros(n_l, np.int64)
    eng_ev_out = np.full(n_l, np.nan)
    eng_min_out = np.full(n_l, np.nan)
    keep = 1.0 - lam
    for li in nb.prange(n_l):
        a = starts[li]
        b = starts[li + 1]
        if a == b:
            continue
        cur_aw = -1
        s_ev = 0.0
        s_min = 0.0
        n_aw = 0
        n_aweeks = 0
        w_ev = 0.0
        w_min = 0.0
        has_dur = False
        for e in range(a, b):
            w = (ts[e] - MONDAY0_US) // WEEK_US
            if w != cur_aw:
                if cur_aw >= 0:
                    s_ev = keep * s_ev + lam * w_ev
                    s_min = keep * s_min + lam * w_min
                    n_aw += 1
                    gap = w - cur_aw - 1
                    if gap > 0:
                        s_ev *= keep**gap
                        s_min *= keep**gap
                        n_aw += gap
                n_aweeks += 1
                cur_aw = w
                w_ev = 0.0
                w_min = 0.0
            w_ev += 1.0
            d_s = duration[e]
            if not np.isnan(d_s):
                has_dur = True
                w_min += min(max(d_s, 0.0), duration_cap) / 60.0
        # close the last activity week, then silent weeks up to as_of
        s_ev = keep * s_ev + lam * w_ev
        s_min = keep * s_min + lam * w_min
        n_aw += 1
        if as_of_week > cur_aw:
            s_ev *= keep ** (as_of_week - cur_aw)
            s_min *= keep ** (as_of_week - cur_aw)
            n_aw += as_of_week - cur_aw
        norm = 1.0 - keep**n_aw
        eng_ev_out[li] = s_ev / norm
        if has_dur:
            eng_min_out[li] = s_min / norm
        active_weeks_out[li] = n_aweeks
    return active_weeks_out, eng_ev_out, eng_min_out


@nb.njit(cache=True, nogil=True, parallel=True)
def _elo_kernel(  # pragma: no cover - jit
    starts: np.ndarray,
    item: np.ndarray,
    domain: np.ndarray,
    outcome: np.ndarray,
    difficulty: np.ndarray,
    default_difficulty: float,
    n_domains: int,
    alpha: float,
    beta: float,
    k_min: float,
    domain_weight: float,
    use: np.ndarray,
    g_floor: float,
    p_pred: np.ndarray,
) -> None:
    """Online Elo ability per learner; each graded row gets its prior logit before the update."""
    n_l = starts.shape[0] - 1
    for li in nb.prange(n_l):
        a = starts[li]
        b = starts[li + 1]
        if a == b:
            continue
        theta_d = np.zeros(n_domains)
        n_d = np.zeros(n_domains, np.int64)
        theta = 0.0
        n = 0
        for e in range(a, b):
            y = outcome[e]
            if np.isnan(y):
                continue
            it = item[e]
            bdiff = difficulty[it] if it >= 0 else default_difficulty
            d = domain[e]
            z = theta + theta_d[d] - bdiff
            p_pred[e] = z  # prior logit; _next_attempt_pass turns it into a probability
            if not use[e]:
                continue
            p = g_floor + (1.0 - g_floor) / (1.0 + np.exp(-z))
            k = alpha / (1.0 + beta * n)
            if k < k_min:
                k = k_min
            kd = alpha / (1.0 + beta * n_d[d])
            if kd < k_min:
                kd = k_min
            theta += k * (y - p)
            theta_d[d] += domain_weight * kd * (y - p)
            n += 1
            n_d[d] += 1


@nb.njit(cache=True, nogil=True, parallel=True)
def _next_attempt_pass(  # pragma: no cover - jit
    starts: np.ndarray,
    order: np.ndarray,
    item: np.ndarray,
    ts: np.ndarray,
    outcome: np.ndarray,
    pred: np.ndarray,
    g_floor: float,
    current: bool,
    step_correct: float,
    step_wrong: float,
    time_shift_s: float,
) -> None:
    """Prior logits in ``pred`` -> next-attempt probabilities, in place.

    ``order`` visits each learner's rows item by item, in time order. Without ``current``
    every graded row gets ``g + (1 - g) sigmoid(prior)``. With it, an item's first graded attempt sets the
    current knowledge m to its prior logit; each later graded attempt is predicted from
    ``m + time_shift_s / (seconds since the previous graded attempt)``, and after every attempt
    ``m += step (y - P)`` with ``step_correct`` or ``step_wrong`` (Pelánek et al. 2017).
    """
    n_l = starts.shape[0] - 1
    for li in nb.prange(n_l):
        run_item = -1
        has = False
        m = 0.0
        last_t = 0
        for j in range(starts[li], starts[li + 1]):
            r = order[j]
            if item[r] != run_item:
                run_item = item[r]
                has = False
            y = outcome[r]
            if np.isnan(y):
                continue
            z = pred[r]
            if current:
                if has:
                    secs = (ts[r] - last_t) / 1e6
                    if secs < 1e-3:
                        secs = 1e-3
                    z = m + time_shift_s / secs
                else:
                    m = z
                    has = True
            p = g_floor + (1.0 - g_floor) / (1.0 + np.exp(-z))
            pred[r] = p
            if current:
                m += (step_correct if y > 0.5 else step_wrong) * (y - p)
                last_t = ts[r]


@dataclass(frozen=True)
class EngagementResult:
    """Per-learner activity columns (learner order of the ``Prepared`` input)."""

    active_weeks: np.ndarray
    events_per_week: np.ndarray
    minutes_per_week: np.ndarray  # NaN for learners without any duration


def _as_of_week(as_of_us: int | None) -> int:
    return -1 if as_of_us is None else int((as_of_us - MONDAY0_US) // WEEK_US)


def compute_engagement(
    prep: Prepared,
    half_life_weeks: float,
    *,
    as_of_us: int | None = None,
    duration_cap_s: float = 1800.0,
) -> EngagementResult:
    """Engagement velocity: EMA over weeks of weekly events and active minutes (durations
    capped at ``duration_cap_s``), silent weeks counting as zero up to ``as_of_us``."""
    weeks, events, minutes = _engagement_kernel(
        prep.starts,
        prep.ts_us,
        prep.duration_s,
        ema_rate(half_life_weeks),
        _as_of_week(as_of_us),
        duration_cap_s,
    )
    return EngagementResult(weeks, events, minutes)


def predict_next_attempts(prep: Prepared, items: ItemStats, params: VelocityParams) -> np.ndarray:
    """Next-attempt success probability of every graded event before its update (validation).

    Online Elo (learner + domain offset, item difficulty fixed) for the prior knowledge of a
    first attempt; the current knowledge of the item for repeats (unless
    ``params.current_knowledge`` is off). NaN for ungraded events. Not a feature: the ability
    and velocity columns come from the trend model (:func:`compute_velocity`).
    """
    p_pred = np.full(len(prep.ts_us), np.nan)
    item_code, diff_local = _local_difficulty(prep, items)
    _elo_kernel(
        prep.starts,
        item_code,
        prep.domain,
        prep.outcome,
        diff_local,
        items.default_difficulty,
        max(len(items.domains), 1),
        params.elo_alpha,
        params.elo_beta,
        params.elo_k_min,
        params.domain_weight,
        prep.first_attempt if params.first_attempts_only else np.ones(len(prep.ts_us), np.bool_),
        params.elo_guess_floor,
        p_pred,
    )
    _next_attempt_pass(
        prep.starts,
        prep.item_order,
        prep.item_local,
        prep.ts_us,
        prep.outcome,
        p_pred,
        params.elo_guess_floor,
        params.current_knowledge,
        params.current_step_correct,
        params.current_step_wrong,
        params.current_time_shift_s,
    )
    return p_pred


def _local_difficulty(prep: Prepared, items: ItemStats) -> tuple[np.ndarray, np.ndarray]:
    """Item code per row (-1 for items unknown to the stats) and difficulty per local code."""
    l2g = prep.local_to_global
    diff = np.asarray(items.difficulty, dtype=np.float64)
    diff_local = np.where(l2g >= 0, diff[np.maximum(l2g, 0)] if len(diff) else 0.0, np.nan)
    item_code = prep.item_local
    if np.isnan(diff_local).any():  # unknown items take the default difficulty
        item_code = np.where(np.isnan(diff_local)[item_code], -1, item_code).astype(np.int32)
    return item_code, np.ascontiguousarray(diff_local)


# ------------------------------------------------------------------------- the ability trend


@dataclass(frozen=True)
class TrendObs:
    """The graded first attempts the ability trend is fitted on, learner-major.

    ``starts[k]:starts[k+1]`` are learner k's attempts in time order; ``t_weeks`` counts weeks
    since the learner's first one; ``difficulty`` is the item's ``ItemStats.difficulty``.
    Per learner: ``t_last_weeks`` (span of the attempts) and ``graded_weeks`` (ISO weeks with
    one).
    """

    starts: np.ndarray
    t_weeks: np.ndarray
    difficulty: np.ndarray
    outcome: np.ndarray
    t_last_weeks: np.ndarray
    graded_weeks: np.ndarray

    @property
    def n_learners(self) -> int:
        """Number of learners (with or without attempts)."""
        return len(self.starts) - 1

    @property
    def counts(self) -> np.ndarray:
        """Attempts per learner."""
        return np.diff(self.starts)

    def take(self, learners: np.ndarray) -> TrendObs:
        """The attempts of ``learners`` (indices, in the given order)."""
        counts = self.counts[learners]
        starts = np.zeros(len(learners) + 1, np.int64)
        np.cumsum(counts, out=starts[1:])
        idx = np.repeat(self.starts[:-1][learners] - starts[:-1], counts) + np.arange(starts[-1])
        return TrendObs(
            starts,
            self.t_weeks[idx],
            self.difficulty[idx],
            self.outcome[idx],
            self.t_last_weeks[learners],
            self.graded_weeks[learners],
        )


@nb.njit(cache=True, nogil=True, parallel=True)
def _first_graded(  # pragma: no cover - jit
    starts: np.ndarray, order: np.ndarray, item: np.ndarray, y: np.ndarray, out: np.ndarray
) -> None:
    """Flag each learner's first graded attempt of every item (``order``: by item, then time)."""
    for li in nb.prange(starts.shape[0] - 1):
        run_item = -1
        done = False
        for j in range(starts[li], starts[li + 1]):
            r = order[j]
            if item[r] != run_item:
                run_item = item[r]
                done = False
            if not done and not np.isnan(y[r]):
                out[r] = True
                done = True


@nb.njit(cache=True, nogil=True, parallel=True)
def _trend_counts(  # pragma: no cover - jit
    starts: np.ndarray, ts: np.ndarray, use: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per learner: used attempts, ISO weeks with one, weeks from the first to the last."""
    n_l = starts.shape[0] - 1
    count = np.zeros(n_l, np.int64)
    weeks = np.zeros(n_l, np.int64)
    span = np.zeros(n_l)
    for li in nb.prange(n_l):
        first = -1
        last_w = -1
        n = 0
        nw = 0
        for e in range(starts[li], starts[li + 1]):
            if not use[e]:
                continue
            if first < 0:
                first = ts[e]
            w = (ts[e] - MONDAY0_US) // WEEK_US
            if w != last_w:
                nw += 1
                last_w = w
            n += 1
            span[li] = (ts[e] - first) / WEEK_US
        count[li] = n
        weeks[li] = nw
    return count, weeks, span


@nb.njit(cache=True, nogil=True, parallel=True)
def _trend_fill(  # pragma: no cover - jit
    starts: np.ndarray,
    obs_starts: np.ndarray,
    ts: np.ndarray,
    use: np.ndarray,
    item: np.ndarray,
    difficulty: np.ndarray,
    default_difficulty: float,
    y: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = obs_starts[-1]
    t_out = np.empty(m)
    b_out = np.empty(m)
    y_out = np.empty(m)
    for li in nb.prange(starts.shape[0] - 1):
        j = obs_starts[li]
        first = -1
        for e in range(starts[li], starts[li + 1]):
            if not use[e]:
                continue
            if first < 0:
                first = ts[e]
            t_out[j] = (ts[e] - first) / WEEK_US
            it = item[e]
            b_out[j] = difficulty[it] if it >= 0 else default_difficulty
            y_out[j] = y[e]
            j += 1
    return t_out, b_out, y_out


def trend_observations(prep: Prepared, items: ItemStats) -> TrendObs:
    """Each learner's graded first attempts (a repeat measures memory, not ability)."""
    use = np.zeros(len(prep.ts_us), np.bool_)
    _first_graded(prep.starts, prep.item_order, prep.item_local, prep.outcome, use)
    count, weeks, span = _trend_counts(prep.starts, prep.ts_us, use)
    obs_starts = np.zeros(prep.n_learners + 1, np.int64)
    np.cumsum(count, out=obs_starts[1:])
    item_code, diff_local = _local_difficulty(prep, items)
    t, b, y = _trend_fill(
        prep.starts,
        obs_starts,
        prep.ts_us,
        use,
        item_code,
        diff_local,
        items.default_difficulty,
        prep.outcome,
    )
    return TrendObs(obs_starts, t, b, y, span, weeks)


@nb.njit(cache=True, nogil=True, parallel=True)
def _trend_map_kernel(  # pragma: no cover - jit
    starts: np.ndarray,
    t: np.ndarray,
    b: np.ndarray,
    y: np.ndarray,
    g: float,
    kappa: float,
    mu_a: float,
    sd_a: float,
    mu_v: float,
    sd_v: float,
    a_start: np.ndarray,
    v_start: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-learner MAP of (a, v) by Fisher scoring; returns a, v and the posterior covariance
    (Laplace: inverse of the expected information plus the prior precision)."""
    n_l = starts.shape[0] - 1
    a_out = np.full(n_l, mu_a)
    v_out = np.full(n_l, mu_v)
    var_a = np.full(n_l, sd_a * sd_a)
    cov = np.zeros(n_l)
    var_v = np.full(n_l, sd_v * sd_v)
    pa_ = 1.0 / (sd_a * sd_a)
    pv_ = 1.0 / (sd_v * sd_v)
    for li in nb.prange(n_l):
        s = starts[li]
        e_ = starts[li + 1]
        if s == e_:
            continue
        a = a_start[li]
        v = v_start[li]
        h11 = pa_
        h12 = 0.0
        h22 = pv_
        for _ in range(100):
            g1 = -(a - mu_a) * pa_
            g2 = -(v - mu_v) * pv_
            h11 = pa_
            h12 = 0.0
            h22 = pv_
            for j in range(s, e_):
                tj = t[j]
                z = a + v * tj - kappa * b[j]
                sig = 1.0 / (1.0 + np.exp(-z))
                p = g + (1.0 - g) * sig
                if p < _P_EPS:
                    p = _P_EPS
                elif p > 1.0 - _P_EPS:
                    p = 1.0 - _P_EPS
                dp = (1.0 - g) * sig * (1.0 - sig)
                q = p * (1.0 - p)
                r = (y[j] - p) * dp / q
                w = dp * dp / q
                g1 += r
                g2 += r * tj
                h11 += w
                h12 += w * tj
                h22 += w * tj * tj
            det = h11 * h22 - h12 * h12
            da = (h22 * g1 - h12 * g2) / det
            dv = (h11 * g2 - h12 * g1) / det
            # damped steps: scoring from far away may overshoot on the floored curve
            scale = 1.0
            if abs(da) > 2.0:
                scale = 2.0 / abs(da)
            if abs(dv) * scale > 0.5:
                scale = 0.5 / abs(dv)
            a += scale * da
            v += scale * dv
            if abs(da) < 1e-7 and abs(dv) < 1e-8:  # the step just taken is then ~1e-14
                break
        det = h11 * h22 - h12 * h12
        a_out[li] = a
        v_out[li] = v
        var_a[li] = h22 / det
        cov[li] = -h12 / det
        var_v[li] = h11 / det
    return a_out, v_out, var_a, cov, var_v


@dataclass(frozen=True)
class TrendFit:
    """Per-learner MAP of the ability trend and its Laplace posterior covariance."""

    start_logit: np.ndarray
    velocity: np.ndarray
    var_start: np.ndarray
    cov: np.ndarray
    var_velocity: np.ndarray


def trend_map(obs: TrendObs, pop: VelocityPopulation, start: TrendFit | None = None) -> TrendFit:
    """MAP (a, v) of every learner in ``obs`` under the population prior (from the prior mean,
    or from ``start``, a previous fit the population fit passes between alternations)."""
    n = obs.n_learners
    a0 = np.full(n, pop.mu_start_logit) if start is None else start.start_logit
    v0 = np.full(n, pop.mu_velocity) if start is None else start.velocity
    out = _trend_map_kernel(
        obs.starts,
        obs.t_weeks,
        obs.difficulty,
        obs.outcome,
        pop.guess_floor,
        pop.kappa,
        pop.mu_start_logit,
        pop.sigma_start_logit,
        pop.mu_velocity,
        pop.sigma_velocity,
        np.ascontiguousarray(a0, np.float64),
        np.ascontiguousarray(v0, np.float64),
    )
    return TrendFit(*out)


#: Fixed number of partial sums in :func:`_kappa_sums` (same sums on any thread count).
_CHUNKS = 32


#: Gauss-Hermite nodes and weights (probabilists', normalized): E[f(Z)], Z ~ N(0, 1).
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(7)
_GH_WEIGHTS = _GH_WEIGHTS / _GH_WEIGHTS.sum()


@nb.njit(cache=True, nogil=True, parallel=True)
def _kappa_sums(  # pragma: no cover - jit
    starts: np.ndarray,
    t: np.ndarray,
    b: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    v: np.ndarray,
    var_a: np.ndarray,
    cov: np.ndarray,
    var_v: np.ndarray,
    g: float,
    kappa: float,
    nodes: np.ndarray,
    weights: np.ndarray,
) -> tuple[float, float]:
    """Expected score and information of the likelihood in kappa under each learner's Laplace
    posterior: ``a + v t`` ~ N(MAP, var_a + 2 t cov + t^2 var_v), by Gauss-Hermite quadrature
    (plugging in the MAP alone biases kappa toward 0, as penalized quasi-likelihood does)."""
    n_l = starts.shape[0] - 1
    part = np.zeros((_CHUNKS, 2))
    size = (n_l + _CHUNKS - 1) // _CHUNKS
    for c in nb.prange(_CHUNKS):
        score = 0.0
        info = 0.0
        for li in range(c * size, min(n_l, (c + 1) * size)):
            for j in range(starts[li], starts[li + 1]):
                tj = t[j]
                mean = a[li] + v[li] * tj - kappa * b[j]
                sd = np.sqrt(max(var_a[li] + 2.0 * tj * cov[li] + tj * tj * var_v[li], 0.0))
                for k in range(nodes.shape[0]):
                    z = mean + sd * nodes[k]
                    sig = 1.0 / (1.0 + np.exp(-z))
                    p = min(max(g + (1.0 - g) * sig, _P_EPS), 1.0 - _P_EPS)
                    dp = -(1.0 - g) * sig * (1.0 - sig) * b[j]  # dP / d kappa
                    q = p * (1.0 - p)
                    score += weights[k] * (y[j] - p) * dp / q
                    info += weights[k] * dp * dp / q
        part[c, 0] = score
        part[c, 1] = info
    score = 0.0
    info = 0.0
    for c in range(_CHUNKS):
        score += part[c, 0]
        info += part[c, 1]
    return score, info


def fit_velocity_population(obs: TrendObs, params: VelocityParams) -> VelocityPopulation:
    """Empirical-Bayes fit on the sample: alternate per-learner MAP, kappa, and the priors.

    ``obs`` holds the fit sample (learners with at least ``min_graded_events`` attempts).
    One alternation maps the population to the next: the MAPs of every learner under it
    (warm-started), then, from them, one Fisher-scoring step of kappa on the pooled likelihood
    averaged over each learner's Laplace posterior, and the EM step of the normal hierarchy
    under the Laplace approximation, ``mu = mean(a)``, ``sigma^2 = mean((a - mu)^2 + var_a)``
    (same for v). The alternations are accelerated by SQUAREM (Varadhan & Roland 2008,
    scheme S3, with a plain step when an extrapolation leaves the parameter space) and stop
    when no parameter moves by more than ``em_tolerance``.
    """
    pop = VelocityPopulation(guess_floor=params.guess_floor)
    has = obs.counts > 0
    n_learners = int(has.sum())
    if n_learners == 0:
        return pop
    pop = dataclasses.replace(pop, n_attempts=int(obs.counts.sum()), n_learners=n_learners)
    lo_k, hi_k = params.kappa_bounds
    state: dict[str, TrendFit | None] = {"fit": None}

    def step(x: np.ndarray) -> np.ndarray:
        """One alternation, on the vector (kappa, mu_a, ln sigma_a, mu_v, ln sigma_v)."""
        cur = _pop_from(pop, x)
        fit = trend_map(obs, cur, state["fit"])
        state["fit"] = fit
        score, info = _kappa_sums(
            obs.starts,
            obs.t_weeks,
            obs.difficulty,
            obs.outcome,
            fit.start_logit,
            fit.velocity,
            fit.var_start,
            fit.cov,
            fit.var_velocity,
            cur.guess_floor,
            cur.kappa,
            _GH_NODES,
            _GH_WEIGHTS,
        )
        kappa = min(max(cur.kappa + (score / info if info > 0 else 0.0), lo_k), hi_k)
        a, v = fit.start_logit[has], fit.velocity[has]
        mu_a, mu_v = float(a.mean()), float(v.mean())
        var_a = float(np.mean((a - mu_a) ** 2 + fit.var_start[has]))
        var_v = float(np.mean((v - mu_v) ** 2 + fit.var_velocity[has]))
        return np.array(
            [kappa, mu_a, 0.5 * np.log(max(var_a, 1e-6)), mu_v, 0.5 * np.log(max(var_v, 1e-8))]
        )

    def valid(x: np.ndarray) -> bool:
        return bool(np.isfinite(x).all() and lo_k <= x[0] <= hi_k and -8 < x[2] < 3)

    x = _pop_to(pop)
    for _ in range(params.em_iterations):
        x1 = step(x)
        if _moved(x1, x) <= params.em_tolerance:
            x = x1
            break
        x2 = step(x1)
        r, v = x1 - x, x2 - 2.0 * x1 + x
        alpha = -float(np.sqrt((r @ r) / (v @ v))) if (v @ v) > 0 else -1.0
        alpha = min(alpha, -1.0)
        x_new = x - 2.0 * alpha * r + alpha * alpha * v
        x_new = step(x_new) if valid(x_new) else x2
        if not valid(x_new):
            x_new = x2
        done = _moved(x_new, x2) <= params.em_tolerance
        x = x_new
        if done:
            break
    return _pop_from(pop, x)


def _pop_to(pop: VelocityPopulation) -> np.ndarray:
    return np.array(
        [
            pop.kappa,
            pop.mu_start_logit,
            np.log(pop.sigma_start_logit),
            pop.mu_velocity,
            np.log(pop.sigma_velocity),
        ]
    )


def _pop_from(pop: VelocityPopulation, x: np.ndarray) -> VelocityPopulation:
    return dataclasses.replace(
        pop,
        kappa=float(x[0]),
        mu_start_logit=float(x[1]),
        sigma_start_logit=float(np.exp(x[2])),
        mu_velocity=float(x[3]),
        sigma_velocity=float(np.exp(x[4])),
    )


def _moved(x: np.ndarray, y: np.ndarray) -> float:
    """Largest change of kappa, the start prior (logits) and ten times the velocity prior
    (logits per week, small numbers), on their natural scales."""
    px, py = (
        np.array([x[0], x[1], np.exp(x[2]), 10 * x[3], 10 * np.exp(x[4])]),
        np.array([y[0], y[1], np.exp(y[2]), 10 * y[3], 10 * np.exp(y[4])]),
    )
    return float(np.abs(px - py).max())


@dataclass(frozen=True)
class VelocityResult:
    """Per-learner ability-trend columns (learner order of the ``Prepared`` input)."""

    ability_logit: np.ndarray
    velocity_logit_per_week: np.ndarray
    velocity_lo_logit_per_week: np.ndarray
    velocity_hi_logit_per_week: np.ndarray
    graded_events: np.ndarray
    graded_weeks: np.ndarray
    status: np.ndarray


def velocity_from_obs(
    obs: TrendObs, pop: VelocityPopulation, params: VelocityParams
) -> VelocityResult:
    """The velocity columns of every learner in ``obs`` under the population model."""
    fit = trend_map(obs, pop)
    n = obs.counts
    sd_v = np.sqrt(fit.var_velocity)
    status = np.where(
        n == 0,
        1,
        np.where(
            n < max(params.min_graded_events, 1),
            2,
            np.where(
                obs.graded_weeks < params.min_active_weeks,
                3,
                np.where(sd_v > params.max_posterior_sd_share * pop.sigma_velocity, 4, 0),
            ),
        ),
    ).astype(np.int64)
    ok = status == 0
    z = NormalDist().inv_cdf(0.5 + params.credible_mass / 2.0)
    nan = np.full(obs.n_learners, np.nan)
    ability = np.where(n > 0, fit.start_logit + fit.velocity * obs.t_last_weeks, nan)
    return VelocityResult(
        ability_logit=ability,
        velocity_logit_per_week=np.where(ok, fit.velocity, nan),
        velocity_lo_logit_per_week=np.where(ok, fit.velocity - z * sd_v, nan),
        velocity_hi_logit_per_week=np.where(ok, fit.velocity + z * sd_v, nan),
        graded_events=n.astype(np.int64),
        graded_weeks=obs.graded_weeks.astype(np.int64),
        status=status,
    )


def compute_velocity(
    prep: Prepared,
    items: ItemStats,
    params: VelocityParams,
    pop: VelocityPopulation | None = None,
) -> VelocityResult:
    """Ability trend of every learner in ``prep``; ``pop`` defaults to a population fit on
    the learners of ``prep`` themselves (all of them: no hash sample, no cap)."""
    obs = trend_observations(prep, items)
    if pop is None:
        keep = np.flatnonzero(obs.counts >= max(params.min_graded_events, 1))
        pop = fit_velocity_population(obs.take(keep), params)
    return velocity_from_obs(obs, pop, params)
