"""Validity checks by simulation: do the tests keep their promises?

Used by ``benchmarks/validity_experiments.py`` (full size, figures for docs/VALIDITY.md) and
by the tests (smaller, with binomial tolerance bounds). Data are drawn vectorised, one
matrix per batch of simulated experiments, and reduced to :class:`SufficientStats` rows.

* :func:`aa_false_positive_rate`: share of A/A tests declared significant (should be α);
* :func:`peeking_false_positive_rates`: the same with daily looks, naive fixed-horizon
  peeking versus the always-valid p-value;
* :func:`cuped_narrowing`: achieved CI width ratio of CUPED against the ``sqrt(1 - ρ²)``
  predicted by the covariate's correlation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from cohortlens.experiments.analysis import compare
from cohortlens.experiments.sequential import SequentialParams
from cohortlens.experiments.spec import MetricKind
from cohortlens.experiments.stats import SufficientStats

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
    """CI width with CUPED over without, against the predicted ``sqrt(1 - ρ²)``.

    Revenue-like data: ``y = μ + σ·(ρ·z_x + sqrt(1-ρ²)·z)`` with a pre-period ``x`` built
    from ``z_x`` (lognormal-skewed), so the achieved correlation of ``y`` and ``x`` is
    measured, not assumed. Also returns the mean achieved variance reduction and the share
    of CUPED CIs covering ``effect``.
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
    rho = float(np.mean(rhos))
    return {
        "n_per_arm": n_per_arm,
        "n_tests": n_tests,
        "target_correlation": correlation,
        "achieved_correlation": rho,
        "predicted_width_ratio": math.sqrt(1 - rho**2),
        "achieved_width_ratio": float(np.mean(ratios)),
        "predicted_variance_reduction": rho**2,
        "achieved_variance_reduction": float(np.mean(reductions)),
        "coverage": covered / n_tests,
    }


__all__ = [
    "MetricModel",
    "aa_false_positive_rate",
    "cuped_narrowing",
    "peeking_false_positive_rates",
]
