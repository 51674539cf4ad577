"""Choosing the number of cohorts: silhouette on a sample plus a bootstrap stability check.

The rule (also in docs/COHORTS.md): for each k in the range, fit k-means on a sample, compute
the silhouette of a sub-sample (one distance matrix serves every k) and the bootstrap
stability (mean ARI of refits on resamples). Among the *stable* ks (mean ARI >=
``min_stability_ari``) take the best silhouette, then the smallest k whose silhouette is within
one *paired* standard error of it (the same learners are scored under every k, so the
difference of their per-learner silhouettes has a small, honest standard error). If no k is
stable, the most stable k is taken and the selection says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.cluster import KMeans

from cohortlens.cohorts._threads import kmeans_threads
from cohortlens.cohorts.params import SelectionParams
from cohortlens.cohorts.quality import bootstrap_stability, sample_distances, silhouette_values
from cohortlens.errors import InputError
from cohortlens.progress import Progress, tell


@dataclass(frozen=True)
class KCandidate:
    """One k of the sweep.

    Attributes:
        k: number of cohorts.
        silhouette: mean silhouette on the silhouette sample.
        silhouette_se: its standard error.
        stability_ari: mean bootstrap ARI; stability_ari_min: the lowest one.
        inertia_per_learner: k-means inertia of the sample fit / sample size.
        stable: ``stability_ari >= min_stability_ari``.
        chosen: whether this k was selected.
    """

    k: int
    silhouette: float
    silhouette_se: float
    stability_ari: float
    stability_ari_min: float
    inertia_per_learner: float
    stable: bool
    chosen: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form."""
        return asdict(self)


@dataclass(frozen=True)
class Selection:
    """Result of the k sweep.

    Attributes:
        chosen_k: the selected number of cohorts.
        candidates: one row per k tried, in increasing k.
        reason: the rule's outcome in plain words.
        sample_size: learners each sweep fit used; silhouette_sample_size: learners scored.
    """

    chosen_k: int
    candidates: tuple[KCandidate, ...]
    reason: str
    sample_size: int
    silhouette_sample_size: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form."""
        return {
            "chosen_k": self.chosen_k,
            "candidates": [c.to_dict() for c in self.candidates],
            "reason": self.reason,
            "sample_size": self.sample_size,
            "silhouette_sample_size": self.silhouette_sample_size,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Selection:
        """Inverse of :meth:`to_dict`."""
        return Selection(
            chosen_k=int(d["chosen_k"]),
            candidates=tuple(KCandidate(**c) for c in d["candidates"]),
            reason=str(d["reason"]),
            sample_size=int(d["sample_size"]),
            silhouette_sample_size=int(d["silhouette_sample_size"]),
        )


#: Progress step of the sweep (:mod:`cohortlens.progress`).
SWEEP_STEP = "choosing k"


def choose_n_cohorts(
    z: np.ndarray,
    params: SelectionParams,
    seed: int = 0,
    *,
    on_progress: Progress | None = None,
) -> Selection:
    """Sweep k over ``[params.k_min, params.k_max]`` on samples of ``z`` (scaled, no NaN).

    ``on_progress`` is told each k swept.
    """
    rng = np.random.default_rng(seed)
    n = len(z)
    ks = [k for k in range(params.k_min, params.k_max + 1) if k < n]
    if not ks:
        raise InputError(
            f"cannot choose the number of cohorts: {n} complete learners for k >= {params.k_min}"
        )
    sample = z[rng.choice(n, params.sample_size, replace=False)] if n > params.sample_size else z
    m = min(params.silhouette_sample_size, len(sample))
    sil_rows = rng.choice(len(sample), m, replace=False)
    distances = sample_distances(sample[sil_rows])
    sil: dict[int, np.ndarray] = {}
    rows: dict[int, dict[str, Any]] = {}
    tell(on_progress, SWEEP_STEP, 0, len(ks), "k values")
    for i, k in enumerate(ks):  # one fit + n_bootstrap refits per k, on the sample
        fit = KMeans(k, n_init=params.sweep_n_init, random_state=int(rng.integers(2**31)))
        with kmeans_threads(len(sample)):
            fit.fit(sample)
        sil[k] = silhouette_values(distances, fit.predict(sample[sil_rows]))
        aris = bootstrap_stability(
            sample,
            k,
            params.n_bootstrap,
            params.sweep_n_init,
            int(rng.integers(2**31)),
            reference=fit,
        )
        rows[k] = {
            "silhouette": float(sil[k].mean()),
            "silhouette_se": float(sil[k].std(ddof=1) / math.sqrt(m)) if m > 1 else math.nan,
            "stability_ari": float(aris.mean()),
            "stability_ari_min": float(aris.min()),
            "inertia_per_learner": float(fit.inertia_) / len(sample),
        }
        tell(on_progress, SWEEP_STEP, i + 1, len(ks), "k values")
    stable = [k for k in ks if rows[k]["stability_ari"] >= params.min_stability_ari]
    if stable:
        best = max(stable, key=lambda k: rows[k]["silhouette"])
        chosen = best
        for k in sorted(stable):
            diff = sil[k] - sil[best]
            se = float(diff.std(ddof=1) / math.sqrt(m)) if m > 1 else 0.0
            if k <= best and diff.mean() >= -se:
                chosen = k
                break
        if chosen == best:
            reason = (
                f"k={chosen}: best silhouette ({rows[chosen]['silhouette']:.3f}) among the "
                f"{len(stable)} stable k (bootstrap ARI >= {params.min_stability_ari})"
            )
        else:
            reason = (
                f"k={chosen}: smallest stable k within one paired standard error of the best "
                f"silhouette (k={best}, {rows[best]['silhouette']:.3f} vs "
                f"{rows[chosen]['silhouette']:.3f})"
            )
    else:
        chosen = max(ks, key=lambda k: rows[k]["stability_ari"])
        reason = (
            f"k={chosen}: no k reached bootstrap ARI {params.min_stability_ari}; "
            f"the most stable one was taken (ARI {rows[chosen]['stability_ari']:.3f})"
        )
    candidates = tuple(
        KCandidate(k=k, stable=k in stable, chosen=k == chosen, **rows[k]) for k in ks
    )
    return Selection(chosen, candidates, reason, len(sample), m)
