"""Validity of the experiment analysis (figures for docs/VALIDITY.md).

* ``aa_calibration``: 10,000 A/A tests per metric kind; the false-positive rate at α = 0.05
  must lie inside the binomial tolerance bounds ([4.2 %, 5.8 %]).
* ``sequential_calibration``: 2,000 A/A tests per kind looked at daily for 14 days; the
  always-valid p-value must stay within the binomial upper bound of 0.05 while naive
  peeking of the fixed-horizon p-value exceeds it.
* ``ab_recovery``: a 500K-learner A/B simulation on the learner simulator; each injected
  (known) effect must lie inside its 95 % CI.
* ``cuped_calibration``: CUPED's CI narrowing against ``sqrt(1 - ρ²)`` for several ρ, and on
  the simulator's revenue with its pre-period revenue.
* ``srm_check``: a 50/50 design observed at 50.5/49.5 over 1M learners is flagged.
* ``cohort_effect``: ``experiment simulate --learners 500000`` with the effect planted in one
  cohort only, analysed ``--by cohort``: that cohort is found after BH, the heterogeneity
  test gives p < 0.01, and no other cohort is flagged.
* ``segment_fdr``: 1,000 simulated A/A experiments over 8 cohorts analysed per cohort: the
  false-discovery rate across segments must be consistent with <= 0.05 (see the function).

Run: ``.venv/bin/python -m benchmarks.validity_experiments [--quick] [--only NAME ...]
[--out FILE.json]``; it exits 1 when a figure misses its bar.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from scipy import stats as sps

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
    segment_false_discoveries,
)
from cohortlens.experiments.cuped import covariate_correlation
from cohortlens.experiments.reduce import reduce_data
from cohortlens.experiments.segments import analyze_segments
from cohortlens.experiments.simulation import (
    SIMULATED_METRICS,
    ExperimentSimulationParams,
    simulate_experiment,
)


def binomial_bounds(n: int, p: float, tail: float = 1e-4) -> tuple[int, int]:
    """Counts outside [low, high] have probability <= ``tail`` per side at rate ``p``."""
    return int(sps.binom.ppf(tail, n, p)), int(sps.binom.isf(tail, n, p))


def aa_calibration(n_tests: int = 10_000, n_per_arm: int = 2000, seed: int = 1) -> dict[str, Any]:
    """False-positive rate of 10,000 A/A tests per metric kind at α = 0.05.

    Bar: the rejection count inside the binomial tolerance bounds of 0.05 for ``n_tests``
    (probability 1e-4 per side; [4.2 %, 5.8 %] for 10,000 tests).
    """
    low, high = binomial_bounds(n_tests, 0.05)
    rows = [
        aa_false_positive_rate(
            MetricModel(kind), n_tests=n_tests, n_per_arm=n_per_arm, seed=seed + i
        )
        for i, kind in enumerate(MetricKind)
    ]
    return {
        "rows": rows,
        "bounds": [low / n_tests, high / n_tests],
        "pass": all(low <= r["rejections"] <= high for r in rows),
    }


def sequential_calibration(
    n_tests: int = 2000, n_looks: int = 14, per_look: int = 300, seed: int = 10
) -> dict[str, Any]:
    """Daily looks for 14 days: naive peeking vs the always-valid p-value.

    Bar: the always-valid rejection count at most the binomial upper bound of 0.05 for
    ``n_tests`` (probability 1e-4), and naive peeking above it.
    """
    _, high = binomial_bounds(n_tests, 0.05)
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
    ok = all(
        round(r["always_valid_rate"] * n_tests) <= high < round(r["naive_peeking_rate"] * n_tests)
        for r in rows
    )
    return {"rows": rows, "upper_bound": high / n_tests, "pass": ok}


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


def _revenue_correlation(n_learners: int, seed: int) -> float:
    """Correlation of revenue and pre-period revenue in one simulated A/A population."""
    sim = simulate_experiment(ExperimentSimulationParams(n_learners=n_learners, aa=True, seed=seed))
    revenue = next(m for m in SIMULATED_METRICS if m.name == "revenue")
    (stats,) = reduce_to_stats(sim.data, variant_col="variant", metrics=[revenue])
    arms = stats.metrics["revenue"]
    return covariate_correlation(arms["control"] + arms["treatment"])


def cuped_calibration(
    correlations: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9),
    n_per_arm: int = 5000,
    n_tests: int = 400,
    simulator_learners: int = 200_000,
) -> dict[str, Any]:
    """Achieved CUPED narrowing against ``sqrt(1 - ρ²)`` for the *population* ρ; coverage.

    Synthetic rows: ρ is the generating correlation. Bar per ρ: the gap between the mean
    achieved width ratio and the prediction is within 4 standard errors (over the tests)
    and below 1 % relative; the CUPED CIs cover the true effect in a share of tests inside
    the binomial bounds of 0.95 (probability 1e-4 per side).

    Simulator: the population correlation of revenue and pre-period revenue is measured on
    an *independent* simulated population (another seed, ``2 × simulator_learners``
    learners), so the prediction is not computed from the sample the estimator uses. Bar:
    achieved width ratio within 2 % of the prediction.
    """
    lo, hi = (sps.binom.ppf(1e-4, n_tests, 0.95), sps.binom.isf(1e-4, n_tests, 0.95))
    rows = []
    for i, rho in enumerate(correlations):
        r = cuped_narrowing(
            n_per_arm=n_per_arm, correlation=rho, n_tests=n_tests, effect=1.0, seed=i
        )
        r["coverage_bounds"] = [lo / n_tests, hi / n_tests]
        r["pass"] = bool(
            abs(r["z"]) < 4.0
            and abs(r["achieved_width_ratio"] / r["predicted_width_ratio"] - 1) < 0.01
            and lo <= r["covered"] <= hi
        )
        rows.append(r)
    population_rho = _revenue_correlation(2 * simulator_learners, seed=70)
    sim = simulate_experiment(
        ExperimentSimulationParams(n_learners=simulator_learners, aa=True, seed=7)
    )
    revenue = next(m for m in SIMULATED_METRICS if m.name == "revenue")
    (stats,) = reduce_to_stats(sim.data, variant_col="variant", metrics=[revenue])
    arms = stats.metrics["revenue"]
    sample_rho = covariate_correlation(arms["control"] + arms["treatment"])
    e = analyze([revenue], stats).effect("revenue")
    simulator = {
        "learners": simulator_learners,
        "population_correlation": population_rho,
        "population_learners": 2 * simulator_learners,
        "sample_correlation": sample_rho,
        "predicted_width_ratio": math.sqrt(1 - population_rho**2),
        "achieved_width_ratio": e.std_error / e.std_error_unadjusted,
        "predicted_variance_reduction": population_rho**2,
        "achieved_variance_reduction": e.variance_reduction,
    }
    simulator["pass"] = (
        abs(simulator["achieved_width_ratio"] / simulator["predicted_width_ratio"] - 1) < 0.02
    )
    ok = all(r["pass"] for r in rows) and simulator["pass"]
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


def cohort_effect(
    n_learners: int = 500_000, cohort: str = "disengaging", effect: float = 0.1, seed: int = 2024
) -> dict[str, Any]:
    """The effect planted in one cohort only; ``--by cohort`` must find it and nothing else.

    The same as ``cohortlens experiment simulate --learners 500000 --effect 0.1
    --only-cohort disengaging --seed 2024`` then ``experiment analyze ... --by cohort``.
    Bar: the planted cohort is significant after BH across cohorts for the completion,
    revenue and revenue-per-event metrics, their heterogeneity p < 0.01, and no other cohort
    is significant on any metric (churn included).
    """
    params = ExperimentSimulationParams(
        n_learners=n_learners,
        completion_logit_shift=effect,
        churn_logit_shift=-effect,
        revenue_multiplier=1.0 + effect,
        cohort_effect_scale={cohort: 1.0},
        default_cohort_scale=0.0,
        seed=seed,
    )
    start = time.perf_counter()
    sim = simulate_experiment(params)
    simulated_s = time.perf_counter() - start
    reduction = reduce_data(
        sim.data, variant_col="variant", metrics=SIMULATED_METRICS, segment_col="cohort"
    )
    seg = analyze_segments(SIMULATED_METRICS, reduction.segments, by="cohort")
    rows = []
    for h in seg.heterogeneity:
        verdicts = {}
        for name, rep in seg.segments.items():
            e = next(e for e in rep.effects if e.metric == h.metric and e.variant == h.variant)
            verdicts[name] = {
                "effect": e.effect_size,
                "true_effect": sim.cohort_true_effects[name][h.metric],
                "pvalue": e.pvalue,
                "pvalue_bh": e.segment_pvalue,
                "verdict": e.verdict.value,
            }
        rows.append(
            {
                "metric": h.metric,
                "heterogeneity_q": h.q,
                "heterogeneity_pvalue": h.pvalue,
                "segments": verdicts,
            }
        )
    significant = ("improvement", "regression")
    planted_ok = all(
        r["segments"][cohort]["verdict"] in significant and r["heterogeneity_pvalue"] < 0.01
        for r in rows
        if r["metric"] != "churned"
    )
    others_quiet = all(
        v["verdict"] not in significant
        for r in rows
        for name, v in r["segments"].items()
        if name != cohort
    )
    return {
        "n_learners": n_learners,
        "cohort": cohort,
        "effect": effect,
        "seed": seed,
        "simulate_seconds": round(simulated_s, 1),
        "srm_pvalues_holm": dict(seg.srm_pvalues_holm),
        "rows": rows,
        "planted_cohort_found": planted_ok,
        "no_other_cohort_flagged": others_quiet,
        "pass": planted_ok and others_quiet,
    }


def fdr_bar(false_experiments: int, n_experiments: int, alpha: float = 0.05) -> dict[str, Any]:
    """Is an A/A false-discovery count consistent with FDR <= ``alpha``?

    In an A/A experiment every discovery is false, so the false-discovery proportion is 0
    or 1 and the FDR is the chance of any discovery; Benjamini–Hochberg over independent
    segments makes it exactly ``alpha`` (Simes), so an estimate from ``n`` experiments
    scatters around ``alpha``. The bar is a one-sided exact binomial test of
    ``FDR <= alpha`` at level 0.01: fail when ``P(X >= count | alpha) < 0.01``. The
    estimate and its two-sided 95 % Clopper–Pearson interval are reported with it.
    """
    test = sps.binomtest(false_experiments, n_experiments, alpha, alternative="greater")
    ci = sps.binomtest(false_experiments, n_experiments, alpha).proportion_ci(0.95)
    return {
        "fdr": false_experiments / n_experiments,
        "ci95": [ci.low, ci.high],
        "pvalue_fdr_above_alpha": float(test.pvalue),
        "max_count_passing": int(sps.binom.isf(0.01, n_experiments, alpha)),
        "pass": bool(test.pvalue >= 0.01),
    }


def segment_fdr(n_experiments: int = 1000, seed: int = 8) -> dict[str, Any]:
    """1,000 A/A experiments over 8 cohorts (and, for contrast, effects in 2 of 8)."""
    aa = segment_false_discoveries(n_experiments=n_experiments, seed=seed)
    for row in aa["rows"]:
        row["bar"] = fdr_bar(row["experiments_with_false_discovery"], n_experiments)
    mixed = segment_false_discoveries(
        n_experiments=n_experiments, seed=seed + 1, effects={2: 0.2, 6: 0.2}
    )
    uncorrected = segment_false_discoveries(
        n_experiments=n_experiments // 4, seed=seed + 2, correction="none"
    )
    return {
        "aa": aa,
        "effects_in_2_of_8": mixed,
        "aa_without_correction": uncorrected,
        "pass": all(r["bar"]["pass"] for r in aa["rows"]),
    }


#: name -> (function, full-size kwargs, --quick kwargs).
CHECKS: dict[str, tuple[Callable[..., dict[str, Any]], dict[str, Any], dict[str, Any]]] = {
    "srm": (srm_check, {}, {}),
    "aa": (aa_calibration, {}, {"n_tests": 1000}),
    "sequential": (sequential_calibration, {}, {"n_tests": 200}),
    "cuped": (cuped_calibration, {}, {"n_tests": 100, "simulator_learners": 20_000}),
    "ab_recovery": (ab_recovery, {}, {"n_learners": 50_000}),
    "cohort_effect": (cohort_effect, {}, {"n_learners": 50_000, "effect": 0.3}),
    "segment_fdr": (segment_fdr, {}, {"n_experiments": 100}),
}


def missed(results: dict[str, dict[str, Any]]) -> list[str]:
    """The checks whose figure missed its bar (``pass`` false or absent)."""
    return [name for name, r in results.items() if r.get("pass") is not True]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the checks and print each as JSON; exit with status 1 when any misses its bar
    (``SystemExit``, so ``python -m benchmarks.validity`` fails too)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (a few seconds)")
    parser.add_argument("--only", nargs="*", choices=sorted(CHECKS), help="checks to run")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    for name in args.only or list(CHECKS):
        fn, full, quick = CHECKS[name]
        start = time.perf_counter()
        results[name] = fn(**(quick if args.quick else full))
        results[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps({name: results[name]}, indent=2, default=str), flush=True)
    print(json.dumps({k: v["pass"] for k, v in results.items()}))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2, default=str)
    bad = missed(results)
    if bad:
        print(f"MISSED THE BAR: {', '.join(bad)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
