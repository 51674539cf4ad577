"""A generative model of a learning platform with known ground truth.

Latent learner types draw traits (ability growth, domain preferences, memory half-life,
activity, dropout hazard, guess floor); events, outcomes and a truth table follow. The
feature engines and cohort discovery are validated against it. See docs/SIMULATOR.md.
"""

from cohortlens.simulate._model import (
    BLOCK_LEARNERS,
    EVENT_TRUTH_SCHEMA,
    ITEMS_SCHEMA,
    Simulation,
    SimulationFiles,
    simulate,
    simulate_to_parquet,
    truth_schema,
    write_simulation,
)
from cohortlens.simulate.outcomes import (
    PRE_PERIOD_SCHEMA,
    OutcomeParams,
    draw_outcomes,
    pre_period_covariates,
)
from cohortlens.simulate.params import (
    CRAMMER,
    DEFAULT_TYPE_SHARES,
    DEFAULT_TYPES,
    DISENGAGING,
    FAST_SPECIALIST,
    STEADY_GENERALIST,
    LearnerTypeParams,
    SimulationParams,
)

__all__ = [
    "BLOCK_LEARNERS",
    "CRAMMER",
    "DEFAULT_TYPES",
    "DEFAULT_TYPE_SHARES",
    "DISENGAGING",
    "EVENT_TRUTH_SCHEMA",
    "FAST_SPECIALIST",
    "ITEMS_SCHEMA",
    "PRE_PERIOD_SCHEMA",
    "STEADY_GENERALIST",
    "LearnerTypeParams",
    "OutcomeParams",
    "Simulation",
    "SimulationFiles",
    "SimulationParams",
    "draw_outcomes",
    "pre_period_covariates",
    "simulate",
    "simulate_to_parquet",
    "truth_schema",
    "write_simulation",
]
