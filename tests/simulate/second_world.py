"""A second learner world, written apart from ``cohortlens.simulate``, with its own ground truth.

The feature engines were designed on ``cohortlens.simulate``. This world differs from it in
form, so an engine that only fits the first one's assumptions shows it here:

* **items are 2PL with a floor per item**: ``P = c_i + (1 - c_i) sigmoid(a_i (theta - b_i))``,
  discrimination ``a_i`` log-normal (median 1), floors by answer format (4 options 0.25,
  5 options 0.2, open answers 0), domains of unequal size and mean difficulty;
* **ability grows logistically and plateaus** (``growth="logistic"``):
  ``theta(tau) = theta0 + A (sigmoid(r (tau - m)) - sigmoid(-r m))``, tau = weeks since the
  learner enrolled; ``growth="linear"`` gives ``theta0 + v tau`` instead (for calibration);
* **practice is uneven, with gaps of weeks**: learners enrol over 20 weeks (not all at once),
  practise in on-spells and pause in off-spells of whole weeks (a two-state weekly Markov
  chain), sessions per on-week are Poisson with a Gamma(2)-distributed weekly multiplier,
  and each learner stops after a Weibull lifetime;
* **forgetting is a power law whose stability grows with successful recalls**: a review of
  an item the learner has answered correctly before succeeds with
  ``c_i + (1 - c_i) R``, ``R = (1 + (2^(1/d) - 1) gap / h_eff)^(-d)`` (R = 1/2 at
  gap = h_eff), ``h_eff = h * n_correct^s``; an item never answered correctly is solved
  afresh with the ability model;
* **domain interests are logistic-normal** (softmax of normal scores, one favourite domain
  boosted), not Dirichlet.

Truth per learner: ``trend_logits_per_week`` is the least-squares slope of the learner's
true ability against time (in weeks) over the times of the learner's graded first attempts
(the estimand of a linear ability trend; equal to ``v`` under linear growth);
``half_life_days`` is ``h`` (the half-life after one correct answer); ``pref_entropy`` is
H / ln K of the interest shares. Everything is vectorized with numpy; Python loops run only
over weeks (40), types (4) and review-chain positions (3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from cohortlens.events.schema import EVENT_SCHEMA

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
US = 1_000_000

#: Primes above 5: coprime to every domain size below (whose prime factors are 2, 3 and 5),
#: so ``(offset + k * stride) mod size`` visits every item of a domain before repeating one.
_STRIDES = np.array([7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79])

DOMAINS = (
    "arithmetic",
    "fractions",
    "listening",
    "reading",
    "spelling",
    "mechanics",
    "optics",
    "genetics",
)


@dataclass(frozen=True)
class WorldType:
    """One latent learner type of the second world (units in the names)."""

    name: str
    share: float
    theta0_mean: float
    theta0_sd: float
    linear_rate_mean_per_week: float
    linear_rate_sd_per_week: float
    gain_capacity_mean_logits: float
    gain_capacity_sd_logits: float
    gain_rate_median_per_week: float
    gain_midpoint_weeks: tuple[float, float]
    favourite_boost: float
    interest_sd: float
    half_life_median_days: float
    half_life_log_sd: float
    sessions_per_week_median: float
    sessions_log_sd: float
    events_per_session: float
    on_spell_weeks: float
    off_spell_weeks: float
    review_prob_mean: float
    lifetime_scale_weeks: float
    lifetime_shape: float


CLIMBER = WorldType(
    "climber", 0.3, -1.0, 0.8, 0.15, 0.04, 4.0, 0.8, 0.25, (4.0, 14.0), 2.5, 0.6,
    20.0, 0.4, 3.0, 0.5, 6.0, 6.0, 1.5, 0.35, 60.0, 2.0,
)  # fmt: skip
PLATEAUER = WorldType(
    "plateauer", 0.3, -0.5, 0.8, 0.08, 0.03, 2.0, 0.5, 0.6, (1.0, 5.0), 0.0, 0.3,
    8.0, 0.4, 2.0, 0.5, 6.0, 4.0, 3.0, 0.3, 40.0, 1.5,
)  # fmt: skip
DABBLER = WorldType(
    "dabbler", 0.2, -0.8, 0.8, 0.03, 0.03, 0.8, 0.4, 0.2, (5.0, 20.0), 0.0, 1.0,
    4.0, 0.4, 1.2, 0.6, 5.0, 2.0, 5.0, 0.2, 40.0, 1.2,
)  # fmt: skip
STRUGGLER = WorldType(
    "struggler", 0.2, -1.5, 0.8, 0.0, 0.03, 0.3, 0.3, 0.3, (2.0, 10.0), 1.2, 1.5,
    2.0, 0.4, 1.5, 0.5, 4.0, 3.0, 3.0, 0.25, 12.0, 1.0,
)  # fmt: skip
WORLD_TYPES = (CLIMBER, PLATEAUER, DABBLER, STRUGGLER)


@dataclass(frozen=True)
class WorldParams:
    """Size, seed and the world's fixed settings."""

    n_learners: int = 3000
    seed: int = 0
    growth: Literal["logistic", "linear"] = "logistic"
    n_weeks: int = 40
    enrol_weeks: float = 20.0
    #: a Wednesday noon: weeks of the world do not start on ISO week boundaries
    start: datetime = datetime(2024, 2, 14, 12, 0, tzinfo=UTC)
    domain_sizes: tuple[int, ...] = (2000, 1600, 1200, 1000, 800, 600, 500, 400)
    pages_per_domain: int = 30
    view_share: float = 0.1
    domain_difficulty_sd: float = 0.5
    difficulty_sd: float = 1.1
    discrimination_log_sd: float = 0.3
    #: (floor, share of items): 4-option, 5-option and open-answer items
    formats: tuple[tuple[float, float], ...] = ((0.25, 0.6), (0.2, 0.25), (0.0, 0.15))
    forgetting_exponent: float = 0.5
    stability_growth: float = 0.5
    review_gap_days: tuple[float, float] = (1.0 / 24.0, 60.0)
    max_reviews: int = 3
    missing_duration_share: float = 0.05
    types: tuple[WorldType, ...] = field(default=WORLD_TYPES)


