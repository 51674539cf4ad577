"""Simulated A/B (and A/A) tests on the learner simulator, with a known true effect.

The population comes from :mod:`cohortlens.simulate` (latent learner types and traits).
Learners are split by the production hash (:func:`cohortlens.experiments.assignment.assign`).
Each learner's outcome is drawn twice from the *same* random numbers, once without and once
with the treatment (the simulator's common-random-numbers guarantee), so the table also
carries both potential outcomes and the true effect is known exactly for this population.

The treatment is *cohort-personalised*: its effect (a completion logit shift, a churn logit
shift, a revenue multiplier) can be scaled per cohort (the learner's latent type), e.g.
``cohort_effect_scale={"disengaging": 2.0, "fast_specialist": 0.0}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cohortlens.experiments.assignment import ExperimentDesign, Variant, assign
from cohortlens.experiments.spec import MetricKind, MetricRole, MetricSpec
from cohortlens.simulate.params import DEFAULT_TYPES

#: The simulated cohorts: the simulator's latent learner types (the ``cohort`` column).
COHORTS: tuple[str, ...] = tuple(t.name for t in DEFAULT_TYPES)

#: Columns of the per-learner output of :func:`simulate_experiment`.
SIMULATED_EXPERIMENT_SCHEMA = pa.schema(
    [
        pa.field("learner_id", pa.string(), nullable=False),
        pa.field("variant", pa.string(), nullable=False),
        pa.field("cohort", pa.string(), nullable=False),
        pa.field("day", pa.int32(), nullable=False),
        pa.field("completed", pa.bool_(), nullable=False),
        pa.field("churned", pa.bool_(), nullable=False),
        pa.field("revenue", pa.float64(), nullable=False),
        pa.field("events", pa.float64(), nullable=False),
        pa.field("pre_revenue", pa.float64(), nullable=False),
        pa.field("pre_events", pa.float64(), nullable=False),
    ]
)

#: The metrics the simulated data supports, ready for ``analyze`` / ``reduce_to_stats``.
SIMULATED_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("completed", MetricKind.BINARY),
    MetricSpec("churned", MetricKind.BINARY, role=MetricRole.GUARDRAIL, lower_is_better=True),
    MetricSpec("revenue", MetricKind.MEAN, covariate="pre_revenue"),
    MetricSpec("revenue_per_event", MetricKind.RATIO, numerator="revenue", denominator="events"),
)


@dataclass(frozen=True)
class ExperimentSimulationParams:
    """One simulated experiment.

    Attributes:
        n_learners: learners in the population (all enter the experiment).
        completion_logit_shift: treatment effect on the completion logit.
        churn_logit_shift: treatment effect on the churn logit (negative = less churn).
        revenue_multiplier: treatment multiplies revenue by this (1 = no effect).
        cohort_effect_scale: per cohort (latent type) multiplier of the logit shifts and of
            ``revenue_multiplier - 1``; cohorts not listed get ``default_cohort_scale``.
            Names must be the simulator's latent types (``COHORTS``).
        default_cohort_scale: the multiplier of cohorts not listed (1; 0 plants the effect
            in the listed cohorts only).
        treatment_share: share of learners in treatment.
        aa: A/A mode: both arms get the control experience (all effects ignored).
        n_days: learners enter uniformly over this many days (the ``day`` column), for
            sequential looks.
        n_weeks: simulated weeks of activity (window of the outcome model; the simulator's
            ``n_weeks``). The simulator's cost grows with learners × weeks (500,000
            learners × 2 weeks took about 30 s on a 2-core machine).
        seed: master seed (population, split salt, outcomes).
    """

    n_learners: int = 100_000
    completion_logit_shift: float = 0.0
    churn_logit_shift: float = 0.0
    revenue_multiplier: float = 1.0
    cohort_effect_scale: Mapping[str, float] = field(default_factory=dict)
    default_cohort_scale: float = 1.0
    treatment_share: float = 0.5
    aa: bool = False
    n_days: int = 14
    n_weeks: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.n_learners < 2:
            problems.append(f"n_learners == {self.n_learners}, must be >= 2")
        if self.revenue_multiplier < 0:
            problems.append(f"revenue_multiplier == {self.revenue_multiplier}, must be >= 0")
        if not 0.0 < self.treatment_share < 1.0:
            problems.append(f"treatment_share == {self.treatment_share}, must be in (0, 1)")
        if self.n_days < 1:
            problems.append(f"n_days == {self.n_days}, must be >= 1")
        if self.n_weeks < 1:
            problems.append(f"n_weeks == {self.n_weeks}, must be >= 1")
        if self.seed < 0:
            problems.append(f"seed == {self.seed}, must be >= 0")
        unknown = sorted(set(self.cohort_effect_scale) - set(COHORTS))
        if unknown:
            problems.append(
                f"cohort_effect_scale names unknown cohort(s) {', '.join(unknown)}; "
                f"the simulator's cohorts are {', '.join(COHORTS)}"
            )
        scales = [*self.cohort_effect_scale.values(), self.default_cohort_scale]
        if not all(math.isfinite(v) for v in scales):
            problems.append("cohort effect scales must be finite")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class SimulatedExperiment:
    """The simulated per-learner data and the true effects.

    Attributes:
        data: per-learner rows (``SIMULATED_EXPERIMENT_SCHEMA``): what an analyst sees.
        potential_outcomes: per learner, outcomes without (``*_0``) and with (``*_1``)
            treatment, for ground-truth checks.
        true_effects: metric -> true absolute effect of treatment on this population
            (mean over all learners of outcome_1 - outcome_0; ratio metrics: difference of
            the population ratios). Zero in A/A mode.
        cohort_true_effects: cohort -> the same, over that cohort's learners.
    """

    data: pa.Table
    potential_outcomes: pa.Table
    true_effects: Mapping[str, float]
    cohort_true_effects: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


def simulate_experiment(params: ExperimentSimulationParams) -> SimulatedExperiment:
    """Simulate the population, split it by hash, and draw outcomes with the true effect."""
    from cohortlens.simulate import SimulationParams, draw_outcomes, pre_period_covariates, simulate

    sim = simulate(
        SimulationParams(n_learners=params.n_learners, n_weeks=params.n_weeks, seed=params.seed)
    )
    truth = sim.truth
    n = truth.num_rows
    seeds = np.random.SeedSequence([params.seed, 0xE7]).spawn(3)
    outcome_seed, pre_rng, day_rng = (
        seeds[0],
        np.random.default_rng(seeds[1]),
        np.random.default_rng(seeds[2]),
    )
    cohort = truth.column("learner_type").to_numpy(zero_copy_only=False).astype(str)

    def draw(scale: float) -> dict[str, np.ndarray]:
        # The same seed for every draw: common random numbers across the potential outcomes.
        table = draw_outcomes(
            truth,
            np.random.default_rng(outcome_seed),
            completion_logit_shift=scale * params.completion_logit_shift,
            churn_logit_shift=scale * params.churn_logit_shift,
            revenue_multiplier=1.0 + scale * (params.revenue_multiplier - 1.0),
        )
        return {
            c: table.column(c).to_numpy(zero_copy_only=False)
            for c in ("completed", "churned", "revenue")
        }

    base = draw(0.0)
    treated = {k: v.copy() for k, v in base.items()}
    if not params.aa:
        names, code = np.unique(cohort, return_inverse=True)
        scales = np.array(
            [params.cohort_effect_scale.get(c, params.default_cohort_scale) for c in names]
        )[code]
        for scale in np.unique(scales):
            if scale == 0.0:
                continue  # common random numbers: a zero effect draws the control outcomes
            rows = scales == scale
            drawn = draw(float(scale))
            for k in treated:
                treated[k][rows] = drawn[k][rows]

    design = ExperimentDesign(
        name=f"simulated-{params.seed}",
        variants=(
            Variant("control", 1.0 - params.treatment_share),
            Variant("treatment", params.treatment_share),
        ),
    )
    variant = assign(truth.column("learner_id"), design).column("variant")
    is_t = pc.equal(variant, "treatment").to_numpy(zero_copy_only=False)
    observed = {k: np.where(is_t, treated[k], base[k]) for k in base}
    pre = pre_period_covariates(truth, pre_rng)
    events = truth.column("n_events").to_numpy().astype(np.float64)
    data = pa.table(
        {
            "learner_id": truth.column("learner_id"),
            "variant": variant,
            "cohort": truth.column("learner_type"),
            "day": pa.array(day_rng.integers(1, params.n_days + 1, n).astype(np.int32)),
            "completed": pa.array(observed["completed"]),
            "churned": pa.array(observed["churned"]),
            "revenue": pa.array(observed["revenue"]),
            "events": pa.array(events),
            "pre_revenue": pre.column("pre_revenue"),
            "pre_events": pa.array(pre.column("pre_events").to_numpy().astype(np.float64)),
        },
        schema=SIMULATED_EXPERIMENT_SCHEMA,
    )
    potential = pa.table(
        {"learner_id": truth.column("learner_id")}
        | {f"{k}_0": pa.array(v) for k, v in base.items()}
        | {f"{k}_1": pa.array(v) for k, v in treated.items()}
    )
    true_effects = _true_effects(base, treated, events, np.ones(n, dtype=bool))
    by_cohort = {c: _true_effects(base, treated, events, cohort == c) for c in np.unique(cohort)}
    return SimulatedExperiment(
        data=data,
        potential_outcomes=potential,
        true_effects=true_effects,
        cohort_true_effects=by_cohort,
    )


def _true_effects(
    base: dict[str, np.ndarray],
    treated: dict[str, np.ndarray],
    events: np.ndarray,
    rows: np.ndarray,
) -> dict[str, float]:
    """Mean over ``rows`` of outcome_1 - outcome_0 (ratio: difference of the ratios)."""
    if not rows.any():
        return dict.fromkeys(("completed", "churned", "revenue", "revenue_per_event"), math.nan)
    diff = {k: treated[k][rows].astype(float) - base[k][rows].astype(float) for k in base}
    total_events = float(events[rows].sum())
    return {
        "completed": float(diff["completed"].mean()),
        "churned": float(diff["churned"].mean()),
        "revenue": float(diff["revenue"].mean()),
        "revenue_per_event": float(diff["revenue"].sum() / total_events)
        if total_events > 0
        else math.nan,
    }


__all__ = [
    "COHORTS",
    "SIMULATED_EXPERIMENT_SCHEMA",
    "SIMULATED_METRICS",
    "ExperimentSimulationParams",
    "SimulatedExperiment",
    "simulate_experiment",
]
