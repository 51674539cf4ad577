"""Learner outcomes (completion, churn, revenue) drawn from latent traits, and CUPED covariates.

Pure functions of the truth table and a generator, so the experiments module can redraw
the outcomes of the same population under a treatment (logit shifts, a revenue multiplier).
Every call draws the same uniforms in the same order whatever the shifts, so control and
treatment drawn from equal generators share their noise (common random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from cohortlens.events.schema import OUTCOME_SCHEMA
from cohortlens.simulate._traits import F64, sigmoid

#: Pre-period covariates table (one row per learner), for CUPED / regression adjustment.
PRE_PERIOD_SCHEMA = pa.schema(
    [
        pa.field("learner_id", pa.string(), nullable=False),
        pa.field("pre_events", pa.int64(), nullable=False),
        pa.field("pre_revenue", pa.float64(), nullable=False),
    ]
)

#: Truth columns the outcome model reads.
OUTCOME_INPUTS: tuple[str, ...] = (
    "learner_id",
    "growth_rate",
    "activity_level",
    "dropout_hazard",
    "dropout_week",
    "spend_propensity",
)


@dataclass(frozen=True)
class OutcomeParams:
    """Coefficients of the outcome model (logit scale unless said otherwise).

    Attributes:
        completion_intercept: logit of completing for a reference learner (growth
            ``growth_ref_logits_per_week``, activity ``activity_ref_per_week``, no dropout).
        completion_per_growth: completion logit per logit/week of growth above the reference.
        completion_per_log_activity: completion logit per unit of ln(activity / reference).
        completion_dropout_penalty: completion logit lost by dropping out in the window.
        churn_intercept: logit of churning for a reference learner (hazard
            ``hazard_ref_per_week``, no dropout).
        churn_per_log_hazard: churn logit per unit of ln(dropout_hazard / reference).
        churn_if_dropped: churn logit added by dropping out in the window.
        purchase_intercept: purchase logit is spend_propensity + this.
        revenue_median: median purchase amount at spend_propensity 0 (currency units).
        revenue_per_spend: ln-amount per unit of spend_propensity.
        revenue_log_sd: noise standard deviation of ln amount.
        growth_ref_logits_per_week: reference growth rate.
        activity_ref_per_week: reference activity level.
        hazard_ref_per_week: reference dropout hazard.
    """

    completion_intercept: float = -0.3
    completion_per_growth: float = 10.0
    completion_per_log_activity: float = 0.8
    completion_dropout_penalty: float = 4.0
    churn_intercept: float = -2.0
    churn_per_log_hazard: float = 0.6
    churn_if_dropped: float = 3.5
    purchase_intercept: float = -0.5
    revenue_median: float = 40.0
    revenue_per_spend: float = 0.5
    revenue_log_sd: float = 0.5
    growth_ref_logits_per_week: float = 0.06
    activity_ref_per_week: float = 6.0
    hazard_ref_per_week: float = 0.02


def draw_outcomes(
    truth: pa.Table,
    rng: np.random.Generator,
    *,
    completion_logit_shift: float = 0.0,
    churn_logit_shift: float = 0.0,
    revenue_multiplier: float = 1.0,
    model: OutcomeParams = OutcomeParams(),
) -> pa.Table:
    """Draw one outcome row per truth row (``OUTCOME_SCHEMA``).

    completed ~ Bernoulli(sigmoid(c0 + c_g (growth - g_ref) + c_a ln(activity / a_ref)
    - c_d dropped + completion_logit_shift));
    churned ~ Bernoulli(sigmoid(k0 + k_h ln(hazard / h_ref) + k_d dropped + churn_logit_shift));
    revenue = purchased * exp(ln(median) + r_s s + sd z) * revenue_multiplier with
    purchased ~ Bernoulli(sigmoid(s + purchase_intercept)), s = spend_propensity.
    ``as_of`` is the truth's ``observed_until`` when present, else null.
    """
    if revenue_multiplier < 0:
        raise ValueError("revenue_multiplier must be >= 0")
    cols = _inputs(truth)
    n = truth.num_rows
    u = rng.random((3, n))
    z = rng.standard_normal(n)
    m = model
    dropped = cols["dropped"]
    completion_logit = (
        m.completion_intercept
        + m.completion_per_growth * (cols["growth_rate"] - m.growth_ref_logits_per_week)
        + m.completion_per_log_activity * np.log(cols["activity_level"] / m.activity_ref_per_week)
        - m.completion_dropout_penalty * dropped
        + completion_logit_shift
    )
    churn_logit = (
        m.churn_intercept
        + m.churn_per_log_hazard * np.log(cols["dropout_hazard"] / m.hazard_ref_per_week)
        + m.churn_if_dropped * dropped
        + churn_logit_shift
    )
    revenue = revenue_multiplier * _revenue(cols["spend_propensity"], u[2], z, m)
    if "observed_until" in truth.column_names:
        as_of = truth.column("observed_until").cast(pa.timestamp("us", tz="UTC"))
    else:
        as_of = pa.nulls(n, pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            "learner_id": truth.column("learner_id").cast(pa.string()),
            "completed": pa.array(u[0] < sigmoid(completion_logit)),
            "churned": pa.array(u[1] < sigmoid(churn_logit)),
            "revenue": pa.array(revenue, pa.float64()),
            "as_of": as_of,
        },
        schema=OUTCOME_SCHEMA,
    )


def pre_period_covariates(
    truth: pa.Table,
    rng: np.random.Generator,
    *,
    pre_weeks: int = 4,
    model: OutcomeParams = OutcomeParams(),
) -> pa.Table:
    """Covariates of a notional pre-period, for CUPED (``PRE_PERIOD_SCHEMA``).

    Same latent traits as the outcomes, fresh noise: pre_events ~ Poisson(activity *
    pre_weeks) and pre_revenue follows the revenue model of :func:`draw_outcomes` (no
    treatment). Both correlate with the outcome revenue only through the traits, as a real
    pre-period metric does; ``docs/SIMULATOR.md`` gives the size of that correlation.
    """
    if pre_weeks < 1:
        raise ValueError("pre_weeks must be >= 1")
    cols = _inputs(truth)
    n = truth.num_rows
    events = rng.poisson(cols["activity_level"] * pre_weeks)
    u = rng.random(n)
    z = rng.standard_normal(n)
    return pa.table(
        {
            "learner_id": truth.column("learner_id").cast(pa.string()),
            "pre_events": pa.array(events.astype(np.int64)),
            "pre_revenue": pa.array(_revenue(cols["spend_propensity"], u, z, model)),
        },
        schema=PRE_PERIOD_SCHEMA,
    )


def _revenue(spend: F64, u: F64, z: F64, m: OutcomeParams) -> F64:
    """Zero-inflated lognormal revenue driven by the spend propensity."""
    purchased = u < sigmoid(spend + m.purchase_intercept)
    amount = np.exp(np.log(m.revenue_median) + m.revenue_per_spend * spend + m.revenue_log_sd * z)
    return np.where(purchased, amount, 0.0)


def _inputs(truth: pa.Table) -> dict[str, F64]:
    """The model's inputs as float arrays (``dropped`` = 1.0 if a dropout week is set)."""
    missing = [c for c in OUTCOME_INPUTS if c not in truth.column_names]
    if missing:
        raise ValueError(f"truth table lacks column(s) {', '.join(missing)}")
    out = {
        name: truth.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        for name in ("growth_rate", "activity_level", "dropout_hazard", "spend_propensity")
    }
    out["dropped"] = truth.column("dropout_week").is_valid().to_numpy(zero_copy_only=False)
    out["dropped"] = out["dropped"].astype(np.float64)
    return out
