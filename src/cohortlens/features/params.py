"""Frozen parameter dataclasses of the three feature engines (defaults: docs/FEATURES.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class VelocityParams:
    """Learning velocity: the trend of each learner's ability (hierarchical logistic model).

    Attributes:
        guess_floor: success floor g of the trend model, ``P = g + (1 - g) sigmoid(...)``
            (0.25: four-option items; 0 for open answers). Fixed, not fitted: with the
            difficulty scale it is poorly identified.
        min_graded_events: fewer graded first attempts than this gives a null velocity.
        min_active_weeks: fewer ISO weeks with graded first attempts gives a null velocity.
        max_posterior_sd_share: a velocity whose posterior sd exceeds this share of the
            population spread ``sigma_velocity`` is null (``too_uncertain``): the learner's
            attempts barely narrowed the prior.
        credible_mass: mass of the reported credible interval of the velocity.
        difficulty_prior_events: pseudo-events of the smoothed item error-rate logit.
        fit_sample_permille: learners (by stable hash) whose attempts fit the population.
        max_fit_attempts: cap on graded first attempts in the population fit (whole learners
            in increasing hash order).
        em_iterations: at most this many alternations of the population fit.
        em_tolerance: the alternations stop once kappa, the start-ability prior (logits) and
            ten times the velocity prior (logits / week) move by at most this.
        kappa_bounds: range of the difficulty scale kappa.
        half_life_weeks: half-life of the weekly EMAs of activity (engagement velocity).
        elo_alpha, elo_beta, elo_k_min: next-attempt predictor (validation only): online Elo
            step K(n) = max(alpha / (1 + beta n), k_min) (Pelánek 2016).
        domain_weight: share of each Elo update given to the learner's per-domain offset.
        first_attempts_only: the Elo ability updates only on first attempts of an item.
        elo_guess_floor: success floor of the Elo predictor.
        current_knowledge: predict repeats of an item from the learner's current knowledge of
            it (Pelánek et al. 2017 prior/current model) instead of the prior knowledge.
        current_step_correct: step gamma of the current knowledge after a correct answer,
            ``m += gamma (1 - P)`` (proso-apps production constant 3.4).
        current_step_wrong: step delta after a wrong answer, ``m += delta (0 - P)`` (0.3).
        current_time_shift_s: short-term memory term added to the current knowledge,
            ``time_shift / seconds since the previous attempt of the item`` (80 s).
    """

    guess_floor: float = 0.25
    min_graded_events: int = 20
    min_active_weeks: int = 2
    max_posterior_sd_share: float = 0.9
    credible_mass: float = 0.80
    difficulty_prior_events: float = 5.0
    fit_sample_permille: int = 1000
    max_fit_attempts: int = 200_000
    em_iterations: int = 100
    em_tolerance: float = 1e-3
    kappa_bounds: tuple[float, float] = (0.1, 10.0)
    half_life_weeks: float = 4.0
    elo_alpha: float = 0.8
    elo_beta: float = 0.2
    elo_k_min: float = 0.02
    domain_weight: float = 0.5
    first_attempts_only: bool = True
    elo_guess_floor: float = 0.0
    current_knowledge: bool = True
    current_step_correct: float = 3.4
    current_step_wrong: float = 0.3
    current_time_shift_s: float = 80.0


@dataclass(frozen=True)
class AffinityParams:
    """Domain affinity: the learner's own activity shares and their effective number of domains.

    Attributes:
        miller_madow: add the Miller-Madow bias correction ``(m - 1) / (2 n)`` to the plug-in
            entropy (m domains touched, n events; capped at ``ln m``).
        duration_cap_s: longer durations are capped (idle tabs), in seconds.
        breadth_min_share: a domain counts toward breadth at this share or more.
        specialist_top_share: a top-domain share at or above this makes a specialist.
        specialist_max_effective_domains: fewer effective domains than this make a specialist.
        generalist_min_effective_domains: more effective domains than this make a generalist.
    """

    miller_madow: bool = True
    duration_cap_s: float = 1800.0
    breadth_min_share: float = 0.10
    specialist_top_share: float = 0.70
    specialist_max_effective_domains: float = 1.75
    generalist_min_effective_domains: float = 3.5


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
