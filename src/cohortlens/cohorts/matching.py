"""Stable cohort ids across runs, and drift between runs.

**Matching.** The new centroids are expressed in the previous model's scaled space (back to
original units with the new scaler, forward with the previous one, on the features both
models cluster on), then matched one-to-one to the previous centroids by the Hungarian
algorithm (``scipy.optimize.linear_sum_assignment``) on squared Euclidean distance. A matched
pair keeps the previous id when the distance is below ``match_ratio`` times the distance from
that previous centroid to its nearest other previous centroid (so the new centroid sits
closer to its old cohort than to the midpoint towards any other); otherwise, and for
unmatched new centroids, a fresh id is issued. Previous ids left without a partner are
retired. Ids are never reused.

**Drift.** Population stability index per feature over the reference deciles of the
previous training data (plus one bin for nulls), with a floor of 1e-4 per bin:
PSI = sum_b (a_b - e_b) ln(a_b / e_b); < 0.10 stable, 0.10-0.25 watch, > 0.25 shift (the
credit-scoring rule of thumb). The same index is computed on the cohort-share vector.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

#: Per-bin floor of the PSI.
PSI_FLOOR = 1e-4
#: PSI thresholds: below WATCH stable, above SHIFT a shift.
PSI_WATCH = 0.10
PSI_SHIFT = 0.25
#: Number of quantile bins of the reference distribution.
N_BINS = 10


@dataclass(frozen=True)
class CohortMatch:
    """How one new cohort relates to the previous model.

    Attributes:
        cohort_id: the id the new cohort received.
        previous_id: the previous cohort it was paired with (None if unpaired).
        distance: distance to that previous centroid, in the previous scaled units.
        threshold: the largest distance that keeps the id for that pair.
        carried: whether the previous id was kept.
    """

    cohort_id: int
    previous_id: int | None
    distance: float
    threshold: float
    carried: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form; NaN and inf become None."""
        d = asdict(self)
        for k in ("distance", "threshold"):
            d[k] = d[k] if math.isfinite(d[k]) else None
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> CohortMatch:
        """Inverse of :meth:`to_dict`."""
        return CohortMatch(
            int(d["cohort_id"]),
            None if d["previous_id"] is None else int(d["previous_id"]),
            math.nan if d["distance"] is None else float(d["distance"]),
            math.inf if d["threshold"] is None else float(d["threshold"]),
            bool(d["carried"]),
        )


def match_centroids(
    new_centroids: np.ndarray,
    previous_centroids: np.ndarray,
    previous_ids: Sequence[int],
    next_id: int,
    match_ratio: float = 0.5,
) -> tuple[list[int], list[CohortMatch], list[int], int]:
    """Give the new centroids ids, keeping the previous ids of close matches.

    Both centroid arrays must be in the same (previous) scaled space. Returns the ids (in the
    order of ``new_centroids``), one :class:`CohortMatch` per new centroid, the retired
    previous ids, and the next unused id.
    """
    k_new, k_prev = len(new_centroids), len(previous_centroids)
    prev_ids = [int(i) for i in previous_ids]
    if k_prev == 0 or k_new == 0:
        fresh = list(range(next_id, next_id + k_new))
        unpaired = [CohortMatch(i, None, math.nan, math.nan, False) for i in fresh]
        return fresh, unpaired, prev_ids, next_id + k_new
    diff = new_centroids[:, None, :] - previous_centroids[None, :, :]
    cost = (diff**2).sum(axis=2)
    rows, cols = linear_sum_assignment(cost)
    gaps = np.sqrt(((previous_centroids[:, None, :] - previous_centroids[None]) ** 2).sum(2))
    np.fill_diagonal(gaps, np.inf)
    threshold = match_ratio * gaps.min(axis=1) if k_prev > 1 else np.full(1, np.inf)
    ids: list[int] = [-1] * k_new
    matches: list[CohortMatch | None] = [None] * k_new
    used: set[int] = set()
    for r, c in zip(rows, cols, strict=True):
        dist = float(math.sqrt(cost[r, c]))
        carried = bool(dist < threshold[c])
        if carried:
            ids[r] = prev_ids[c]
            used.add(prev_ids[c])
        matches[r] = CohortMatch(-1, prev_ids[c], dist, float(threshold[c]), carried)
    for r in range(k_new):  # issue fresh ids in the order of the new centroids
        if ids[r] == -1:
            ids[r] = next_id
            next_id += 1
        m = matches[r]
        matches[r] = (
            CohortMatch(ids[r], m.previous_id, m.distance, m.threshold, m.carried)
            if m is not None
            else CohortMatch(ids[r], None, math.nan, math.nan, False)
        )
    retired = [i for i in prev_ids if i not in used]
    return ids, [m for m in matches if m is not None], retired, next_id


