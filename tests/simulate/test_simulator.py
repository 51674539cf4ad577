"""Tests of the learner simulator: determinism, schemas, invariants, and the generative rules.

Statistical checks compare empirical rates with the model's own formulas re-implemented
here from the truth and item tables (not from the simulator's internals), with tolerances
of several standard errors so they fail on a wrong rule, not on noise.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit
from scipy.stats import spearmanr

from cohortlens.errors import InputError
from cohortlens.events.schema import EVENT_SCHEMA, OUTCOME_SCHEMA
from cohortlens.simulate import (
    CRAMMER,
    DEFAULT_TYPES,
    FAST_SPECIALIST,
    PRE_PERIOD_SCHEMA,
    STEADY_GENERALIST,
    Simulation,
    SimulationParams,
    draw_outcomes,
    pre_period_covariates,
    simulate,
    truth_schema,
    write_simulation,
)
from cohortlens.simulate._traits import _coprime_steps, normalized_entropy

DAY_US = 86_400 * 1_000_000
WEEK_US = 7 * DAY_US
START = datetime(2025, 1, 6, tzinfo=UTC)
START_US = int(START.timestamp()) * 1_000_000


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sim() -> Simulation:
    """One full-length run shared by the statistical tests (~0.7M events)."""
    return simulate(SimulationParams(n_learners=3000, seed=11, keep_event_truth=True))


@pytest.fixture(scope="module")
def frame(sim: Simulation) -> pd.DataFrame:
    """Events joined with per-event truth, learner truth and item difficulty, in log order."""
    assert sim.event_truth is not None
    ev = sim.events.to_pandas()
    et = sim.event_truth.to_pandas()
    assert (ev.event_id.values == et.event_id.values).all()
    ev["kind"] = et.kind.values
    ev["p_true"] = et.p_correct.values
    ev["gap_true"] = et.gap_days.values
    ev["t_us"] = ev.ts.astype("int64").values - START_US
    truth = sim.truth.to_pandas().set_index("learner_id")
    cols = ["learner_type", "ability0", "growth_rate", "half_life_days", "guess_floor"]
    ev = ev.join(truth[cols], on="learner_id")
    items = sim.items.to_pandas().set_index("item_id")
    ev["difficulty"] = items.difficulty.reindex(ev.item_id).values
    # Gap to the previous graded attempt on the same item, rebuilt from the log alone.
    graded = ev[ev.outcome.notna()].sort_values(["learner_id", "item_id", "t_us"], kind="stable")
    prev = graded.groupby(["learner_id", "item_id"]).t_us.shift()
    ev["gap_days"] = ((graded.t_us - prev) / DAY_US).reindex(ev.index)
    return ev


# ----------------------------------------------------------------------------- params


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_domains": 4}, "n_domains"),
        ({"n_learners": 0}, "n_learners"),
        ({"type_shares": (0.5, 0.5, 0.5, 0.5)}, "sum to 1"),
        ({"type_shares": (1.0,)}, "entries"),
        ({"start": datetime(2025, 1, 7, tzinfo=UTC)}, "Monday"),
        ({"start": datetime(2025, 1, 6)}, "timezone"),
        ({"start": datetime(1999, 12, 27, tzinfo=UTC)}, "2000"),
        ({"n_weeks": 52 * 200}, "future"),
        ({"view_share": 1.0}, "view_share"),
    ],
)
def test_invalid_params_are_rejected(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        SimulationParams(**changes)  # type: ignore[arg-type]


def test_type_params_validation() -> None:
    with pytest.raises(InputError, match="burst"):
        dataclasses.replace(CRAMMER, burst_week_prob=0.5, burst_multiplier=3.0)
    with pytest.raises(InputError, match="revisit_prob"):
        dataclasses.replace(CRAMMER, revisit_prob=1.0)


def test_default_window_is_in_the_past_and_after_2000() -> None:
    p = SimulationParams()
    assert p.start.weekday() == 0
    assert datetime(2000, 1, 1, tzinfo=UTC) <= p.start < p.end <= datetime.now(UTC)
    assert p.end - p.start == timedelta(weeks=26)
    assert p.domain_names == ("algebra", "geometry", "statistics", "calculus", "reading", "writing")
    assert SimulationParams(n_domains=13).domain_names[-1] == "domain_12"


# ------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_tables() -> None:
    p = SimulationParams(n_learners=200, n_weeks=8, seed=5)
    a, b = simulate(p), simulate(p)
    assert a.events.equals(b.events)
    assert a.outcomes.equals(b.outcomes)
    assert a.truth.equals(b.truth)
    assert a.items.equals(b.items)


def test_different_seed_gives_different_tables() -> None:
    a = simulate(SimulationParams(n_learners=200, n_weeks=8, seed=5))
    b = simulate(SimulationParams(n_learners=200, n_weeks=8, seed=6))
    assert not a.events.equals(b.events)
    assert not a.truth.equals(b.truth)
    assert a.events.column("event_id")[0].as_py() == "sim5-0"
    assert b.events.column("event_id")[0].as_py() == "sim6-0"


def test_traits_do_not_depend_on_window_length() -> None:
    short = simulate(SimulationParams(n_learners=300, n_weeks=3, seed=2)).truth
    long = simulate(SimulationParams(n_learners=300, n_weeks=9, seed=2)).truth
    for col in ("learner_type", "ability0", "growth_rate", "half_life_days", "pref_entropy"):
        assert short.column(col).equals(long.column(col))


# ------------------------------------------------------------------------- schema & invariants


def test_schemas_are_exact(sim: Simulation) -> None:
    assert sim.events.schema.equals(EVENT_SCHEMA, check_metadata=True)
    assert sim.outcomes.schema.equals(OUTCOME_SCHEMA, check_metadata=True)
    assert sim.truth.schema.equals(truth_schema(sim.params.domain_names))
    assert sim.truth.num_rows == sim.outcomes.num_rows == sim.params.n_learners
    sim.events.validate(full=True)


def test_event_log_invariants(sim: Simulation, frame: pd.DataFrame) -> None:
    p = sim.params
    ts = frame.t_us.to_numpy()
    assert (np.diff(ts) >= 0).all(), "events must be sorted by ts"
    assert ts.min() >= 0
    assert ts.max() < p.n_weeks * WEEK_US
    expected_ids = np.array([f"sim{p.seed}-{k}" for k in range(len(frame))], dtype=object)
    assert (sim.events.column("event_id").to_numpy() == expected_ids).all()
    assert set(frame.outcome.dropna().unique()) <= {0.0, 1.0}
    # Page views (and only they) are ungraded.
    items = sim.events.column("item_id")
    is_page = pc.match_substring(items, "-p").to_numpy(zero_copy_only=False)
    assert (frame.outcome.isna().to_numpy() == is_page).all()
    assert (frame.kind.eq("view").to_numpy() == is_page).all()
    assert (frame.duration_s > 0).all()
    domains = sim.events.column("domain")
    assert pc.all(pc.is_in(domains, pa.array(p.domain_names))).as_py()
    prefix = pc.list_element(pc.split_pattern(items, "-", max_splits=1), 0)
    assert pc.all(pc.equal(prefix, domains)).as_py()


def test_no_events_after_dropout(sim: Simulation, frame: pd.DataFrame) -> None:
    truth = sim.truth.to_pandas().set_index("learner_id")
    last = frame.groupby("learner_id").ts.max()
    dropped = truth.dropout_at.notna()
    at = truth.dropout_at[dropped]
    assert (last.reindex(at.index).dropna() < at.loc[last.reindex(at.index).dropna().index]).all()
    last_week = ((last - pd.Timestamp(START)) // pd.Timedelta(weeks=1)).reindex(at.index).dropna()
    assert (last_week <= truth.dropout_week.loc[last_week.index]).all()
    # dropout_at lies inside dropout_week.
    week_of = (at - pd.Timestamp(START)) // pd.Timedelta(weeks=1)
    assert (week_of == truth.dropout_week[dropped]).all()
    assert truth.dropout_week.isna().sum() > 0
    assert (truth.dropout_week.dropna() < sim.params.n_weeks).all()


def test_truth_counts_match_the_log(sim: Simulation, frame: pd.DataFrame) -> None:
    truth = sim.truth.to_pandas().set_index("learner_id")
    n = frame.groupby("learner_id").size().reindex(truth.index, fill_value=0)
    g = frame[frame.outcome.notna()].groupby("learner_id").size()
    assert (truth.n_events == n).all()
    assert (truth.n_graded == g.reindex(truth.index, fill_value=0)).all()


def test_preference_columns(sim: Simulation) -> None:
    truth = sim.truth.to_pandas()
    prefs = truth[[f"pref_{d}" for d in sim.params.domain_names]].to_numpy()
    np.testing.assert_allclose(prefs.sum(axis=1), 1.0, atol=1e-12)
    h = -np.where(prefs > 0, prefs * np.log(np.where(prefs > 0, prefs, 1.0)), 0.0).sum(axis=1)
    np.testing.assert_allclose(truth.pref_entropy, h / math.log(prefs.shape[1]), atol=1e-12)
    top = np.array(sim.params.domain_names)[prefs.argmax(axis=1)]
    assert (truth.top_domain.to_numpy() == top).all()
    med = truth.groupby("learner_type").pref_entropy.median()
    assert med["fast_specialist"] < 0.4 < 0.9 < med["steady_generalist"]


@settings(max_examples=12, deadline=None)
@given(
    n_learners=st.integers(1, 40),
    n_weeks=st.integers(1, 4),
    n_domains=st.integers(5, 8),
    n_items=st.integers(1, 30),
    seed=st.integers(0, 2**31),
)
def test_invariants_hold_for_any_small_platform(
    n_learners: int, n_weeks: int, n_domains: int, n_items: int, seed: int
) -> None:
    p = SimulationParams(
        n_learners=n_learners,
        n_weeks=n_weeks,
        n_domains=n_domains,
        n_items_per_domain=n_items,
        seed=seed,
    )
    s = simulate(dataclasses.replace(p, keep_event_truth=True))
    assert s.events.schema.equals(EVENT_SCHEMA)
    assert s.truth.num_rows == n_learners
    ts = s.events.column("ts").cast(pa.int64()).to_numpy() - START_US
    assert (np.diff(ts) >= 0).all()
    assert ts.size == 0 or (ts.min() >= 0 and ts.max() < n_weeks * WEEK_US)
    out = s.events.column("outcome").drop_null().to_numpy()
    assert np.isin(out, [0.0, 1.0]).all()
    assert len(set(s.events.column("event_id").to_pylist())) == s.events.num_rows
    assert s.event_truth is not None
    ev = s.events.select(["learner_id", "domain", "item_id"]).to_pandas()
    ev["kind"] = s.event_truth.column("kind").to_pandas()
    _assert_first_attempts_unique(ev, n_items)


def test_a_silent_platform_gives_an_empty_log() -> None:
    idle = dataclasses.replace(STEADY_GENERALIST, name="idle", activity_median_per_week=1e-9)
    s = simulate(SimulationParams(n_learners=5, n_weeks=3, types=(idle,), type_shares=(1.0,)))
    assert s.events.num_rows == 0
    assert s.events.schema.equals(EVENT_SCHEMA)
    assert s.truth.column("n_events").to_pylist() == [0] * 5
    assert s.outcomes.num_rows == 5


# ------------------------------------------------------------------------ population


def test_type_shares_match_the_mix() -> None:
    p = SimulationParams(n_learners=20_000, n_weeks=1, seed=3)
    types = simulate(p).truth.column("learner_type").to_pandas().value_counts()
    for spec, share in zip(p.types, p.type_shares, strict=True):
        se = math.sqrt(share * (1 - share) / p.n_learners)
        assert abs(types[spec.name] / p.n_learners - share) < 4 * se


def test_type_traits_are_separable(sim: Simulation) -> None:
    """k-means on the four true traits recovers the types (cohort discovery's premise)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score
    from threadpoolctl import threadpool_limits

    t = sim.truth.to_pandas()
    x = np.column_stack(
        [
            t.growth_rate,
            t.pref_entropy,
            np.log(t.half_life_days),
            np.log(t.activity_level),
        ]
    )
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    with threadpool_limits(1):  # OpenMP threads crawl on a busy 2-core machine
        labels = KMeans(4, n_init=10, random_state=0).fit_predict(x)
    assert adjusted_rand_score(t.learner_type, labels) > 0.8


def test_half_lives_and_growth_span_a_wide_range(sim: Simulation) -> None:
    t = sim.truth.to_pandas()
    assert t.half_life_days.quantile(0.02) < 1.5
    assert t.half_life_days.quantile(0.98) > 40
    med = t.groupby("learner_type").growth_rate.median()
    assert med["fast_specialist"] > 2 * med["steady_generalist"] > 4 * med["crammer"]


def test_dropout_follows_the_weekly_hazard(sim: Simulation) -> None:
    """P(drop in week 0) = hazard, and P(drop in week 1 | survived week 0) = hazard."""
    t = sim.truth.to_pandas()
    w0 = t.dropout_week.eq(0)
    assert abs(w0.mean() - t.dropout_hazard.mean()) < 4 * math.sqrt(
        (t.dropout_hazard * (1 - t.dropout_hazard)).sum()
    ) / len(t)
    alive = t[~w0]
    w1 = alive.dropout_week.eq(1)
    sd = math.sqrt((alive.dropout_hazard * (1 - alive.dropout_hazard)).sum()) / len(alive)
    assert abs(w1.mean() - alive.dropout_hazard.mean()) < 4 * sd


# --------------------------------------------------------------------------- events


def test_weekly_new_event_counts_are_poisson(sim: Simulation, frame: pd.DataFrame) -> None:
    """Steady generalists (no bursts, flat trend): new events per full week ~ Poisson(activity)."""
    truth = sim.truth.to_pandas().set_index("learner_id")
    gen = truth[truth.learner_type.eq("steady_generalist") & truth.dropout_week.isna()]
    new = frame[frame.kind.isin(["view", "first_attempt"]) & frame.learner_id.isin(gen.index)]
    week = new.t_us // WEEK_US
    counts = new.groupby([new.learner_id, week]).size()
    grid = pd.MultiIndex.from_product([gen.index, range(sim.params.n_weeks)])
    counts = counts.reindex(grid, fill_value=0)
    lam = gen.activity_level.reindex(counts.index.get_level_values(0)).to_numpy()
    z = (counts.to_numpy() - lam) / np.sqrt(lam)
    assert abs(z.mean()) < 4 / math.sqrt(z.size)
    assert abs(z.var() - 1) < 0.06
    views = (new.kind == "view").mean()
    assert abs(views - sim.params.view_share) < 4 * math.sqrt(0.16 / len(new))


def test_first_attempts_follow_the_ability_model(frame: pd.DataFrame) -> None:
    """p = g + (1 - g) sigmoid(ability0 + growth * weeks - difficulty), and outcomes match p."""
    f = frame[frame.kind.eq("first_attempt")]
    weeks = f.t_us.to_numpy() / WEEK_US
    p = f.guess_floor + (1 - f.guess_floor) * expit(
        f.ability0 + f.growth_rate * weeks - f.difficulty
    )
    np.testing.assert_allclose(p, f.p_true, rtol=0, atol=1e-12)
    # The log alone shows a first attempt: no earlier graded attempt on that item.
    assert f.gap_days.isna().all()
    bins = pd.qcut(p, 10)
    calib = f.outcome.groupby(bins, observed=True).agg(["mean", "size"])
    expected = p.groupby(bins, observed=True).mean()
    se = np.sqrt(expected * (1 - expected) / calib["size"])
    assert (np.abs(calib["mean"] - expected) < 4 * se).all()


def test_accuracy_rises_with_weeks_for_high_growth_learners(frame: pd.DataFrame) -> None:
    """Early (weeks 0-5) vs late (weeks 20+) first-attempt accuracy, against the model's p."""
    f = frame[frame.kind.eq("first_attempt")]
    week = f.t_us // WEEK_US
    p = f.guess_floor + (1 - f.guess_floor) * expit(
        f.ability0 + f.growth_rate * f.t_us / WEEK_US - f.difficulty
    )
    rise = {}
    for name in ("fast_specialist", "crammer"):
        early = f.learner_type.eq(name) & (week < 6)
        late = f.learner_type.eq(name) & (week >= 20)
        observed = f.outcome[late].mean() - f.outcome[early].mean()
        expected = p[late].mean() - p[early].mean()
        se = math.sqrt(
            (p[late] * (1 - p[late])).sum() / late.sum() ** 2
            + (p[early] * (1 - p[early])).sum() / early.sum() ** 2
        )
        assert abs(observed - expected) < 4 * se, name
        rise[name] = observed
    assert rise["fast_specialist"] > 0.2
    assert rise["fast_specialist"] > rise["crammer"] + 0.15


def test_revisits_follow_the_forgetting_curve(frame: pd.DataFrame) -> None:
    """Revisit success p = g + (1 - g) 2^(-gap/h); at gap ~ h the recall is ~ g + (1 - g)/2."""
    r = frame[frame.kind.eq("revisit")]
    np.testing.assert_allclose(r.gap_days, r.gap_true, rtol=0, atol=1e-9)
    p = r.guess_floor + (1 - r.guess_floor) * np.exp2(-r.gap_days / r.half_life_days)
    np.testing.assert_allclose(p, r.p_true, rtol=0, atol=1e-12)
    x = r.gap_days / r.half_life_days
    for name in ("fast_specialist", "steady_generalist", "crammer"):
        near = r[(x > 0.8) & (x < 1.25) & r.learner_type.eq(name)]
        assert len(near) > 500
        expected = (near.guess_floor + (1 - near.guess_floor) * np.exp2(-x[near.index])).mean()
        se = math.sqrt(expected * (1 - expected) / len(near))
        assert abs(near.outcome.mean() - expected) < 4 * se
        half = (near.guess_floor + (1 - near.guess_floor) / 2).mean()
        assert abs(near.outcome.mean() - half) < 0.05
    # Long gaps decay to the guess floor; short crammer gaps are still recalled.
    far = r[x > 8]
    assert abs(far.outcome.mean() - far.guess_floor.mean()) < 0.04


def test_revisit_gaps_and_volume(sim: Simulation, frame: pd.DataFrame) -> None:
    r = frame[frame.kind.eq("revisit")]
    gap_s = r.gap_days * 86_400
    same = gap_s < 86_400
    p = sim.params
    assert gap_s[same].between(p.same_session_gap_min_s, p.same_session_gap_max_s).all()
    assert (r.gap_days[~same].between(1.0, p.max_gap_days + 1 / 12)).all()
    per = r[~same].groupby("learner_id").size()
    truth = sim.truth.to_pandas().set_index("learner_id")
    per = per.reindex(truth.index, fill_value=0)
    for name in ("fast_specialist", "steady_generalist", "crammer"):
        assert per[truth.learner_type.eq(name)].median() >= 20, name
    # First attempts walk a permutation of the domain's bank: distinct items = min(count, Q).
    _assert_first_attempts_unique(frame, p.n_items_per_domain)


def test_observed_domain_shares_track_preferences(sim: Simulation, frame: pd.DataFrame) -> None:
    truth = sim.truth.to_pandas().set_index("learner_id")
    counts = frame.groupby(["learner_id", "domain"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=list(sim.params.domain_names), fill_value=0)
    busy = counts[counts.sum(axis=1) >= 50]
    shares = busy.to_numpy() / busy.sum(axis=1).to_numpy()[:, None]
    rho = spearmanr(normalized_entropy(shares), truth.pref_entropy.loc[busy.index]).statistic
    assert rho > 0.9


# -------------------------------------------------------------------------- outcomes


def test_outcomes_follow_the_traits(sim: Simulation) -> None:
    t = sim.truth.to_pandas()
    assert sim.outcomes.column("as_of").to_pylist()[0] == sim.params.end
    dropped = t.dropout_week.notna()
    assert t.churned[dropped].mean() > t.churned[~dropped].mean() + 0.3
    stay = t[~dropped]
    fast = stay.growth_rate > stay.growth_rate.median()
    assert stay.completed[fast].mean() > stay.completed[~fast].mean() + 0.1
    rate = t.groupby("learner_type").completed.mean()
    assert rate["fast_specialist"] > rate["steady_generalist"] > rate["disengaging"]
    assert (t.revenue >= 0).all()
    assert t.revenue.gt(0).mean() > 0.2


def test_draw_outcomes_is_pure_and_shifts_are_monotone(sim: Simulation) -> None:
    base = draw_outcomes(sim.truth, np.random.default_rng(1))
    again = draw_outcomes(sim.truth, np.random.default_rng(1))
    assert base.equals(again)
    assert base.schema.equals(OUTCOME_SCHEMA)
    treated = draw_outcomes(
        sim.truth,
        np.random.default_rng(1),
        completion_logit_shift=0.5,
        churn_logit_shift=-0.5,
        revenue_multiplier=1.1,
    )
    b, t = base.to_pandas(), treated.to_pandas()
    # Common random numbers: the shift moves every learner in one direction only.
    assert (t.completed >= b.completed).all()
    assert t.completed.sum() > b.completed.sum()
    assert (t.churned <= b.churned).all()
    assert t.churned.sum() < b.churned.sum()
    np.testing.assert_allclose(t.revenue, 1.1 * b.revenue, rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(shift=st.floats(-3, 3), seed=st.integers(0, 2**32 - 1))
def test_completion_shift_is_monotone_for_any_shift(shift: float, seed: int) -> None:
    truth = _small_truth()
    lo = draw_outcomes(truth, np.random.default_rng(seed), completion_logit_shift=shift)
    hi = draw_outcomes(truth, np.random.default_rng(seed), completion_logit_shift=shift + 0.25)
    lo_c = np.asarray(lo.column("completed").to_pylist())
    hi_c = np.asarray(hi.column("completed").to_pylist())
    assert (hi_c >= lo_c).all()
    assert lo.column("churned").equals(hi.column("churned"))


def test_draw_outcomes_rejects_bad_input(sim: Simulation) -> None:
    with pytest.raises(ValueError, match="dropout_hazard"):
        draw_outcomes(sim.truth.drop_columns(["dropout_hazard"]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="revenue_multiplier"):
        draw_outcomes(sim.truth, np.random.default_rng(0), revenue_multiplier=-1.0)


def test_pre_period_covariates_predict_revenue(sim: Simulation) -> None:
    pre = pre_period_covariates(sim.truth, np.random.default_rng(2))
    assert pre.schema.equals(PRE_PERIOD_SCHEMA)
    assert pre.column("learner_id").equals(sim.truth.column("learner_id"))
    x = pre.column("pre_revenue").to_numpy()
    y = sim.outcomes.column("revenue").to_numpy()
    assert np.corrcoef(x, y)[0, 1] > 0.3
    ev = pre.column("pre_events").to_numpy()
    act = sim.truth.column("activity_level").to_numpy()
    assert abs(ev.sum() / (4 * act.sum()) - 1) < 0.02


# ------------------------------------------------------------------------------ helpers


def test_write_simulation_round_trips(tmp_path: Path) -> None:
    s = simulate(SimulationParams(n_learners=50, n_weeks=3, seed=4))
    paths = write_simulation(s, tmp_path / "out")
    assert set(paths) == {"events", "outcomes", "truth", "items", "params"}
    assert pq.read_table(paths["events"]).equals(s.events.combine_chunks())
    assert pq.read_table(paths["truth"]).equals(s.truth.combine_chunks())
    assert pq.read_table(paths["outcomes"]).equals(s.outcomes.combine_chunks())
    assert '"n_learners": 50' in paths["params"].read_text()


def test_normalized_entropy_hand_values() -> None:
    shares = np.array([[1.0, 0, 0, 0, 0], [0.2] * 5, [0.5, 0.5, 0, 0, 0]])
    np.testing.assert_allclose(
        normalized_entropy(shares), [0.0, 1.0, math.log(2) / math.log(5)], atol=1e-15
    )


@pytest.mark.parametrize("n_items", [1, 2, 12, 97, 1000])
def test_item_order_is_a_permutation(n_items: int) -> None:
    steps = _coprime_steps(n_items, 50, np.random.default_rng(0))
    k = np.arange(n_items)
    for a in steps[:10]:
        assert np.unique((a * k + 3) % n_items).size == n_items


def test_default_types_are_the_four_documented_ones() -> None:
    assert [t.name for t in DEFAULT_TYPES] == [
        "fast_specialist",
        "steady_generalist",
        "crammer",
        "disengaging",
    ]
    assert FAST_SPECIALIST.half_life_median_days > STEADY_GENERALIST.half_life_median_days
    assert STEADY_GENERALIST.half_life_median_days > CRAMMER.half_life_median_days


def _assert_first_attempts_unique(events: pd.DataFrame, n_items: int) -> None:
    """Per (learner, domain), first attempts hit min(count, n_items) distinct items."""
    firsts = events[events.kind.eq("first_attempt")]
    if firsts.empty:
        return
    per = firsts.groupby(["learner_id", "domain"]).item_id.agg(["size", "nunique"])
    assert (per["nunique"] == np.minimum(per["size"], n_items)).all()


_TRUTH_CACHE: list[pa.Table] = []


def _small_truth() -> pa.Table:
    """A 500-learner truth table, built once (hypothesis examples reuse it)."""
    if not _TRUTH_CACHE:
        _TRUTH_CACHE.append(simulate(SimulationParams(n_learners=500, n_weeks=2, seed=8)).truth)
    return _TRUTH_CACHE[0]
