"""The event engine: a loop over weeks, everything inside a week vectorized over events.

Each week (1) draws Poisson counts of new events per (learner, domain, kind), (2) places
them in study sessions, (3) releases revisits scheduled earlier that fall due this week and
chains further revisits, (4) grades every attempt from the learner's latent traits. A week's
events all lie inside that week, so sorting each week and concatenating sorts the log.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cohortlens.simulate._traits import F64, I64, US, Traits, sigmoid, type_table
from cohortlens.simulate.params import DAY_S, WEEK_S, SimulationParams

#: Event kinds (the ``kind`` column of the optional per-event truth).
KIND_VIEW, KIND_FIRST, KIND_REVISIT = 0, 1, 2
KIND_NAMES: tuple[str, ...] = ("view", "first_attempt", "revisit")


@dataclass(frozen=True)
class WeekEvents:
    """One week's events, sorted by time (parallel arrays; ``code`` indexes the item names).

    ``outcome`` is NaN for page views; ``p_correct`` is the true success probability (NaN
    for views) and ``gap_days`` the time since the previous attempt on the item (NaN unless
    a revisit): both are ground truth, not part of the event log.
    """

    learner: I64
    code: I64
    ts_us: I64
    outcome: F64
    duration_s: F64
    kind: npt.NDArray[np.int8]
    p_correct: F64
    gap_days: F64

    @property
    def size(self) -> int:
        """Number of events."""
        return int(self.ts_us.shape[0])


@dataclass(frozen=True)
class _Attempts:
    """A batch of events (or scheduled revisits) as parallel arrays.

    ``prev_us`` is the previous attempt on the same item (-1 for new events).
    """

    learner: I64
    code: I64
    ts_us: I64
    prev_us: I64
    duration_s: F64

    def take(self, mask: npt.NDArray[np.bool_]) -> _Attempts:
        """The events where ``mask`` holds."""
        return _Attempts(
            self.learner[mask],
            self.code[mask],
            self.ts_us[mask],
            self.prev_us[mask],
            self.duration_s[mask],
        )


def generate_weeks(
    params: SimulationParams,
    traits: Traits,
    difficulty: F64,
    rng: np.random.Generator,
) -> Iterator[WeekEvents]:
    """Yield each week's events in time order (the concatenation is sorted by ``ts``)."""
    counter = np.zeros((traits.n, params.n_domains), dtype=np.int64)
    # Revisits scheduled for later weeks, bucketed by the week they fall due in.
    buckets: list[list[_Attempts]] = [[] for _ in range(params.n_weeks)]
    for week in range(params.n_weeks):
        w1 = (week + 1) * WEEK_S * US
        new = _new_events(params, traits, week, counter, rng)
        released = _concat([_empty(), *buckets[week]])
        buckets[week] = []
        firsts = new.take(new.code < params.n_domains * params.n_items_per_domain)
        revisits, later = _chain_revisits(params, traits, firsts, released, w1, rng)
        due_week = later.ts_us // (WEEK_S * US)
        for target in np.unique(due_week):
            buckets[int(target)].append(later.take(due_week == target))
        yield _grade_week(params, traits, difficulty, _concat([new, revisits]), rng)


