"""Latent learner traits and the item bank: the ground truth every event is drawn from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cohortlens.simulate.params import WEEK_S, SimulationParams

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: Microseconds per second (the event clock is int64 microseconds since ``start``).
US = 1_000_000


@dataclass(frozen=True)
class Traits:
    """Per-learner latent traits (row i = learner i), as arrays.

    ``dropout_week`` is -1 for learners who never drop out inside the window, and then
    ``dropout_at_us`` equals the window length; times are microseconds since ``start``.
    """

    type_idx: I64
    ability0: F64
    growth_rate: F64
    main_domain: I64
    pref: F64
    half_life_days: F64
    activity_level: F64
    dropout_hazard: F64
    dropout_week: I64
    dropout_at_us: I64
    guess_floor: F64
    spend_propensity: F64
    study_hour: F64
    perm_step: I64
    perm_offset: I64

    @property
    def n(self) -> int:
        """Number of learners."""
        return int(self.type_idx.shape[0])


def type_table(params: SimulationParams, name: str) -> F64:
    """One field of every learner type as an array indexed by type (gathered per learner)."""
    return np.array([float(getattr(t, name)) for t in params.types], dtype=np.float64)


def focus_table(params: SimulationParams) -> F64:
    """Each type's mean share on its main domain (``1 / n_domains`` when it has none)."""
    k = params.n_domains
    return np.array(
        [1.0 / k if t.pref_focus_share is None else t.pref_focus_share for t in params.types]
    )


def draw_traits(params: SimulationParams, rng: np.random.Generator, n: int | None = None) -> Traits:
    """Draw ``n`` learners' types and traits (default: all of them) in one vectorized pass.

    Traits are independent given the type (see docs/SIMULATOR.md for the distributions).
    """
    n, k = params.n_learners if n is None else n, params.n_domains
    shares = np.asarray(params.type_shares, dtype=np.float64)
    type_idx = rng.choice(len(shares), size=n, p=shares / shares.sum()).astype(np.int64)

    def gather(name: str) -> F64:
        return type_table(params, name)[type_idx]

    z = rng.standard_normal((6, n))
    ability0 = gather("ability0_mean_logits") + gather("ability0_sd_logits") * z[0]
    growth = gather("growth_mean_logits_per_week") + gather("growth_sd_logits_per_week") * z[1]
    half_life = gather("half_life_median_days") * np.exp(gather("half_life_log_sd") * z[2])
    activity = gather("activity_median_per_week") * np.exp(gather("activity_log_sd") * z[3])
    hazard = sigmoid(
        logit(gather("dropout_hazard_median_per_week")) + gather("dropout_hazard_logit_sd") * z[4]
    )
    spend = gather("spend_mean_logit") + gather("spend_sd_logit") * z[5]

    main_domain = rng.integers(0, k, size=n).astype(np.int64)
    pref = _draw_preferences(params, type_idx, main_domain, rng)

    g_mean, g_conc = gather("guess_floor_mean"), gather("guess_floor_concentration")
    guess_floor = rng.beta(g_mean * g_conc, (1.0 - g_mean) * g_conc)

    # Weeks survived ~ Geometric(hazard): the learner drops out during week (weeks - 1),
    # at a uniform moment of that week; surviving all n_weeks means "never" (-1).
    weeks_active = rng.geometric(hazard).astype(np.int64)
    moment = rng.random(n)
    window_us = params.n_weeks * WEEK_S * US
    drops = weeks_active <= params.n_weeks
    dropout_week = np.where(drops, weeks_active - 1, -1)
    dropout_at_us = np.where(
        drops, ((weeks_active - 1 + moment) * WEEK_S * US).astype(np.int64), window_us
    )

    study_hour = rng.uniform(7.0, 22.0, size=n)
    perm_step = _coprime_steps(params.n_items_per_domain, n, rng)
    perm_offset = rng.integers(0, params.n_items_per_domain, size=(n, k), dtype=np.int64)
    return Traits(
        type_idx=type_idx,
        ability0=ability0,
        growth_rate=growth,
        main_domain=main_domain,
        pref=pref,
        half_life_days=half_life,
        activity_level=activity,
        dropout_hazard=hazard,
        dropout_week=dropout_week,
        dropout_at_us=dropout_at_us,
        guess_floor=guess_floor,
        spend_propensity=spend,
        study_hour=study_hour,
        perm_step=perm_step,
        perm_offset=perm_offset,
    )


def draw_item_difficulties(params: SimulationParams, rng: np.random.Generator) -> F64:
    """Item difficulties (logits), shape (n_domains, n_items_per_domain).

    b = mu_d + e with mu_d ~ N(0, domain_sd^2) and e ~ N(0, item_sd^2).
    """
    mu = params.domain_difficulty_sd_logits * rng.standard_normal(params.n_domains)
    spread = params.item_difficulty_sd_logits * rng.standard_normal(
        (params.n_domains, params.n_items_per_domain)
    )
    return mu[:, None] + spread


def normalized_entropy(shares: F64) -> F64:
    """Row-wise Shannon entropy H / ln K of share vectors (0 ln 0 = 0)."""
    k = shares.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(shares > 0, shares * np.log(shares), 0.0)
    return np.asarray(-terms.sum(axis=1) / np.log(k), dtype=np.float64)


def _draw_preferences(
    params: SimulationParams,
    type_idx: I64,
    main_domain: I64,
    rng: np.random.Generator,
) -> F64:
    """Dirichlet(c * m) preference shares, m = focus on the main domain, rest spread evenly.

    Drawn as normalized Gamma(alpha, 1) variates so every learner can have its own alpha.
    """
    n, k = type_idx.shape[0], params.n_domains
    focus = focus_table(params)[type_idx]
    conc = type_table(params, "pref_concentration")[type_idx]
    mean = np.repeat(((1.0 - focus) / (k - 1))[:, None], k, axis=1)
    mean[np.arange(n), main_domain] = focus
    gam = rng.gamma(conc[:, None] * mean)
    total = gam.sum(axis=1, keepdims=True)
    # A row of all-underflowed draws (vanishingly rare) falls back to its mean vector.
    safe = np.where(total > 0, gam / np.where(total > 0, total, 1.0), mean)
    return np.asarray(safe, dtype=np.float64)


def _coprime_steps(n_items: int, size: int, rng: np.random.Generator) -> I64:
    """Steps a with gcd(a, n_items) = 1, so k -> (a k + b) mod n_items is a permutation."""
    if n_items == 1:
        return np.ones(size, dtype=np.int64)
    steps = rng.integers(1, n_items, size=size, dtype=np.int64)
    bad = np.gcd(steps, n_items) != 1
    while bad.any():
        steps[bad] = rng.integers(1, n_items, size=int(bad.sum()), dtype=np.int64)
        bad = np.gcd(steps, n_items) != 1
    return steps


def sigmoid(x: F64) -> F64:
    """Logistic function."""
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def logit(p: F64) -> F64:
    """Log-odds."""
    return np.asarray(np.log(p) - np.log1p(-p), dtype=np.float64)
