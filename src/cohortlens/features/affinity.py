"""Domain affinity: Dirichlet-smoothed share of activity per domain and its normalized entropy.

Weights are capped durations where the learner has any (a missing duration takes the learner's
mean), else event counts; they are rescaled to event-equivalents (sum = n events) so the prior's
pseudo-events are comparable: ``p_d = (n * raw_d + A * pi_d) / (n + A)`` with ``pi`` the platform
domain shares. Entropy ``H / ln K`` over the platform's K domains (0 when K = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from cohortlens.features._prep import Prepared
from cohortlens.features.params import AffinityParams
from cohortlens.features.stats import ItemStats

ARCHETYPES = ("specialist", "focused", "generalist")


@nb.njit(cache=True, nogil=True, parallel=True)
def _affinity_kernel(  # pragma: no cover - jit
    starts: np.ndarray,
    domain: np.ndarray,
    duration: np.ndarray,
    prior: np.ndarray,
    prior_events: float,
    duration_cap: float,
    breadth_min: float,
) -> tuple[np.ndarray, ...]:
    n_l = starts.shape[0] - 1
    k = prior.shape[0]
    ent = np.full(n_l, np.nan)
    top = np.full(n_l, -1, np.int64)
    top_share = np.full(n_l, np.nan)
    breadth = np.zeros(n_l, np.int64)
    log_k = np.log(k) if k > 1 else 1.0
    for li in nb.prange(n_l):
        a = starts[li]
        b = starts[li + 1]
        if a == b:
            continue
        n = b - a
        dsum = 0.0
        dcnt = 0
        for e in range(a, b):
            x = duration[e]
            if not np.isnan(x):
                dsum += min(max(x, 0.0), duration_cap)
                dcnt += 1
        use_dur = dcnt > 0 and dsum > 0.0
        fill = dsum / dcnt if dcnt > 0 else 0.0
        w = np.zeros(k)
        total = 0.0
        for e in range(a, b):
            if use_dur:
                x = duration[e]
                v = fill if np.isnan(x) else min(max(x, 0.0), duration_cap)
            else:
                v = 1.0
            w[domain[e]] += v
            total += v
        h = 0.0
        best = -1.0
        best_d = 0
        nb_ = 0
        for d in range(k):
            raw = w[d] / total
            if raw >= breadth_min:
                nb_ += 1
            p = (n * raw + prior_events * prior[d]) / (n + prior_events)
            if p > 0.0:
                h -= p * np.log(p)
            if p > best:
                best = p
                best_d = d
        ent[li] = h / log_k if k > 1 else 0.0
        top[li] = best_d
        top_share[li] = best
        breadth[li] = nb_
    return ent, top, top_share, breadth


@dataclass(frozen=True)
class AffinityResult:
    """Per-learner affinity columns (learner order of the ``Prepared`` input)."""

    entropy_norm: np.ndarray
    top_domain: np.ndarray
    top_share: np.ndarray
    breadth: np.ndarray
    archetype: np.ndarray


def archetype_codes(
    entropy_norm: np.ndarray, top_share: np.ndarray, n_domains: int, params: AffinityParams
) -> np.ndarray:
    """0 specialist, 1 focused, 2 generalist, -1 undefined (one platform domain or no events)."""
    code = np.where(
        (top_share >= params.specialist_top_share) | (entropy_norm < params.specialist_max_entropy),
        0,
        np.where(entropy_norm > params.generalist_min_entropy, 2, 1),
    )
    code = np.where(np.isnan(entropy_norm), -1, code)
    if n_domains < 2:
        code[:] = -1
    return code.astype(np.int64)


def compute_affinity(prep: Prepared, items: ItemStats, params: AffinityParams) -> AffinityResult:
    """Smoothed shares, normalized entropy, top domain, breadth and archetype per learner."""
    prior = np.ascontiguousarray(items.domain_share, dtype=np.float64)
    ent, top, share, breadth = _affinity_kernel(
        prep.starts,
        prep.domain,
        prep.duration_s,
        prior,
        params.prior_events,
        params.duration_cap_s,
        params.breadth_min_share,
    )
    arch = archetype_codes(ent, share, len(prior), params)
    return AffinityResult(ent, top, share, breadth, arch)
