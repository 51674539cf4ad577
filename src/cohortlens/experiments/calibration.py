"""Validity checks by simulation: do the tests keep their promises?

Used by ``benchmarks/validity_experiments.py`` (full size, figures for docs/VALIDITY.md) and
by the tests (smaller, with binomial tolerance bounds). Data are drawn vectorised, one
matrix per batch of simulated experiments, and reduced to :class:`SufficientStats` rows.

* :func:`aa_false_positive_rate`: share of A/A tests declared significant (should be α);
* :func:`peeking_false_positive_rates`: the same with daily looks, naive fixed-horizon
  peeking versus the always-valid p-value;
* :func:`cuped_narrowing`: achieved CI width ratio of CUPED against the ``sqrt(1 - ρ²)``
  predicted by the covariate's *population* correlation, and CI coverage;
* :func:`segment_false_discoveries`: per-segment analysis of simulated experiments over
  several cohorts (A/A, or an effect in some cohorts): the false-discovery rate across
  segments after the correction, and the power in the cohorts with an effect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from cohortlens.experiments.analysis import compare
from cohortlens.experiments.errors import Verdict
from cohortlens.experiments.sequential import SequentialParams
from cohortlens.experiments.spec import AnalysisConfig, MetricKind, MetricSpec
from cohortlens.experiments.stats import ExperimentStats, SufficientStats

FloatArray = npt.NDArray[np.float64]

#: Mean and standard deviation of exp(0.5·Z), Z standard normal.
_LOGNORMAL_MEAN = math.exp(0.125)
_LOGNORMAL_SD = math.sqrt((math.exp(0.25) - 1.0) * math.exp(0.25))


@dataclass(frozen=True)
class MetricModel:
    """How per-learner values are drawn for one metric kind (same law in both A/A arms).

    Attributes:
        kind: binary (Bernoulli ``rate``), mean (zero-inflated lognormal revenue) or
            ratio (revenue over Poisson sessions).
        rate: success probability (binary) or purchase probability (mean, ratio).
        log_sd: standard deviation of ln(amount) for revenue.
        sessions_mean: mean sessions per learner (ratio denominator is ``1 + Poisson``).
    """

    kind: MetricKind
    rate: float = 0.3
    log_sd: float = 1.0
    sessions_mean: float = 4.0

    def draw(
        self, rng: np.random.Generator, shape: tuple[int, ...]
    ) -> tuple[FloatArray, FloatArray | None]:
        """Per-learner ``y`` (and ``d`` for ratios) with the given shape."""
        if self.kind is MetricKind.BINARY:
            return (rng.random(shape) < self.rate).astype(np.float64), None
        bought = rng.random(shape) < self.rate
        amount = np.exp(3.0 + self.log_sd * rng.standard_normal(shape))
        revenue = np.where(bought, amount, 0.0)
        if self.kind is MetricKind.MEAN:
            return revenue, None
        sessions = 1.0 + rng.poisson(self.sessions_mean, shape)
        return revenue * sessions / self.sessions_mean, sessions.astype(np.float64)


def _stats_rows(y: FloatArray, d: FloatArray | None) -> list[SufficientStats]:
    """One record per row of ``y`` (and ``d``): sums over the last axis."""
    n = y.shape[-1]
    sy, syy = y.sum(-1), (y * y).sum(-1)
    if d is None:
        return [
            SufficientStats(n=n, sum_y=float(a), sum_yy=float(b))
            for a, b in zip(sy, syy, strict=True)
        ]
    sd, sdd, syd = d.sum(-1), (d * d).sum(-1), (y * d).sum(-1)
    return [
        SufficientStats(
            n=n, sum_y=float(a), sum_yy=float(b), sum_d=float(c), sum_dd=float(e), sum_yd=float(f)
        )
        for a, b, c, e, f in zip(sy, syy, sd, sdd, syd, strict=True)
    ]


def aa_false_positive_rate(
    model: MetricModel,
    *,
    n_tests: int,
    n_per_arm: int,
    alpha: float = 0.05,
    seed: int = 0,
    batch: int = 200,
) -> dict[str, Any]:
    """Run ``n_tests`` A/A tests; return the rejection count and rate at ``alpha``."""
    rng = np.random.default_rng(seed)
    rejections = 0
    done = 0
    while done < n_tests:
        k = min(batch, n_tests - done)
        yc, dc = model.draw(rng, (k, n_per_arm))
        yt, dt = model.draw(rng, (k, n_per_arm))
        for c, t in zip(_stats_rows(yc, dc), _stats_rows(yt, dt), strict=True):
            p = compare(c, t, model.kind, alpha=alpha).pvalue
            rejections += bool(p < alpha)
        done += k
    return {
        "kind": model.kind.value,
        "n_tests": n_tests,
        "n_per_arm": n_per_arm,
        "alpha": alpha,
        "rejections": rejections,
        "false_positive_rate": rejections / n_tests,
    }


def peeking_false_positive_rates(
    model: MetricModel,
    *,
    n_tests: int,
    n_looks: int,
    n_per_arm_per_look: int,
    alpha: float = 0.05,
    tuning_n: int | None = None,
    seed: int = 0,
    batch: int = 100,
) -> dict[str, Any]:
    """A/A tests looked at ``n_looks`` times (cumulative data); stop at the first rejection.

    Returns the share of tests ever rejected by (a) the fixed-horizon p-value at any look
    (naive peeking), (b) the always-valid p-value at any look, and (c) the fixed-horizon
    p-value at the last look only (the planned analysis).
    """
    tune = tuning_n if tuning_n is not None else 2 * n_per_arm_per_look * n_looks
    seq = SequentialParams(tuning_n=tune)
    rng = np.random.default_rng(seed)
    naive = always_valid = final = 0
    done = 0
    while done < n_tests:
        k = min(batch, n_tests - done)
        arms = [model.draw(rng, (k, n_looks, n_per_arm_per_look)) for _ in range(2)]
        # Cumulative sums over looks: one statistics record per (test, look).
        rows = []
        for y, d in arms:
            cy, cyy = np.cumsum(y.sum(-1), axis=1), np.cumsum((y * y).sum(-1), axis=1)
            extra = None
            if d is not None:
                extra = (
                    np.cumsum(d.sum(-1), axis=1),
                    np.cumsum((d * d).sum(-1), axis=1),
                    np.cumsum((y * d).sum(-1), axis=1),
                )
            rows.append((cy, cyy, extra))
        for i in range(k):
            hit_naive = hit_av = False
            p_fixed = math.nan
            for look in range(n_looks):
                n = (look + 1) * n_per_arm_per_look
                c, t = (_record(n, r, i, look) for r in rows)
                est = compare(c, t, model.kind, alpha=alpha, sequential=seq)
                p_fixed = est.pvalue
                hit_naive |= p_fixed < alpha
                hit_av |= est.seq_pvalue < alpha
            naive += hit_naive
            always_valid += hit_av
            final += bool(p_fixed < alpha)
        done += k
    return {
        "kind": model.kind.value,
        "n_tests": n_tests,
        "n_looks": n_looks,
        "n_per_arm_per_look": n_per_arm_per_look,
        "alpha": alpha,
        "tuning_n": tune,
        "naive_peeking_rate": naive / n_tests,
        "always_valid_rate": always_valid / n_tests,
        "final_look_rate": final / n_tests,
    }


def _record(
    n: int, row: tuple[FloatArray, FloatArray, tuple[FloatArray, ...] | None], i: int, look: int
) -> SufficientStats:
    cy, cyy, extra = row
    if extra is None:
        return SufficientStats(n=n, sum_y=float(cy[i, look]), sum_yy=float(cyy[i, look]))
    sd, sdd, syd = extra
    return SufficientStats(
        n=n,
        sum_y=float(cy[i, look]),
        sum_yy=float(cyy[i, look]),
        sum_d=float(sd[i, look]),
        sum_dd=float(sdd[i, look]),
        sum_yd=float(syd[i, look]),
    )


def cuped_narrowing(
    *,
    n_per_arm: int,
    correlation: float,
    n_tests: int = 200,
    effect: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """CI width with CUPED over without, against ``sqrt(1 - ρ²)`` for the *population* ρ.

    Revenue-like data: ``y = μ + effect·T + σ·(ρ·x_s + sqrt(1-ρ²)·z)``, where ``x`` is a
    lognormal pre-period value and ``x_s`` its standardisation by the lognormal's
    *population* moments, so ``corr(y, x) = ρ`` exactly in the population. The prediction
    uses that ρ (given, not measured), so it can fail: a wrong θ, a variance term that
    ignores the adjustment, or a reduction computed from the sample itself all show up as a
    gap. Returns the mean achieved width ratio with its standard error over the tests and
    the z-score of the gap, the variance reductions, and the share of CUPED CIs covering
    ``effect`` (the true effect), with the number of tests for a binomial bound.
    """
    rng = np.random.default_rng(seed)
    ratios, reductions, rhos, covered = [], [], [], 0
    for _ in range(n_tests):
        stats = []
        for shift in (0.0, effect):
            zx = rng.standard_normal(n_per_arm)
            x = np.exp(0.5 * zx)
            # Standardise with the lognormal's population moments (not the sample's).
            xs = (x - _LOGNORMAL_MEAN) / _LOGNORMAL_SD
            y = (
                20.0
                + shift
                + 10.0
                * (
                    correlation * xs
                    + math.sqrt(1 - correlation**2) * rng.standard_normal(n_per_arm)
                )
            )
            stats.append(SufficientStats.from_arrays(y, x=x))
            rhos.append(float(np.corrcoef(y, x)[0, 1]))
        est = compare(stats[0], stats[1], MetricKind.MEAN)
        ratios.append(est.std_error / est.std_error_unadjusted)
        reductions.append(est.variance_reduction)
        covered += est.effect_size_ci_lower <= effect <= est.effect_size_ci_upper
    predicted = math.sqrt(1 - correlation**2)
    achieved = float(np.mean(ratios))
    se = float(np.std(ratios, ddof=1) / math.sqrt(n_tests)) if n_tests > 1 else math.nan
    return {
        "n_per_arm": n_per_arm,
        "n_tests": n_tests,
        "population_correlation": correlation,
        "sample_correlation_mean": float(np.mean(rhos)),
        "predicted_width_ratio": predicted,
        "achieved_width_ratio": achieved,
        "achieved_width_ratio_se": se,
        "z": (achieved - predicted) / se if se > 0 else math.nan,
        "predicted_variance_reduction": correlation**2,
        "achieved_variance_reduction": float(np.mean(reductions)),
        "covered": covered,
        "coverage": covered / n_tests,
    }


def _mean_se(total: float, total_sq: float, n: int) -> float:
    """Standard error of a mean from the sum and the sum of squares of ``n`` values."""
    if n < 2:
        return math.nan
    var = max(total_sq - total * total / n, 0.0) / (n - 1)
    return math.sqrt(var / n)


#: Per-arm learners of the 8 default cohorts of :func:`segment_false_discoveries` (unequal,
#: as real cohorts are).
DEFAULT_SEGMENT_SIZES: tuple[int, ...] = (600, 900, 1200, 1500, 1800, 2400, 3000, 4000)


def segment_false_discoveries(
    *,
    n_experiments: int,
    segment_sizes: tuple[int, ...] = DEFAULT_SEGMENT_SIZES,
    effects: Mapping[int, float] | None = None,
    alpha: float = 0.05,
    correction: str = "bh",
    seed: int = 0,
    batch: int = 50,
) -> dict[str, Any]:
    """Simulated experiments analysed per segment: false discoveries across segments.

    Each experiment has ``len(segment_sizes)`` cohorts with ``segment_sizes[s]`` learners per
    arm and cohort-specific baselines (completion rate and purchase rate from 0.15 to 0.50).
    Three metrics (binary completion, mean revenue, ratio revenue per session) go through
    :func:`~cohortlens.experiments.segments.analyze_segments`, which corrects each metric's
    p-values across the segments (``correction``). ``effects`` maps a segment index to a
    relative lift of the treatment (completion rate and revenue × ``1 + lift``); the other
    segments are A/A. Per metric, a *discovery* is a segment whose verdict is significant;
    a *false* one is in a segment without an effect. Returns, per metric, the
    false-discovery rate (mean over experiments of false / max(discoveries, 1), with its
    standard error), the number
    of experiments with at least one false discovery, the power (share of effect segments
    discovered), and the rate of heterogeneity tests with p < ``alpha``.
    """
    from cohortlens.experiments.segments import analyze_segments

    effects = dict(effects or {})
    k_seg = len(segment_sizes)
    if not all(0 <= s < k_seg for s in effects):
        raise ValueError(f"effects name segments outside 0..{k_seg - 1}: {sorted(effects)}")
    rates = np.linspace(0.15, 0.50, k_seg)
    kinds = (MetricKind.BINARY, MetricKind.MEAN, MetricKind.RATIO)
    specs = [
        MetricSpec("completed", MetricKind.BINARY),
        MetricSpec("revenue", MetricKind.MEAN),
        MetricSpec("revenue_per_session", MetricKind.RATIO, denominator="sessions"),
    ]
    config = AnalysisConfig(alpha=alpha)
    rng = np.random.default_rng(seed)
    names = [f"cohort{s}" for s in range(k_seg)]
    fdp = {m.name: 0.0 for m in specs}
    fdp_sq = {m.name: 0.0 for m in specs}
    any_false = dict.fromkeys(fdp, 0)
    found = dict.fromkeys(fdp, 0)
    hetero = dict.fromkeys(fdp, 0)
    done = 0
    while done < n_experiments:
        k = min(batch, n_experiments - done)
        # arm -> segment -> metric -> k records
        drawn: list[list[list[list[SufficientStats]]]] = []
        for arm in (0, 1):
            per_segment = []
            for s, n in enumerate(segment_sizes):
                lift = effects.get(s, 0.0) if arm == 1 else 0.0
                per_metric = []
                for kind in kinds:
                    model = MetricModel(
                        kind, rate=float(rates[s]) * (1 + lift * (kind is MetricKind.BINARY))
                    )
                    y, d = model.draw(rng, (k, n))
                    if kind is not MetricKind.BINARY:
                        y = y * (1.0 + lift)
                    per_metric.append(_stats_rows(y, d))
                per_segment.append(per_metric)
            drawn.append(per_segment)
        for i in range(k):
            segments = {
                names[s]: [
                    ExperimentStats(
                        units={"control": n, "treatment": n},
                        metrics={
                            m.name: {"control": drawn[0][s][j][i], "treatment": drawn[1][s][j][i]}
                            for j, m in enumerate(specs)
                        },
                    )
                ]
                for s, n in enumerate(segment_sizes)
            }
            report = analyze_segments(specs, segments, config, segment_correction=correction)
            for j, m in enumerate(specs):
                hits = [
                    s
                    for s in range(k_seg)
                    if report.segments[names[s]].effects[j].verdict
                    in (Verdict.IMPROVEMENT, Verdict.REGRESSION)
                ]
                false = sum(1 for s in hits if s not in effects)
                share = false / max(len(hits), 1)
                fdp[m.name] += share
                fdp_sq[m.name] += share * share
                any_false[m.name] += false > 0
                found[m.name] += sum(1 for s in hits if s in effects)
                hetero[m.name] += bool(report.heterogeneity[j].pvalue < alpha)
        done += k
    rows = [
        {
            "metric": m.name,
            "kind": m.kind.value,
            "false_discovery_rate": fdp[m.name] / n_experiments,
            "false_discovery_rate_se": _mean_se(fdp[m.name], fdp_sq[m.name], n_experiments),
            "experiments_with_false_discovery": any_false[m.name],
            "power": found[m.name] / (n_experiments * len(effects)) if effects else math.nan,
            "heterogeneity_rejection_rate": hetero[m.name] / n_experiments,
        }
        for m in specs
    ]
    return {
        "n_experiments": n_experiments,
        "segments": k_seg,
        "segment_sizes_per_arm": list(segment_sizes),
        "effects": {names[s]: v for s, v in effects.items()},
        "alpha": alpha,
        "correction": correction,
        "rows": rows,
    }


__all__ = [
    "DEFAULT_SEGMENT_SIZES",
    "MetricModel",
    "aa_false_positive_rate",
    "cuped_narrowing",
    "peeking_false_positive_rates",
    "segment_false_discoveries",
]
