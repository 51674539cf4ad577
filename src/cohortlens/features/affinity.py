"""Domain affinity: how a learner's activity spreads over domains, from the learner's own events.

Weights are capped durations where the learner has any (a missing duration takes the learner's
mean), else event counts. Raw shares ``r_d = W_d / W``; the plug-in entropy
``H = -sum r_d ln r_d`` gets the Miller-Madow correction ``(m - 1) / (2 n)`` (m domains touched,
n events; capped at ``ln m``), and the feature is the **effective number of domains**
``exp(H)`` (1 = one domain; k = k domains used equally). Nothing depends on how many domains
the platform (other learners) has.
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
    n_domains: int,
    miller_madow: bool,
    duration_cap: float,
    breadth_min: float,
) -> tuple[np.ndarray, ...]:
    n_l = starts.shape[0] - 1
    k = n_domains
    ent = np.full(n_l, np.nan)
    top = np.full(n_l, -1, np.int64)
    top_share = np.full(n_l, np.nan)
    breadth = np.zeros(n_l, np.int64)
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
        m = 0
        for d in range(k):
            raw = w[d] / total
            if raw >= breadth_min:
                nb_ += 1
            if raw > 0.0:
                h -= raw * np.log(raw)
                m += 1
            if raw > best:
                best = raw
                best_d = d
        if miller_madow and m > 1:
            h = min(h + (m - 1) / (2.0 * n), np.log(m))
        ent[li] = h
        top[li] = best_d
        top_share[li] = best
        breadth[li] = nb_
    return ent, top, top_share, breadth


@dataclass(frozen=True)
class AffinityResult:
    """Per-learner affinity columns (learner order of the ``Prepared`` input)."""

    entropy_nats: np.ndarray
    effective_domains: np.ndarray
    top_domain: np.ndarray
    top_share: np.ndarray
    breadth: np.ndarray
    archetype: np.ndarray


def archetype_codes(
    effective_domains: np.ndarray, top_share: np.ndarray, params: AffinityParams
) -> np.ndarray:
    """0 specialist, 1 focused, 2 generalist, -1 undefined (no events)."""
    code = np.where(
        (top_share >= params.specialist_top_share)
        | (effective_domains < params.specialist_max_effective_domains),
        0,
        np.where(effective_domains > params.generalist_min_effective_domains, 2, 1),
    )
    return np.where(np.isnan(effective_domains), -1, code).astype(np.int64)


def compute_affinity(prep: Prepared, items: ItemStats, params: AffinityParams) -> AffinityResult:
    """Entropy, effective number of domains, top domain, breadth and archetype per learner.

    ``items`` only names the domains (codes); its counts are not used.
    """
    ent, top, share, breadth = _affinity_kernel(
        prep.starts,
        prep.domain,
        prep.duration_s,
        max(len(items.domains), 1),
        params.miller_madow,
        params.duration_cap_s,
        params.breadth_min_share,
    )
    eff = np.exp(ent)
    return AffinityResult(ent, eff, top, share, breadth, archetype_codes(eff, share, params))