@dataclass(frozen=True)
class World:
    """Events (``EVENT_SCHEMA``, sorted by ts), per-learner truth, items, per-event truth."""

    events: pa.Table
    truth: pd.DataFrame
    items: pd.DataFrame
    event_truth: pd.DataFrame


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _items(p: WorldParams, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for d, size in enumerate(p.domain_sizes):
        mu = rng.normal(0.0, p.domain_difficulty_sd)
        floors, shares = np.array(p.formats).T
        rows.append(
            pd.DataFrame(
                {
                    "item_id": [f"Q{d}-{j:05d}" for j in range(size)],
                    "domain": DOMAINS[d],
                    "domain_idx": d,
                    "local": np.arange(size),
                    "a": np.exp(rng.normal(0.0, p.discrimination_log_sd, size)),
                    "b": rng.normal(mu, p.difficulty_sd, size),
                    "c": rng.choice(floors, size=size, p=shares / shares.sum()),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _theta(p: WorldParams, tr: pd.DataFrame, learner: np.ndarray, t_s: np.ndarray) -> np.ndarray:
    """True ability of ``learner`` at world time ``t_s`` (seconds since start)."""
    tau = np.maximum(t_s - tr["enrol_s"].to_numpy()[learner], 0.0) / WEEK_S
    th0 = tr["theta0"].to_numpy()[learner]
    if p.growth == "linear":
        return th0 + tr["rate"].to_numpy()[learner] * tau
    cap = tr["capacity"].to_numpy()[learner]
    r = tr["gain_rate"].to_numpy()[learner]
    m = tr["midpoint"].to_numpy()[learner]
    return th0 + cap * (_sigmoid(r * (tau - m)) - _sigmoid(-r * m))


def _traits(p: WorldParams, rng: np.random.Generator) -> pd.DataFrame:
    n, k = p.n_learners, len(p.domain_sizes)
    shares = np.array([t.share for t in p.types])
    typ = rng.choice(len(p.types), size=n, p=shares / shares.sum())

    def col(name: str) -> np.ndarray:
        return np.array([float(getattr(t, name)) for t in p.types])[typ]

    mid_lo = np.array([t.gain_midpoint_weeks[0] for t in p.types])[typ]
    mid_hi = np.array([t.gain_midpoint_weeks[1] for t in p.types])[typ]
    scores = rng.normal(0.0, 1.0, (n, k)) * col("interest_sd")[:, None]
    fav = rng.integers(0, k, n)
    scores[np.arange(n), fav] += col("favourite_boost")
    pref = np.exp(scores - scores.max(axis=1, keepdims=True))
    pref /= pref.sum(axis=1, keepdims=True)
    ent = -(pref * np.log(pref)).sum(axis=1)
    enrol = rng.uniform(0.0, p.enrol_weeks, n) * WEEK_S
    life = col("lifetime_scale_weeks") * rng.weibull(col("lifetime_shape")) * WEEK_S
    end = np.minimum(enrol + life, p.n_weeks * WEEK_S)
    q = col("review_prob_mean")
    tr = pd.DataFrame(
        {
            "learner_id": [f"L{i:06d}" for i in range(n)],
            "learner_type": np.array([t.name for t in p.types])[typ],
            "theta0": rng.normal(col("theta0_mean"), col("theta0_sd")),
            "rate": rng.normal(col("linear_rate_mean_per_week"), col("linear_rate_sd_per_week")),
            "capacity": np.maximum(
                rng.normal(col("gain_capacity_mean_logits"), col("gain_capacity_sd_logits")), 0.0
            ),
            "gain_rate": col("gain_rate_median_per_week") * np.exp(rng.normal(0.0, 0.3, n)),
            "midpoint": rng.uniform(mid_lo, mid_hi),
            "half_life_days": col("half_life_median_days")
            * np.exp(rng.normal(0.0, col("half_life_log_sd"))),
            "sessions_per_week": col("sessions_per_week_median")
            * np.exp(rng.normal(0.0, col("sessions_log_sd"))),
            "events_per_session": col("events_per_session"),
            "on_spell_weeks": col("on_spell_weeks"),
            "off_spell_weeks": col("off_spell_weeks"),
            "review_prob": rng.beta(q * 10.0, (1.0 - q) * 10.0),
            "enrol_s": enrol,
            "end_s": end,
            "top_domain": np.array(DOMAINS[:k])[pref.argmax(axis=1)],
            "pref_entropy": ent / np.log(k),
            "effective_domains": np.exp(ent),
        }
    )
    for d in range(k):
        tr[f"pref_{DOMAINS[d]}"] = pref[:, d]
    tr["growth_form"] = p.growth
    # the steepest slope of the curve (logits / week): ``v`` or ``A r / 4``
    tr["growth_rate"] = (
        tr["rate"] if p.growth == "linear" else tr["capacity"] * tr["gain_rate"] / 4.0
    )
    return tr


def _sessions(
    p: WorldParams, tr: pd.DataFrame, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(learner, start second) of every study session: weekly on/off spells, uneven rates."""
    n = len(tr)
    enrol, end = tr["enrol_s"].to_numpy(), tr["end_s"].to_numpy()
    p_stop = 1.0 / tr["on_spell_weeks"].to_numpy()
    p_resume = 1.0 / tr["off_spell_weeks"].to_numpy()
    rate = tr["sessions_per_week"].to_numpy()
    on = np.ones(n, bool)
    learners, starts = [], []
    for w in range(p.n_weeks):
        lo = np.maximum(enrol, w * WEEK_S)
        hi = np.minimum(end, (w + 1) * WEEK_S)
        live = hi > lo
        started = enrol < w * WEEK_S  # the enrolment week is always an on-week
        u = rng.random(n)
        on = np.where(started, np.where(on, u >= p_stop, u < p_resume), True)
        mult = rng.gamma(2.0, 0.5, n)
        count = rng.poisson(rate * mult * np.where(live, (hi - lo) / WEEK_S, 0.0))
        count = np.where(live & on, count, 0)
        who = np.repeat(np.arange(n), count)
        learners.append(who)
        starts.append(rng.uniform(lo[who], hi[who]))
    return np.concatenate(learners), np.concatenate(starts)


def _ols_slope(learner: np.ndarray, t_weeks: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """Per-learner least-squares slope of ``y`` on ``t_weeks`` (NaN without two distinct times)."""
    cnt = np.bincount(learner, minlength=n).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mt = np.bincount(learner, t_weeks, n) / cnt
        my = np.bincount(learner, y, n) / cnt
        dt = t_weeks - mt[learner]
        sxx = np.bincount(learner, dt * dt, n)
        sxy = np.bincount(learner, dt * (y - my[learner]), n)
        slope = sxy / sxx
    return np.where(sxx > 1e-9, slope, np.nan)


def simulate_world(p: WorldParams) -> World:
    """Draw the second world: items, learners, sessions, attempts, reviews and outcomes."""
    ss = np.random.SeedSequence([p.seed, 20_240_214])
    rng_items, rng_traits, rng_events, rng_outcomes = (
        np.random.default_rng(s) for s in ss.spawn(4)
    )
    items = _items(p, rng_items)
    tr = _traits(p, rng_traits)
    n, k = len(tr), len(p.domain_sizes)
    rng = rng_events

    # ---- sessions -> events (views and first attempts) in time order within each session
    s_learner, s_start = _sessions(p, tr, rng)
    per = 1 + rng.poisson(tr["events_per_session"].to_numpy()[s_learner] - 1.0)
    e_learner = np.repeat(s_learner, per)
    e_session = np.repeat(np.arange(len(s_learner)), per)
    duration = np.exp(rng.normal(np.log(35.0), 0.7, len(e_learner)))
    pause = np.exp(rng.normal(np.log(10.0), 0.5, len(e_learner)))
    step = duration + pause
    csum = np.cumsum(step)
    first_of_session = np.r_[0, np.cumsum(per)[:-1]]
    offset_in_session = csum - np.repeat(csum[first_of_session] - step[first_of_session], per)
    e_time = np.repeat(s_start, per) + offset_in_session - step  # first event at the start
    keep = e_time < tr["end_s"].to_numpy()[e_learner]
    e_learner, e_time, duration = e_learner[keep], e_time[keep], duration[keep]
    del e_session
    m = len(e_learner)
    cum = np.cumsum(tr[[f"pref_{d}" for d in DOMAINS[:k]]].to_numpy(), axis=1)
    u = rng.random(m)
    e_domain = np.minimum((cum[e_learner] < u[:, None]).sum(axis=1), k - 1)
    is_view = rng.random(m) < p.view_share

    # first attempts: the k-th first attempt of (learner, domain) takes item offset + k * stride
    order = np.lexsort((e_time, e_domain, e_learner))
    fa = order[~is_view[order]]
    key = e_learner[fa] * k + e_domain[fa]
    new_run = np.r_[True, key[1:] != key[:-1]]
    run_start = np.flatnonzero(new_run)
    kth = np.arange(len(fa)) - np.repeat(run_start, np.diff(np.r_[run_start, len(fa)]))
    sizes = np.array(p.domain_sizes)
    offset = rng.integers(0, 1 << 30, (n, k))
    stride = rng.choice(_STRIDES, (n, k))
    dom_fa = e_domain[fa]
    local = (offset[e_learner[fa], dom_fa] + kth * stride[e_learner[fa], dom_fa]) % sizes[dom_fa]
    base = np.r_[0, np.cumsum(sizes)[:-1]]
    item_of = np.full(m, -1, np.int64)
    item_of[fa] = base[dom_fa] + local
    wrapped = np.zeros(m, bool)
    wrapped[fa] = kth >= sizes[dom_fa]

    a, b, c = (items[x].to_numpy() for x in ("a", "b", "c"))
    graded = ~is_view
    gi = np.flatnonzero(graded)
    theta = _theta(p, tr, e_learner, e_time)
    p_correct = np.full(m, np.nan)
    p_correct[gi] = c[item_of[gi]] + (1 - c[item_of[gi]]) * _sigmoid(
        a[item_of[gi]] * (theta[gi] - b[item_of[gi]])
    )
    y = np.full(m, np.nan)
    y[gi] = (rng_outcomes.random(len(gi)) < p_correct[gi]).astype(float)

    # ---- reviews: chains of up to max_reviews after each graded first attempt
    q = tr["review_prob"].to_numpy()
    h = tr["half_life_days"].to_numpy()
    d_exp = p.forgetting_exponent
    lo_gap, hi_gap = np.log(p.review_gap_days[0]), np.log(p.review_gap_days[1])
    r_learner, r_item, r_time, r_y, r_p, r_gap = [], [], [], [], [], []
    cur_t = e_time[gi]
    n_correct = y[gi].copy()
    alive = np.ones(len(gi), bool)
    lrn = e_learner[gi]
    itm = item_of[gi]
    for _ in range(p.max_reviews):
        alive &= rng.random(len(cur_t)) < q[lrn]
        gap_days = np.exp(rng.uniform(lo_gap, hi_gap, len(cur_t)))
        t_next = cur_t + gap_days * DAY_S
        alive &= t_next < tr["end_s"].to_numpy()[lrn]
        idx = np.flatnonzero(alive)
        if not len(idx):
            break
        li, it, tn, gd = lrn[idx], itm[idx], t_next[idx], gap_days[idx]
        h_eff = h[li] * np.maximum(n_correct[idx], 1.0) ** p.stability_growth
        recall = (1.0 + (2.0 ** (1.0 / d_exp) - 1.0) * gd / h_eff) ** (-d_exp)
        solve = _sigmoid(a[it] * (_theta(p, tr, li, tn) - b[it]))
        known = n_correct[idx] > 0
        pr = c[it] + (1.0 - c[it]) * np.where(known, recall, solve)
        yr = (rng_outcomes.random(len(idx)) < pr).astype(float)
        r_learner.append(li)
        r_item.append(it)
        r_time.append(tn)
        r_y.append(yr)
        r_p.append(pr)
        r_gap.append(gd)
        cur_t = cur_t.copy()
        cur_t[idx] = tn
        n_correct = n_correct.copy()
        n_correct[idx] += yr

    rl = np.concatenate(r_learner) if r_learner else np.zeros(0, np.int64)
    ri = np.concatenate(r_item) if r_item else np.zeros(0, np.int64)
    rt = np.concatenate(r_time) if r_time else np.zeros(0)
    ry = np.concatenate(r_y) if r_y else np.zeros(0)
    rp = np.concatenate(r_p) if r_p else np.zeros(0)
    rg = np.concatenate(r_gap) if r_gap else np.zeros(0)
    r_dur = np.exp(rng.normal(np.log(25.0), 0.7, len(rl)))

    # ---- views: a uniform page of the event's domain
    page = rng.integers(0, p.pages_per_domain, m)

    # ---- assemble
    item_names = items["item_id"].to_numpy()
    ev_item = np.where(
        is_view,
        np.char.add(
            np.char.add("P", e_domain.astype(str)),
            np.char.add("-", page.astype(str)),
        ),
        item_names[np.maximum(item_of, 0)],
    )
    kind = np.where(is_view, "view", np.where(wrapped, "wrapped_attempt", "first_attempt"))
    all_learner = np.r_[e_learner, rl]
    all_time = np.r_[e_time, rt]
    all_domain = np.r_[e_domain, items["domain_idx"].to_numpy()[ri]]
    all_item = np.r_[ev_item, item_names[ri]]
    all_y = np.r_[y, ry]
    all_dur = np.r_[duration, r_dur]
    all_dur[rng.random(len(all_dur)) < p.missing_duration_share] = np.nan
    all_kind = np.r_[kind, np.full(len(rl), "review")]
    all_p = np.r_[p_correct, rp]
    all_gap = np.r_[np.full(m, np.nan), rg]
    all_theta = _theta(p, tr, all_learner, all_time)
    order = np.argsort(all_time, kind="stable")
    start_us = int(p.start.timestamp()) * US
    ts_us = start_us + np.floor(all_time[order] * US).astype(np.int64)
    lids = tr["learner_id"].to_numpy()[all_learner[order]]
    yy = all_y[order]
    dd = all_dur[order]
    events = pa.table(
        {
            "event_id": pa.array([f"w{p.seed}-{i}" for i in range(len(order))], pa.string()),
            "learner_id": pa.array(lids, pa.string()),
            "ts": pa.array(ts_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "domain": pa.array(np.array(DOMAINS)[all_domain[order]], pa.string()),
            "item_id": pa.array(all_item[order], pa.string()),
            "outcome": pa.array(yy, pa.float64(), mask=np.isnan(yy)),
            "duration_s": pa.array(dd, pa.float64(), mask=np.isnan(dd)),
        },
        schema=EVENT_SCHEMA,
    )
    event_truth = pd.DataFrame(
        {
            "learner_id": lids,
            "ts_us": ts_us,
            "kind": all_kind[order],
            "p_correct": all_p[order],
            "theta": all_theta[order],
            "gap_days": all_gap[order],
        }
    )

    # ---- truth: counts and the realized ability trend over graded first attempts
    li_sorted = all_learner[order]
    tr["n_events"] = np.bincount(li_sorted, minlength=n)
    tr["n_graded"] = np.bincount(li_sorted, weights=~np.isnan(yy), minlength=n).astype(np.int64)
    first = all_kind[order] == "first_attempt"
    tr["trend_logits_per_week"] = _ols_slope(
        li_sorted[first], all_time[order][first] / WEEK_S, all_theta[order][first], n
    )
    tr["enrol_at"] = pd.to_datetime(
        start_us + (tr["enrol_s"] * US).astype(np.int64), unit="us", utc=True
    )
    tr["end_at"] = pd.to_datetime(
        start_us + (tr["end_s"] * US).astype(np.int64), unit="us", utc=True
    )
    return World(events=events, truth=tr, items=items, event_truth=event_truth)
