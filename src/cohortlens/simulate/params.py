"""Parameters of the learner simulator: one frozen dataclass per latent type, one per run.

Every number has its unit in its name (``_logits``, ``_per_week``, ``_days``, ``_s``). The
defaults are documented, with the formulas they feed, in docs/SIMULATOR.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cohortlens.errors import InputError

#: Seconds in a day and in a week (the simulator's clock is UTC, no DST).
DAY_S = 86_400
WEEK_S = 7 * DAY_S

#: Readable domain names; runs with more domains continue with ``domain_06``, ``domain_07``...
DOMAIN_NAMES: tuple[str, ...] = (
    "algebra",
    "geometry",
    "statistics",
    "calculus",
    "reading",
    "writing",
    "vocabulary",
    "grammar",
    "physics",
    "chemistry",
    "biology",
    "history",
)


def _check(ok: bool, message: str) -> None:
    """Raise an :class:`InputError` (printed as is by the CLI) unless ``ok``."""
    if not ok:
        raise InputError(f"simulation parameters: {message}")


@dataclass(frozen=True)
class LearnerTypeParams:
    """How one latent learner type draws its traits and behaves.

    Attributes:
        name: the ``learner_type`` string in the truth table.
        ability0_mean_logits: mean starting ability, on the item-difficulty logit scale.
        ability0_sd_logits: within-type standard deviation of the starting ability.
        growth_mean_logits_per_week: mean ability gain per week (``growth_rate``).
        growth_sd_logits_per_week: within-type standard deviation of the growth rate.
        pref_concentration: total Dirichlet concentration of the domain preferences
            (low = sparse, learner-specific shares; high = shares close to the type mean).
        pref_focus_share: mean preference share of the learner's main domain; the other
            domains share the rest equally (``None`` = no main domain: uniform mean).
        half_life_median_days: median memory half-life h (``half_life_days``).
        half_life_log_sd: within-type standard deviation of ln h.
        activity_median_per_week: median Poisson rate of new events per active week
            (``activity_level``; lognormal, so heavy-tailed).
        activity_log_sd: within-type standard deviation of ln activity.
        activity_trend_per_week: the weekly rate is multiplied by this to the power of the
            week index (1 = flat; < 1 = fading engagement).
        burst_week_prob: probability that a week is a burst ("cram") week.
        burst_multiplier: rate multiplier of a burst week; other weeks get the multiplier
            that keeps the mean at 1, so ``burst_week_prob * burst_multiplier <= 1``.
        events_per_session: mean new events per study session.
        dropout_hazard_median_per_week: median weekly probability of dropping out.
        dropout_hazard_logit_sd: within-type standard deviation of logit(hazard).
        guess_floor_mean: mean guess floor g (the success rate of a pure guess).
        guess_floor_concentration: Beta concentration of g (higher = less spread).
        revisit_prob: probability that a graded attempt is followed by a revisit of the
            same item (revisits chain, so an item gets ``revisit_prob / (1 - revisit_prob)``
            revisits on average before censoring).
        same_session_share: share of revisits made in the same session (gap 1-60 minutes);
            the others come back whole days later.
        spend_mean_logit: mean spend propensity s (purchase logit; drives revenue).
        spend_sd_logit: within-type standard deviation of s.
    """

    name: str
    ability0_mean_logits: float
    ability0_sd_logits: float
    growth_mean_logits_per_week: float
    growth_sd_logits_per_week: float
    pref_concentration: float
    pref_focus_share: float | None
    half_life_median_days: float
    half_life_log_sd: float
    activity_median_per_week: float
    activity_log_sd: float
    activity_trend_per_week: float
    burst_week_prob: float
    burst_multiplier: float
    events_per_session: float
    dropout_hazard_median_per_week: float
    dropout_hazard_logit_sd: float
    guess_floor_mean: float
    guess_floor_concentration: float
    revisit_prob: float
    same_session_share: float
    spend_mean_logit: float
    spend_sd_logit: float

    def __post_init__(self) -> None:
        _check(self.name != "", "type name must not be empty")
        for name in (
            "ability0_sd_logits",
            "growth_sd_logits_per_week",
            "half_life_log_sd",
            "activity_log_sd",
            "dropout_hazard_logit_sd",
            "spend_sd_logit",
        ):
            _check(getattr(self, name) >= 0, f"{self.name}: {name} must be >= 0")
        for name in (
            "pref_concentration",
            "half_life_median_days",
            "activity_median_per_week",
            "activity_trend_per_week",
            "burst_multiplier",
            "events_per_session",
            "guess_floor_concentration",
        ):
            _check(getattr(self, name) > 0, f"{self.name}: {name} must be > 0")
        _check(
            self.pref_focus_share is None or 0 < self.pref_focus_share < 1,
            f"{self.name}: pref_focus_share must be None or in (0, 1)",
        )
        for name in ("dropout_hazard_median_per_week", "guess_floor_mean"):
            _check(0 < getattr(self, name) < 1, f"{self.name}: {name} must be in (0, 1)")
        for name in ("burst_week_prob", "revisit_prob", "same_session_share"):
            _check(0 <= getattr(self, name) < 1, f"{self.name}: {name} must be in [0, 1)")
        _check(
            self.burst_week_prob * self.burst_multiplier <= 1,
            f"{self.name}: burst_week_prob * burst_multiplier must be <= 1 (mean rate is kept)",
        )


#: Fast specialists: steep growth, one main domain, long memory, active, loyal.
FAST_SPECIALIST = LearnerTypeParams(
    name="fast_specialist",
    ability0_mean_logits=-1.0,
    ability0_sd_logits=0.7,
    growth_mean_logits_per_week=0.22,
    growth_sd_logits_per_week=0.03,
    pref_concentration=3.0,
    pref_focus_share=0.8,
    half_life_median_days=30.0,
    half_life_log_sd=0.3,
    activity_median_per_week=10.0,
    activity_log_sd=0.45,
    activity_trend_per_week=1.0,
    burst_week_prob=0.0,
    burst_multiplier=1.0,
    events_per_session=6.0,
    dropout_hazard_median_per_week=0.006,
    dropout_hazard_logit_sd=0.5,
    guess_floor_mean=0.25,
    guess_floor_concentration=40.0,
    revisit_prob=0.25,
    same_session_share=0.15,
    spend_mean_logit=0.5,
    spend_sd_logit=1.2,
)

#: Steady generalists: moderate growth spread evenly over all domains, medium memory.
STEADY_GENERALIST = LearnerTypeParams(
    name="steady_generalist",
    ability0_mean_logits=-1.0,
    ability0_sd_logits=0.7,
    growth_mean_logits_per_week=0.1,
    growth_sd_logits_per_week=0.025,
    pref_concentration=40.0,
    pref_focus_share=None,
    half_life_median_days=9.0,
    half_life_log_sd=0.3,
    activity_median_per_week=7.5,
    activity_log_sd=0.45,
    activity_trend_per_week=1.0,
    burst_week_prob=0.0,
    burst_multiplier=1.0,
    events_per_session=4.0,
    dropout_hazard_median_per_week=0.01,
    dropout_hazard_logit_sd=0.5,
    guess_floor_mean=0.25,
    guess_floor_concentration=40.0,
    revisit_prob=0.25,
    same_session_share=0.2,
    spend_mean_logit=0.0,
    spend_sd_logit=1.2,
)

#: Crammers: bursts of long sessions, massed same-session repeats, forget within days.
CRAMMER = LearnerTypeParams(
    name="crammer",
    ability0_mean_logits=-0.3,
    ability0_sd_logits=0.7,
    growth_mean_logits_per_week=0.02,
    growth_sd_logits_per_week=0.015,
    pref_concentration=4.0,
    pref_focus_share=0.45,
    half_life_median_days=1.5,
    half_life_log_sd=0.3,
    activity_median_per_week=12.0,
    activity_log_sd=0.45,
    activity_trend_per_week=1.0,
    burst_week_prob=0.3,
    burst_multiplier=3.0,
    events_per_session=12.0,
    dropout_hazard_median_per_week=0.015,
    dropout_hazard_logit_sd=0.5,
    guess_floor_mean=0.25,
    guess_floor_concentration=40.0,
    revisit_prob=0.35,
    same_session_share=0.55,
    spend_mean_logit=-0.3,
    spend_sd_logit=1.2,
)

#: Disengaging learners: little growth, fading activity, high weekly dropout hazard.
DISENGAGING = LearnerTypeParams(
    name="disengaging",
    ability0_mean_logits=-0.8,
    ability0_sd_logits=0.7,
    growth_mean_logits_per_week=-0.02,
    growth_sd_logits_per_week=0.015,
    pref_concentration=3.0,
    pref_focus_share=None,
    half_life_median_days=4.5,
    half_life_log_sd=0.3,
    activity_median_per_week=5.0,
    activity_log_sd=0.45,
    activity_trend_per_week=0.88,
    burst_week_prob=0.0,
    burst_multiplier=1.0,
    events_per_session=3.0,
    dropout_hazard_median_per_week=0.12,
    dropout_hazard_logit_sd=0.5,
    guess_floor_mean=0.25,
    guess_floor_concentration=40.0,
    revisit_prob=0.2,
    same_session_share=0.3,
    spend_mean_logit=-1.0,
    spend_sd_logit=1.2,
)

DEFAULT_TYPES: tuple[LearnerTypeParams, ...] = (
    FAST_SPECIALIST,
    STEADY_GENERALIST,
    CRAMMER,
    DISENGAGING,
)
DEFAULT_TYPE_SHARES: tuple[float, ...] = (0.25, 0.30, 0.20, 0.25)


@dataclass(frozen=True)
class SimulationParams:
    """One simulated platform: population, calendar, item bank and event mechanics.

    Attributes:
        n_learners: learners in the population (all enrol at ``start``).
        n_weeks: length of the observation window, in weeks.
        n_domains: number of content domains (>= 5).
        n_items_per_domain: graded questions per domain (first attempts never reuse an
            item until the learner has attempted every item of that domain).
        n_pages_per_domain: ungraded lesson pages per domain (targets of page views).
        seed: master seed; the same seed and parameters give identical tables.
        start: tz-aware UTC Monday 00:00 when the window opens (after 2000, in the past,
            and ``start + n_weeks`` weeks must also lie in the past).
        types: the latent learner types.
        type_shares: population share of each type (same order as ``types``; sums to 1).
        view_share: share of new events that are ungraded page views (outcome null).
        domain_difficulty_sd_logits: spread of the per-domain mean item difficulty.
        item_difficulty_sd_logits: spread of item difficulty around its domain mean.
        max_gap_days: longest day-scale gap between a revisit and the previous attempt.
        same_session_gap_min_s: shortest same-session revisit gap, in seconds.
        same_session_gap_max_s: longest same-session revisit gap, in seconds.
        graded_duration_median_s: median duration of a graded attempt (lognormal).
        view_duration_median_s: median duration of a page view (lognormal).
        duration_log_sd: standard deviation of ln duration.
        think_time_median_s: median pause between consecutive events of a session.
        study_hour_sd_hours: spread of a session's start around the learner's usual hour.
        keep_event_truth: also return the per-event ground truth (kind, true success
            probability, gap to the previous attempt); costs ~25 bytes per event.
    """

    n_learners: int = 10_000
    n_weeks: int = 26
    n_domains: int = 6
    n_items_per_domain: int = 1000
    n_pages_per_domain: int = 40
    seed: int = 0
    start: datetime = datetime(2025, 1, 6, tzinfo=UTC)
    types: tuple[LearnerTypeParams, ...] = DEFAULT_TYPES
    type_shares: tuple[float, ...] = DEFAULT_TYPE_SHARES
    view_share: float = 0.2
    domain_difficulty_sd_logits: float = 0.3
    item_difficulty_sd_logits: float = 1.2
    max_gap_days: int = 60
    same_session_gap_min_s: float = 60.0
    same_session_gap_max_s: float = 3600.0
    graded_duration_median_s: float = 40.0
    view_duration_median_s: float = 75.0
    duration_log_sd: float = 0.6
    think_time_median_s: float = 15.0
    study_hour_sd_hours: float = 1.5
    keep_event_truth: bool = False

    def __post_init__(self) -> None:
        _check(self.n_learners >= 1, "n_learners must be >= 1")
        _check(self.n_weeks >= 1, "n_weeks must be >= 1")
        _check(self.n_domains >= 5, "n_domains must be >= 5")
        _check(self.n_items_per_domain >= 1, "n_items_per_domain must be >= 1")
        _check(self.n_pages_per_domain >= 1, "n_pages_per_domain must be >= 1")
        _check(self.seed >= 0, "seed must be >= 0")
        _check(len(self.types) >= 1, "at least one learner type is needed")
        _check(
            len({t.name for t in self.types}) == len(self.types), "learner type names must differ"
        )
        _check(
            len(self.type_shares) == len(self.types),
            f"type_shares has {len(self.type_shares)} entries for {len(self.types)} types",
        )
        _check(all(s >= 0 for s in self.type_shares), "type_shares must be >= 0")
        _check(
            math.isclose(sum(self.type_shares), 1.0, abs_tol=1e-6),
            f"type_shares must sum to 1 (got {sum(self.type_shares):.6f})",
        )
        _check(0 <= self.view_share < 1, "view_share must be in [0, 1)")
        _check(self.max_gap_days >= 1, "max_gap_days must be >= 1")
        _check(
            0 < self.same_session_gap_min_s <= self.same_session_gap_max_s <= 3600,
            "same-session gaps must satisfy 0 < min <= max <= 3600 s",
        )
        for name in (
            "graded_duration_median_s",
            "view_duration_median_s",
            "think_time_median_s",
        ):
            _check(getattr(self, name) > 0, f"{name} must be > 0")
        for name in (
            "domain_difficulty_sd_logits",
            "item_difficulty_sd_logits",
            "duration_log_sd",
            "study_hour_sd_hours",
        ):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0")
        start = self.start
        _check(start.tzinfo is not None, "start must be timezone-aware (UTC)")
        _check(start.utcoffset() == timedelta(0), "start must be in UTC")
        _check(
            start.weekday() == 0
            and (start.hour, start.minute, start.second, start.microsecond) == (0, 0, 0, 0),
            f"start must be a Monday 00:00 UTC (got {start.isoformat()})",
        )
        _check(start >= datetime(2000, 1, 1, tzinfo=UTC), "start must not be before 2000")
        now = datetime.now(UTC)
        _check(
            self.end <= now,
            f"the window {start.date()} + {self.n_weeks} weeks ends {self.end.date()}, "
            "in the future; use an earlier start or fewer weeks",
        )

    @property
    def end(self) -> datetime:
        """When the observation window closes (exclusive); also the outcomes' ``as_of``."""
        return self.start + timedelta(weeks=self.n_weeks)

    @property
    def domain_names(self) -> tuple[str, ...]:
        """The ``domain`` strings, in domain-index order."""
        named = DOMAIN_NAMES[: self.n_domains]
        extra = tuple(f"domain_{k:02d}" for k in range(len(named), self.n_domains))
        return named + extra

    @property
    def type_names(self) -> tuple[str, ...]:
        """The ``learner_type`` strings, in type-index order."""
        return tuple(t.name for t in self.types)
