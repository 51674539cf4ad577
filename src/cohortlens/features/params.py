"""Frozen parameter dataclasses of the three feature engines (defaults: docs/FEATURES.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class VelocityParams:
    """Learning velocity: online Elo ability trajectory, then an EMA of weekly gains.

    Attributes:
        elo_alpha: numerator of the uncertainty step K(n) = alpha / (1 + beta * n) (Pelánek 2016).
        elo_beta: how fast the step shrinks with n, the learner's earlier graded events.
        elo_k_min: floor of the step, so the ability keeps tracking a learner who grows.
        domain_weight: share of each update given to the learner's per-domain offset
            (0 disables domain offsets; the global ability always gets the full step).
        half_life_weeks: half-life of the EMA over weekly ability gains (and weekly activity).
        min_graded_events: fewer graded events than this gives a null velocity.
        min_active_weeks: fewer weeks with graded events than this gives a null velocity.
        difficulty_prior_events: pseudo-events of the smoothed item error-rate logit.
        first_attempts_only: update ability only on a learner's first attempt of each item
            (repeats measure memory, the retention engine's job); repeats are still predicted.
        burn_in_events: the week in which the learner's ability has absorbed this many
            events is the baseline of the weekly gains (earlier moves are convergence from the
            prior, not learning).
        ability_step: step of the global ability update. ``elo`` (default): K(n) above.
            ``kalman`` (Glicko-style): K = posterior variance, which shrinks with each event's
            Fisher information and grows by ``drift_var_logit2_per_week`` per elapsed week.
        prior_var_logit2: prior variance of the ability (``kalman``).
        drift_var_logit2_per_week: variance added per elapsed week (``kalman``).
        guess_floor: success floor g of the ability model, P = g + (1 - g) sigmoid(...).
        current_knowledge: predict repeats of an item from the learner's current knowledge of
            it (Pelánek et al. 2017 prior/current model) instead of the prior knowledge
            ``theta + theta_d - b_i``. Affects only next-attempt predictions (validation),
            never ``theta`` or the feature columns.
        current_step_correct: step gamma of the current knowledge after a correct answer,
            ``m += gamma (1 - P)`` (proso-apps production constant 3.4).
        current_step_wrong: step delta after a wrong answer, ``m += delta (0 - P)`` (0.3).
        current_time_shift_s: short-term memory term added to the current knowledge,
            ``time_shift / seconds since the previous attempt of the item`` (80 s).
    """

    elo_alpha: float = 0.8
    elo_beta: float = 0.2
    elo_k_min: float = 0.02
    domain_weight: float = 0.5
    half_life_weeks: float = 4.0
    min_graded_events: int = 20
    min_active_weeks: int = 2
    difficulty_prior_events: float = 5.0
    first_attempts_only: bool = True
    guess_floor: float = 0.0
    burn_in_events: int = 1
    ability_step: Literal["elo", "kalman"] = "elo"
    prior_var_logit2: float = 1.0
    drift_var_logit2_per_week: float = 0.01
    current_knowledge: bool = True
    current_step_correct: float = 3.4
    current_step_wrong: float = 0.3
    current_time_shift_s: float = 80.0


@dataclass(frozen=True)
class AffinityParams:
    """Domain affinity: Dirichlet-smoothed activity shares and their normalized entropy.

    Attributes:
        prior_events: total Dirichlet pseudo-count, spread over domains by platform share.
        duration_cap_s: longer durations are capped (idle tabs), in seconds.
        breadth_min_share: a domain counts toward breadth at this (raw) share or more.
        specialist_top_share: top smoothed share at or above this makes a specialist.
        specialist_max_entropy: normalized entropy below this makes a specialist.
        generalist_min_entropy: normalized entropy above this makes a generalist.
    """

    prior_events: float = 2.0
    duration_cap_s: float = 1800.0
    breadth_min_share: float = 0.10
    specialist_top_share: float = 0.70
    specialist_max_entropy: float = 0.30
    generalist_min_entropy: float = 0.70


@dataclass(frozen=True)
class RetentionParams:
    """Retention strength: forgetting curve p = g + (1 - g) 2^(-(gap / h)^kappa) on review pairs.

    Attributes:
        min_gap_hours: repeats closer than this are same-session repeats, not recall.
        reuse_min_gap_days: an item counts as reused when attempted again this long after.
        min_review_pairs: fewer pairs than this gives a null half-life.
        fit_sample_permille: learners (by stable hash) used to fit the population model.
        max_fit_pairs: cap on review pairs used for the population fit.
        em_iterations: at most this many alternations of global fit / per-learner MAP /
            prior update.
        em_tolerance: the alternations stop once no population parameter (logit g,
            ln kappa, the coefficients, mu and sigma of ln half-life) moved by more than
            this in one alternation.
        half_life_bounds_days: clip of every half-life (as in HLR: 15 min .. 274 days).
        credible_mass: mass of the reported credible interval.
        fit_curve_shape: fit the shape kappa of the forgetting curve ``2^(-(t/h)^kappa)``
            with the population (a stretched exponential) instead of keeping the exponential
            curve (kappa = 1). Off by default: on EdNet it predicts recall better, but the
            heavy tail pushes many half-lives to the upper bound (docs/VALIDITY.md).
        curve_shape_bounds: range of kappa allowed in the fit (at most 1: forgetting is
            exponential or heavier-tailed, never faster than exponential).
    """

    min_gap_hours: float = 1.0
    reuse_min_gap_days: float = 1.0
    min_review_pairs: int = 3
    fit_sample_permille: int = 1000
    max_fit_pairs: int = 150_000
    em_iterations: int = 50
    em_tolerance: float = 1e-3
    half_life_bounds_days: tuple[float, float] = (15.0 / 1440.0, 274.0)
    credible_mass: float = 0.80
    fit_curve_shape: bool = False
    curve_shape_bounds: tuple[float, float] = (0.1, 1.0)


@dataclass(frozen=True)
class FeatureParams:
    """All feature parameters; ``asdict()`` is what a run stores next to its features.

    Attributes:
        as_of_us: optional global cut-off (epoch microseconds, UTC). When set, the weekly EMAs
            run to the week of ``as_of`` (silent weeks decay them); when None, each learner's
            EMAs stop at the learner's last active week.
    """

    velocity: VelocityParams = field(default_factory=VelocityParams)
    affinity: AffinityParams = field(default_factory=AffinityParams)
    retention: RetentionParams = field(default_factory=RetentionParams)
    as_of_us: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-serializable) for storing with a run."""
        return asdict(self)
