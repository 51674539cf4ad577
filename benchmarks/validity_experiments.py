"""Validity of the experiment analysis (figures for docs/VALIDITY.md).

* ``aa_calibration``: 2,000 A/A tests per metric kind; the false-positive rate at α = 0.05
  must lie in [0.04, 0.06].
* ``sequential_calibration``: 2,000 A/A tests per kind looked at daily for 14 days; the
  always-valid p-value must stay <= 0.05 while naive peeking of the fixed-horizon p-value
  exceeds it.
* ``ab_recovery``: a 500K-learner A/B simulation on the learner simulator; each injected
  (known) effect must lie inside its 95 % CI.
* ``cuped_calibration``: CUPED's CI narrowing against ``sqrt(1 - ρ²)`` for several ρ, and on
  the simulator's revenue with its pre-period revenue.
* ``srm_check``: a 50/50 design observed at 50.5/49.5 over 1M learners is flagged.

Run: ``.venv/bin/python -m benchmarks.validity_experiments [--quick] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

from cohortlens.experiments import (
    AnalysisConfig,
    MetricKind,
    SequentialParams,
    analyze,
    check_srm,
    reduce_to_stats,
)
from cohortlens.experiments.calibration import (
    MetricModel,
    aa_false_positive_rate,
    cuped_narrowing,
    peeking_false_positive_rates,
)
from cohortlens.experiments.cuped import covariate_correlation
from cohortlens.experiments.simulation import (
    SIMULATED_METRICS,
    ExperimentSimulationParams,
    simulate_experiment,
)


def aa_calibration(n_tests: int = 2000, n_per_arm: int = 2000, seed: int = 1) -> dict[str, Any]:
    """False-positive rate of 2,000 A/A tests per metric kind (target [0.04, 0.06])."""
    rows = [
        aa_false_positive_rate(
            MetricModel(kind), n_tests=n_tests, n_per_arm=n_per_arm, seed=seed + i
        )
        for i, kind in enumerate(MetricKind)
    ]
    return {"rows": rows, "pass": all(0.04 <= r["false_positive_rate"] <= 0.06 for r in rows)}


def sequential_calibration(
    n_tests: int = 2000, n_looks: int = 14, per_look: int = 300, seed: int = 10
) -> dict[str, Any]:
    """Daily looks for 14 days: naive peeking vs the always-valid p-value."""
    rows = [
        peeking_false_positive_rates(
            MetricModel(kind),
            n_tests=n_tests,
            n_looks=n_looks,
            n_per_arm_per_look=per_look,
            seed=seed + i,
        )
        for i, kind in enumerate(MetricKind)
    ]
    ok = all(r["always_valid_rate"] <= 0.05 < r["naive_peeking_rate"] for r in rows)
    return {"rows": rows, "pass": ok}


def ab_recovery(n_learners: int = 500_000, seed: int = 2024) -> dict[str, Any]:
    """500K-learner simulated A/B test: is each true effect inside its 95 % CI?"""
    params = ExperimentSimulationParams(
        n_learners=n_learners,
        completion_logit_shift=0.05,
        churn_logit_shift=-0.05,
        revenue_multiplier=1.03,
        cohort_effect_scale={"disengaging": 2.0, "fast_specialist": 0.5},
        seed=seed,
    )
    start = time.perf_counter()
    sim = simulate_experiment(params)
    simulated_s = time.perf_counter() - start
    periods = reduce_to_stats(
        sim.data, variant_col="variant", metrics=SIMULATED_METRICS, period_col="day"
    )
    report = analyze(
        SIMULATED_METRICS, periods, AnalysisConfig(sequential=SequentialParams(tuning_n=n_learners))
    )
    rows = []
    for e in report.effects:
        truth = sim.true_effects[e.metric]
        rows.append(
            {
                "metric": e.metric,
                "true_effect": truth,
                "estimate": e.effect_size,
                "ci_lower": e.effect_size_ci_lower,
                "ci_upper": e.effect_size_ci_upper,
                "covered": e.effect_size_ci_lower <= truth <= e.effect_size_ci_upper,
                "seq_ci_lower": e.seq_ci_lower,
                "seq_ci_upper": e.seq_ci_upper,
                "seq_covered": e.seq_ci_lower <= truth <= e.seq_ci_upper,
                "pvalue": e.pvalue,
                "seq_pvalue": e.seq_pvalue,
                "verdict": e.verdict.value,
                "variance_reduction": e.variance_reduction,
            }
        )
    return {
        "n_learners": n_learners,
        "simulate_seconds": round(simulated_s, 1),
        "srm_pvalue": report.srm.pvalue,
        "rows": rows,
        "pass": all(r["covered"] for r in rows),
    }


def cuped_calibration(
    correlations: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9),
    n_per_arm: int = 5000,
    n_tests: int = 200,
    simulator_learners: int = 200_000,
) -> dict[str, Any]:
    """Achieved vs predicted CI narrowing; plus the simulator's revenue with pre-period revenue."""
    rows = [
        cuped_narrowing(n_per_arm=n_per_arm, correlation=rho, n_tests=n_tests, effect=1.0, seed=i)
        for i, rho in enumerate(correlations)
    ]
    sim = simulate_experiment(
        ExperimentSimulationParams(n_learners=simulator_learners, aa=True, seed=7)
    )
    revenue = next(m for m in SIMULATED_METRICS if m.name == "revenue")
    (stats,) = reduce_to_stats(sim.data, variant_col="variant", metrics=[revenue])
    arms = stats.metrics["revenue"]
    rho = covariate_correlation(arms["control"] + arms["treatment"])
    e = analyze([revenue], stats).effect("revenue")
    simulator = {
        "learners": simulator_learners,
        "correlation": rho,
        "predicted_width_ratio": math.sqrt(1 - rho**2),
        "achieved_width_ratio": e.std_error / e.std_error_unadjusted,
        "achieved_variance_reduction": e.variance_reduction,
    }
    ok = all(abs(r["achieved_width_ratio"] / r["predicted_width_ratio"] - 1) < 0.02 for r in rows)
    ok &= abs(simulator["achieved_width_ratio"] / simulator["predicted_width_ratio"] - 1) < 0.02
    return {"rows": rows, "simulator": simulator, "pass": ok}


def srm_check() -> dict[str, Any]:
    """The acceptance example: 50.5/49.5 of 1M learners under a 50/50 design."""
    r = check_srm({"control": 505_000, "treatment": 495_000}, {"control": 0.5, "treatment": 0.5})
    return {
        "statistic": r.statistic,
        "pvalue": r.pvalue,
        "flagged": r.flagged,
        "pass": r.flagged and r.pvalue < 1e-3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (a few seconds)")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    results: dict[str, Any] = {}
    for name, fn, kwargs in (
        ("srm", srm_check, {}),
        ("aa", aa_calibration, {"n_tests": 2000 // scale}),
        ("sequential", sequential_calibration, {"n_tests": 2000 // scale}),
        (
            "cuped",
            cuped_calibration,
            {"n_tests": 200 // scale, "simulator_learners": 200_000 // scale},
        ),
        ("ab_recovery", ab_recovery, {"n_learners": 500_000 // scale}),
    ):
        start = time.perf_counter()
        results[name] = fn(**kwargs)  # type: ignore[operator]
        results[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps({name: results[name]}, indent=2, default=str), flush=True)
    print(json.dumps({k: v["pass"] for k, v in results.items()}))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2, default=str)
    missed = [k for k, v in results.items() if not v["pass"]]
    if missed:
        print(f"MISSED THE BAR: {', '.join(missed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