def _new_events(
    params: SimulationParams,
    traits: Traits,
    week: int,
    counter: I64,
    rng: np.random.Generator,
) -> _Attempts:
    """Draw the week's new events (views and first attempts) and place them in sessions.

    Counts are Poisson per (learner, domain, kind) with rate activity * week multiplier *
    pref_d * kind share; by Poisson splitting the weekly total is Poisson(activity * mult)
    and each event's domain is a draw from the preferences. ``counter`` (first attempts
    made so far per learner and domain) is updated in place.
    """
    k, n_items = params.n_domains, params.n_items_per_domain
    active = np.flatnonzero((traits.dropout_week < 0) | (traits.dropout_week >= week))
    ti = traits.type_idx[active]
    burst_p = type_table(params, "burst_week_prob")
    burst_m = type_table(params, "burst_multiplier")
    quiet_m = (1.0 - burst_p * burst_m) / (1.0 - burst_p)
    is_burst = rng.random(active.shape[0]) < burst_p[ti]
    mult = np.where(is_burst, burst_m[ti], quiet_m[ti])
    mult = mult * type_table(params, "activity_trend_per_week")[ti] ** week
    rate = traits.activity_level[active] * mult
    kind_share = np.array([params.view_share, 1.0 - params.view_share])
    lam = rate[:, None, None] * traits.pref[active][:, :, None] * kind_share[None, None, :]
    counts = rng.poisson(lam)
    flat = counts.reshape(-1)
    m = int(flat.sum())
    cell = np.repeat(np.arange(flat.shape[0], dtype=np.int64), flat)
    i_loc = cell // (2 * k)
    is_first = (cell % 2) == 1
    median = np.where(is_first, params.graded_duration_median_s, params.view_duration_median_s)
    duration = median * np.exp(params.duration_log_sd * rng.standard_normal(m))
    per_learner = counts.sum(axis=(1, 2))
    ts_us = _place_in_sessions(params, traits, active, per_learner, i_loc, duration, rng)
    ts_us += week * WEEK_S * US
    learner = active[i_loc]
    alive = ts_us < traits.dropout_at_us[learner]
    if not bool(alive.all()):
        cell, learner, is_first = cell[alive], learner[alive], is_first[alive]
        ts_us, duration = ts_us[alive], duration[alive]
    # Rank of each first attempt among the learner's first attempts in the domain: the
    # ranks made so far plus the position inside its (still contiguous) cell.
    domain = (cell // 2) % k
    n_alive = cell.shape[0]
    new_run = np.ones(n_alive, dtype=np.bool_)
    new_run[1:] = cell[1:] != cell[:-1]
    pos = np.arange(n_alive, dtype=np.int64) - np.flatnonzero(new_run)[np.cumsum(new_run) - 1]
    cell_ld = learner * k + domain
    rank = counter.reshape(-1)[cell_ld] + pos
    made = np.bincount(cell_ld[is_first], minlength=counter.size)
    counter += made.reshape(counter.shape)
    item = (traits.perm_step[learner] * rank + traits.perm_offset.reshape(-1)[cell_ld]) % n_items
    code = domain * n_items + item
    views = np.flatnonzero(~is_first)
    page = rng.integers(0, params.n_pages_per_domain, size=views.shape[0], dtype=np.int64)
    code[views] = k * n_items + domain[views] * params.n_pages_per_domain + page
    no_prev = np.full(n_alive, -1, dtype=np.int64)
    return _Attempts(learner, code, ts_us, no_prev, duration)


def _place_in_sessions(
    params: SimulationParams,
    traits: Traits,
    active: I64,
    per_learner: I64,
    i_loc: I64,
    duration_s: F64,
    rng: np.random.Generator,
) -> I64:
    """Time (us since the week's start) of each new event, grouped into study sessions.

    A learner with N events this week has S = 1 + Binomial(N - 1, 1 / events_per_session)
    sessions; each event joins one uniformly. A session starts on a uniform day at the
    learner's usual hour (+- normal noise) and its events follow one another, each after
    the previous one's duration plus a think pause (lognormal, median think_time_median_s).
    """
    m = i_loc.shape[0]
    ti = traits.type_idx[active]
    eps = type_table(params, "events_per_session")[ti]
    sessions = np.zeros(active.shape[0], dtype=np.int64)
    has = per_learner > 0
    sessions[has] = 1 + rng.binomial(per_learner[has] - 1, np.minimum(1.0, 1.0 / eps[has]))
    base = np.cumsum(sessions) - sessions
    local = np.floor(rng.random(m) * sessions[i_loc]).astype(np.int64)
    gsid = base[i_loc] + local
    n_sess = int(sessions.sum())
    # Order of events inside a session: a random key, so sessions mix domains and kinds.
    key = (gsid << 32) | rng.integers(0, 1 << 32, size=m, dtype=np.int64)
    order = stable_order(key)
    think = params.think_time_median_s * np.exp(0.8 * rng.standard_normal(m))
    step = (duration_s + think)[order]
    sorted_sid = gsid[order]
    csum = np.cumsum(step) - step
    size = np.bincount(sorted_sid, minlength=n_sess)
    first = np.cumsum(size) - size
    offset_sorted = csum - csum[first[sorted_sid]]
    length = np.bincount(sorted_sid, weights=step, minlength=n_sess)
    sess_learner = np.repeat(active, sessions)
    day = rng.integers(0, 7, size=n_sess)
    hour = traits.study_hour[sess_learner] + params.study_hour_sd_hours * rng.standard_normal(
        n_sess
    )
    s0 = day * DAY_S + np.mod(hour * 3600.0, DAY_S)
    s0 = np.clip(s0, 0.0, np.maximum(0.0, WEEK_S - length - 1.0))
    offset = np.empty(m, dtype=np.float64)
    offset[order] = offset_sorted
    ts_us = np.rint((s0[gsid] + offset) * US).astype(np.int64)
    return np.minimum(ts_us, WEEK_S * US - 1)


def _chain_revisits(
    params: SimulationParams,
    traits: Traits,
    firsts: _Attempts,
    released: _Attempts,
    w1: int,
    rng: np.random.Generator,
) -> tuple[_Attempts, _Attempts]:
    """This week's revisits (released + newly chained) and those scheduled after ``w1``.

    Every graded attempt is followed by a revisit of the same item with probability
    ``revisit_prob``: within the session (gap uniform in the same-session range) with
    probability ``same_session_share``, else D days later at about the same time of day
    (D = floor(exp(U ln(max_gap_days + 1))), a discrete log-uniform on 1..max_gap_days,
    plus a uniform 0-2 h). Revisits falling after the learner's dropout or the window's
    end are never made. Chains are linear, so a revisit's gap is to the item's previous
    attempt.
    """
    q = type_table(params, "revisit_prob")
    same = type_table(params, "same_session_share")
    done: list[_Attempts] = [released]
    later: list[_Attempts] = [_empty()]
    frontier = _concat([firsts, released])
    log_span = np.log(params.max_gap_days + 1.0)
    while frontier.learner.shape[0] > 0:
        spawn = rng.random(frontier.learner.shape[0]) < q[traits.type_idx[frontier.learner]]
        parent = frontier.take(spawn)
        n = parent.learner.shape[0]
        in_session = rng.random(n) < same[traits.type_idx[parent.learner]]
        days = np.floor(np.exp(rng.random(n) * log_span))
        days = np.clip(days, 1.0, float(params.max_gap_days))
        day_gap_s = days * DAY_S + rng.uniform(0.0, 7200.0, size=n)
        session_gap_s = rng.uniform(params.same_session_gap_min_s, params.same_session_gap_max_s, n)
        gap_us = np.rint(np.where(in_session, session_gap_s, day_gap_s) * US).astype(np.int64)
        duration = params.graded_duration_median_s * np.exp(
            params.duration_log_sd * rng.standard_normal(n)
        )
        child = _Attempts(
            parent.learner, parent.code, parent.ts_us + gap_us, parent.ts_us, duration
        )
        alive = child.ts_us < traits.dropout_at_us[child.learner]
        this_week = alive & (child.ts_us < w1)
        later.append(child.take(alive & ~this_week))
        frontier = child.take(this_week)
        done.append(frontier)
    return _concat(done), _concat(later)


def _grade_week(
    params: SimulationParams,
    traits: Traits,
    difficulty: F64,
    events: _Attempts,
    rng: np.random.Generator,
) -> WeekEvents:
    """Grade every attempt and sort the week's events by time.

    First attempt: p = g + (1 - g) * sigmoid(ability0 + growth * t_weeks - b_item).
    Revisit: p = g + (1 - g) * 2^(-gap_days / h). Views are ungraded (outcome null).
    """
    n_questions = params.n_domains * params.n_items_per_domain
    learner, code, ts_us, prev_us = events.learner, events.code, events.ts_us, events.prev_us
    kind = np.where(
        prev_us >= 0, KIND_REVISIT, np.where(code < n_questions, KIND_FIRST, KIND_VIEW)
    ).astype(np.int8)
    g = traits.guess_floor[learner]
    t_weeks = ts_us / float(WEEK_S * US)
    ability = traits.ability0[learner] + traits.growth_rate[learner] * t_weeks
    b = difficulty.reshape(-1)[np.minimum(code, n_questions - 1)]
    gap_days = np.where(kind == KIND_REVISIT, (ts_us - prev_us) / float(DAY_S * US), np.nan)
    recall = np.exp2(-np.nan_to_num(gap_days) / traits.half_life_days[learner])
    p = g + (1.0 - g) * np.where(kind == KIND_REVISIT, recall, sigmoid(ability - b))
    p = np.where(kind == KIND_VIEW, np.nan, p)
    u = rng.random(learner.shape[0])
    outcome = np.where(kind == KIND_VIEW, np.nan, (u < p).astype(np.float64))
    order = stable_order(ts_us - ts_us.min(initial=0) if ts_us.size else ts_us)
    return WeekEvents(
        learner=learner[order],
        code=code[order],
        ts_us=ts_us[order],
        outcome=outcome[order],
        duration_s=events.duration_s[order],
        kind=kind[order],
        p_correct=p[order],
        gap_days=gap_days[order],
    )


def stable_order(key: I64) -> I64:
    """``np.argsort(key, kind="stable")`` for non-negative int64 keys, by a faster sort.

    When key and position fit in 63 bits together, one unstable (SIMD) sort of the packed
    ``key << bits | position`` gives the stable order; otherwise an unstable argsort is used
    unless it meets equal keys, whose order only the stable sort guarantees.
    """
    m = key.shape[0]
    bits = max(1, int(m).bit_length())
    top = int(key.max(initial=0))
    if m and top.bit_length() + bits <= 63:
        packed = np.sort((key << bits) | np.arange(m, dtype=np.int64))
        return packed & ((1 << bits) - 1)
    order = np.argsort(key)
    ordered = key[order]
    if bool((ordered[1:] == ordered[:-1]).any()):
        return np.argsort(key, kind="stable")
    return order


def _empty() -> _Attempts:
    """A batch with no events."""
    none = np.zeros(0, dtype=np.int64)
    return _Attempts(none, none, none, none, np.zeros(0, dtype=np.float64))


def _concat(parts: list[_Attempts]) -> _Attempts:
    """Concatenate attempt batches."""
    return _Attempts(
        np.concatenate([a.learner for a in parts]),
        np.concatenate([a.code for a in parts]),
        np.concatenate([a.ts_us for a in parts]),
        np.concatenate([a.prev_us for a in parts]),
        np.concatenate([a.duration_s for a in parts]),
    )
