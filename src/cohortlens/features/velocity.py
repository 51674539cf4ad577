"""Learning velocity: Elo/IRT online ability per learner, then an EMA of weekly ability gains.

Item difficulties are global (``ItemStats.difficulty``) and fixed during the learner pass, so a
learner's trajectory depends only on their own events and the broadcast item statistics.
Update (Pelánek 2016): ``P = sigmoid(theta + theta_d - b_i)``,
``theta += K(n) (y - P)`` with ``K(n) = max(alpha / (1 + beta n), k_min)``; the per-domain offset
``theta_d`` gets ``domain_weight * K(n_d) (y - P)``.

Next-attempt predictions (validation only, ``predictions=True``) follow the prior/current
knowledge model of Pelánek et al. (2017): a first attempt is predicted from the prior knowledge
``theta + theta_d - b_i``; a repeat from the learner's current knowledge of that item, which
starts at the prior logit and moves by ``gamma (y - P)`` after a correct and ``delta (y - P)``
after a wrong answer, plus a short-term term ``time_shift / seconds since the previous attempt``.
The current knowledge never feeds back into ``theta``, so the features do not depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from cohortlens.features._prep import MONDAY0_US, WEEK_US, Prepared
from cohortlens.features.params import VelocityParams
from cohortlens.features.stats import ItemStats

#: ``velocity_status`` codes -> labels.
VELOCITY_STATUS = ("ok", "no_graded_events", "too_few_graded_events", "too_few_active_weeks")


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
def _velocity_kernel(  # pragma: no cover - jit
    starts: np.ndarray,
    ts: np.ndarray,
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
    lam: float,
    min_graded: int,
    min_weeks: int,
    as_of_week: int,
    use: np.ndarray,
    g_floor: float,
    burn_in: int,
    kalman: bool,
    prior_var: float,
    drift_var: float,
    p_pred: np.ndarray,
) -> tuple[np.ndarray, ...]:
    n_l = starts.shape[0] - 1
    theta_out = np.full(n_l, np.nan)
    vel_out = np.full(n_l, np.nan)
    n_graded_out = np.zeros(n_l, np.int64)
    graded_weeks_out = np.zeros(n_l, np.int64)
    status_out = np.zeros(n_l, np.int64)
    keep = 1.0 - lam
    with_pred = p_pred.shape[0] > 0
    for li in nb.prange(n_l):
        a = starts[li]
        b = starts[li + 1]
        if a == b:
            continue
        theta_d = np.zeros(n_domains)
        n_d = np.zeros(n_domains, np.int64)
        theta = 0.0
        n = 0
        var = prior_var
        last_t = -1
        # graded-week state (ability gains)
        cur_gw = -1
        first_gw = -1
        last_uw = -1
        base_theta = 0.0
        s_gain = 0.0
        n_gain = 0
        n_gweeks = 0
        for e in range(a, b):
            y = outcome[e]
            if np.isnan(y):
                continue
            w = (ts[e] - MONDAY0_US) // WEEK_US
            it = item[e]
            bdiff = difficulty[it] if it >= 0 else default_difficulty
            d = domain[e]
            z = theta + theta_d[d] - bdiff
            p = g_floor + (1.0 - g_floor) / (1.0 + np.exp(-z))
            if with_pred:
                p_pred[e] = z  # prior logit; _next_attempt_pass turns it into a probability
            if not use[e]:
                continue
            if w != last_uw:
                n_gweeks += 1
                last_uw = w
            if cur_gw >= 0 and w != cur_gw:
                # close week cur_gw; the burn-in week is the baseline (no gain)
                if cur_gw > first_gw:
                    s_gain = keep * s_gain + lam * (theta - base_theta)
                    n_gain += 1
                base_theta = theta
                gap = w - cur_gw - 1
                if gap > 0:
                    s_gain *= keep**gap
                    n_gain += gap
                cur_gw = w
            if kalman:
                # Glicko/Kalman step: the variance grows with elapsed time, shrinks with evidence
                if last_t >= 0:
                    var += drift_var * (ts[e] - last_t) / WEEK_US
                last_t = ts[e]
                s = (p - g_floor) / (1.0 - g_floor)
                dp = (1.0 - g_floor) * s * (1.0 - s)
                q = p * (1.0 - p)
                var = 1.0 / (1.0 / var + dp * dp / q)
                k = var * dp / q
            else:
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
            if cur_gw < 0 and n >= burn_in:
                cur_gw = w
                first_gw = w
        n_graded_out[li] = n
        graded_weeks_out[li] = n_gweeks
        if n == 0:
            status_out[li] = 1
            continue
        theta_out[li] = theta
        if cur_gw < 0:
            status_out[li] = 2
            continue
        if cur_gw > first_gw:
            s_gain = keep * s_gain + lam * (theta - base_theta)
            n_gain += 1
        if as_of_week > cur_gw:
            s_gain *= keep ** (as_of_week - cur_gw)
            n_gain += as_of_week - cur_gw
        if n < min_graded:
            status_out[li] = 2
        elif n_gweeks < min_weeks or n_gain == 0:
            status_out[li] = 3
        else:
            vel_out[li] = s_gain / (1.0 - keep**n_gain)
    return theta_out, vel_out, n_graded_out, graded_weeks_out, status_out


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


@dataclass(frozen=True)
class VelocityResult:
    """Per-learner velocity columns (learner order of the ``Prepared`` input)."""

    ability_logit: np.ndarray
    velocity_logit_per_week: np.ndarray
    graded_events: np.ndarray
    graded_weeks: np.ndarray
    active_weeks: np.ndarray
    engagement_events_per_week: np.ndarray
    engagement_minutes_per_week: np.ndarray
    status: np.ndarray
    p_pred: np.ndarray


def compute_velocity(
    prep: Prepared,
    items: ItemStats,
    params: VelocityParams,
    *,
    as_of_us: int | None = None,
    duration_cap_s: float = 1800.0,
    predictions: bool = True,
) -> VelocityResult:
    """Ability trajectory, weekly-gain EMA and engagement EMA of every learner in ``prep``.

    ``p_pred`` holds each graded event's predicted success probability before its update
    (NaN for ungraded events): the next-attempt prediction used for validation (prior knowledge
    for first attempts, current knowledge for repeats unless ``params.current_knowledge`` is
    off). With ``predictions=False`` it is an empty array (saves 8 bytes per event) and the
    other outputs are the same.
    """
    as_of_week = _as_of_week(as_of_us)
    p_pred = np.full(len(prep.ts_us) if predictions else 0, np.nan)
    # difficulty per local item code (the kernel reads item_local; -1 = unknown item)
    l2g = prep.local_to_global
    diff = np.asarray(items.difficulty, dtype=np.float64)
    diff_local = np.where(l2g >= 0, diff[np.maximum(l2g, 0)] if len(diff) else 0.0, np.nan)
    item_code = prep.item_local
    if np.isnan(diff_local).any():  # unknown items take the default difficulty
        item_code = np.where(np.isnan(diff_local)[item_code], -1, item_code).astype(np.int32)
    out = _velocity_kernel(
        prep.starts,
        prep.ts_us,
        item_code,
        prep.domain,
        prep.outcome,
        np.ascontiguousarray(diff_local),
        items.default_difficulty,
        max(len(items.domains), 1),
        params.elo_alpha,
        params.elo_beta,
        params.elo_k_min,
        params.domain_weight,
        ema_rate(params.half_life_weeks),
        params.min_graded_events,
        params.min_active_weeks,
        as_of_week,
        prep.first_attempt if params.first_attempts_only else np.ones(len(prep.ts_us), np.bool_),
        params.guess_floor,
        max(params.burn_in_events, 1),
        params.ability_step == "kalman",
        params.prior_var_logit2,
        params.drift_var_logit2_per_week,
        p_pred,
    )
    theta, vel, n_graded, graded_weeks, status = out
    eng = compute_engagement(
        prep, params.half_life_weeks, as_of_us=as_of_us, duration_cap_s=duration_cap_s
    )
    if predictions:
        _next_attempt_pass(
            prep.starts,
            prep.item_order,
            prep.item_local,
            prep.ts_us,
            prep.outcome,
            p_pred,
            params.guess_floor,
            params.current_knowledge,
            params.current_step_correct,
            params.current_step_wrong,
            params.current_time_shift_s,
        )
    return VelocityResult(
        theta,
        vel,
        n_graded,
        graded_weeks,
        eng.active_weeks,
        eng.events_per_week,
        eng.minutes_per_week,
        status,
        p_pred,
    )