def reference_bins(x: np.ndarray) -> dict[str, list[float]]:
    """Decile edges of ``x`` (NaN ignored) and the reference share of each bin + a null bin."""
    finite = x[np.isfinite(x)]
    if len(finite) == 0:
        edges = np.zeros(0)
    else:
        edges = np.unique(np.quantile(finite, np.arange(1, N_BINS) / N_BINS))
    return {"edges": edges.tolist(), "shares": bin_shares(x, edges).tolist()}


def bin_shares(x: np.ndarray, edges: np.ndarray | Sequence[float]) -> np.ndarray:
    """Share of ``x`` in each bin ``(-inf, e1], (e1, e2], ..., (e_last, inf)``, then nulls."""
    e = np.asarray(edges, dtype=np.float64)
    finite = np.isfinite(x)
    idx = np.searchsorted(e, x[finite], side="left")
    counts = np.bincount(idx, minlength=len(e) + 1).astype(np.float64)
    counts = np.append(counts, float((~finite).sum()))
    total = counts.sum()
    return counts / total if total else counts


def psi(actual: np.ndarray, expected: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """Population stability index of two share vectors (same bins)."""
    a = np.maximum(np.asarray(actual, dtype=np.float64), floor)
    e = np.maximum(np.asarray(expected, dtype=np.float64), floor)
    return float(((a - e) * np.log(a / e)).sum())


def psi_status(value: float) -> str:
    """``stable`` / ``watch`` / ``shift`` by the rule of thumb."""
    if not math.isfinite(value):
        return "unknown"
    if value < PSI_WATCH:
        return "stable"
    return "watch" if value <= PSI_SHIFT else "shift"


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature against the previous model's training data.

    Attributes:
        column: feature column.
        psi: population stability index over the reference deciles (+ null bin).
        status: ``stable`` (< 0.10), ``watch`` (0.10-0.25) or ``shift`` (> 0.25).
        null_share_previous, null_share_current: share of nulls then and now.
    """

    column: str
    psi: float
    status: str
    null_share_previous: float
    null_share_current: float

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form."""
        return asdict(self)


@dataclass(frozen=True)
class DriftReport:
    """What changed between the previous model and this one.

    Attributes:
        previous_run: the previous model's feature run (if it recorded one).
        matches: one :class:`CohortMatch` per new cohort.
        retired_ids: previous cohort ids with no successor.
        features: per-feature PSI against the previous training data.
        cohort_share_psi: PSI of the cohort shares (previous vs current, by id).
        previous_shares, current_shares: cohort id -> share of learners.
        changed_share: share of compared learners whose cohort id changed.
        n_compared: learners compared.
        changed_basis: ``assignments`` (stored previous assignments of the same learners) or
            ``reassignment`` (the previous model applied to the current features).
        mean_centroid_shift: mean distance of carried cohorts to their previous centroid.
        transitions: ``"old->new"`` id -> learners who moved that way.
        n_changed: compared learners whose cohort id changed.
        changed_by_features: of those, learners the *previous* model already puts elsewhere
            on their current features (their features moved: new events, or new global
            statistics of the feature run); only known on the ``assignments`` basis.
        changed_by_refit: the others: the previous model still gives their old id, the
            refitted model does not (centroids moved, cohorts split, merged or retired).
        n_new: learners in the current features with no previous assignment.
    """

    previous_run: str | None
    matches: tuple[CohortMatch, ...]
    retired_ids: tuple[int, ...]
    features: tuple[FeatureDrift, ...]
    cohort_share_psi: float
    previous_shares: dict[int, float]
    current_shares: dict[int, float]
    changed_share: float
    n_compared: int
    changed_basis: str
    mean_centroid_shift: float
    transitions: dict[str, int] = field(default_factory=dict)
    n_changed: int = 0
    changed_by_features: int = 0
    changed_by_refit: int = 0
    n_new: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON keys are strings)."""

        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "previous_run": self.previous_run,
            "matches": [m.to_dict() for m in self.matches],
            "retired_ids": list(self.retired_ids),
            "features": [{**f.to_dict(), "psi": num(f.psi)} for f in self.features],
            "cohort_share_psi": num(self.cohort_share_psi),
            "previous_shares": {str(k): v for k, v in self.previous_shares.items()},
            "current_shares": {str(k): v for k, v in self.current_shares.items()},
            "changed_share": num(self.changed_share),
            "n_compared": self.n_compared,
            "changed_basis": self.changed_basis,
            "mean_centroid_shift": num(self.mean_centroid_shift),
            "transitions": dict(self.transitions),
            "n_changed": self.n_changed,
            "changed_by_features": self.changed_by_features,
            "changed_by_refit": self.changed_by_refit,
            "n_new": self.n_new,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> DriftReport:
        """Inverse of :meth:`to_dict`."""

        def flt(x: float | None) -> float:
            return math.nan if x is None else float(x)

        return DriftReport(
            previous_run=d["previous_run"],
            matches=tuple(CohortMatch.from_dict(m) for m in d["matches"]),
            retired_ids=tuple(int(i) for i in d["retired_ids"]),
            features=tuple(
                FeatureDrift(
                    f["column"],
                    flt(f["psi"]),
                    f["status"],
                    float(f["null_share_previous"]),
                    float(f["null_share_current"]),
                )
                for f in d["features"]
            ),
            cohort_share_psi=flt(d["cohort_share_psi"]),
            previous_shares={int(k): float(v) for k, v in d["previous_shares"].items()},
            current_shares={int(k): float(v) for k, v in d["current_shares"].items()},
            changed_share=flt(d["changed_share"]),
            n_compared=int(d["n_compared"]),
            changed_basis=str(d["changed_basis"]),
            mean_centroid_shift=flt(d["mean_centroid_shift"]),
            transitions={str(k): int(v) for k, v in d.get("transitions", {}).items()},
            n_changed=int(d.get("n_changed", 0)),
            changed_by_features=int(d.get("changed_by_features", 0)),
            changed_by_refit=int(d.get("changed_by_refit", 0)),
            n_new=int(d.get("n_new", 0)),
        )


def feature_drift(
    reference: Mapping[str, Mapping[str, list[float]]], columns: Mapping[str, np.ndarray]
) -> tuple[FeatureDrift, ...]:
    """PSI of each current column against its stored reference bins (common columns only)."""
    out = []
    for name, ref in reference.items():
        if name not in columns:
            continue
        expected = np.asarray(ref["shares"], dtype=np.float64)
        actual = bin_shares(columns[name], ref["edges"])
        value = psi(actual, expected)
        out.append(
            FeatureDrift(name, value, psi_status(value), float(expected[-1]), float(actual[-1]))
        )
    return tuple(out)


def share_psi(previous: Mapping[int, float], current: Mapping[int, float]) -> float:
    """PSI of two cohort-share vectors keyed by id (ids missing on one side count as 0)."""
    ids = sorted(set(previous) | set(current))
    if not ids:
        return math.nan
    return psi(
        np.array([current.get(i, 0.0) for i in ids]), np.array([previous.get(i, 0.0) for i in ids])
    )


def changed_share(previous: np.ndarray, current: np.ndarray) -> tuple[float, dict[str, int]]:
    """Share of learners whose id differs, and the counts of each ``"old->new"`` transition."""
    if len(previous) == 0:
        return math.nan, {}
    changed = previous != current
    trans: dict[str, int] = {}
    if changed.any():
        pairs = np.stack([previous[changed], current[changed]], axis=1)
        uniq, counts = np.unique(pairs, axis=0, return_counts=True)
        for (a, b), c in zip(uniq.tolist(), counts.tolist(), strict=True):
            trans[f"{int(a)}->{int(b)}"] = int(c)
    return float(changed.mean()), trans
