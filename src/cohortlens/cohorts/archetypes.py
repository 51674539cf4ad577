"""Archetypes: a plain-words name and a card for every cohort, from its profile.

**Profile.** For each profiled feature and cohort: the centre (mean on the feature's
analysis scale, back to original units: a geometric mean for ``log`` features), the z-score
of that mean against the whole population ((cohort mean - population mean) / population sd,
on the analysis scale after winsorizing), the share of members with a value, and the 10th,
25th, 50th, 75th and 90th percentiles in original units.

**Naming rule** (``name_cohort``; z-scores only count when at least half the cohort has the
feature, and |z| >= ``Z_NOTABLE`` = 0.5 counts as notable):

1. *Noun, from domain affinity* (the centre, with the feature engine's thresholds):
   more than 3.5 effective domains -> "generalists"; top-domain share >= 0.70 or fewer than
   1.75 effective domains -> "specialists"; otherwise "focused learners". Without an
   affinity profile, when it does not vary in the population, or when no learner uses two
   domains, "learners".
2. *Engagement adjective*: active weeks z <= -0.5, or days since the last event z >= +0.5
   (when profiled) -> "disengaging"; else events per week z >= +0.5 -> "intensive",
   z <= -0.5 -> "occasional".
3. *Pace adjective*: learning velocity z >= +0.5 -> "fast-learning", <= -0.5 -> "slow-learning".
4. *Retention phrase*: memory half-life z >= +0.5 -> "with strong retention",
   <= -0.5 -> "with weak retention".

Name = engagement + pace + noun + retention ("fast-learning specialists with strong
retention", "disengaging generalists"). Two cohorts with the same name are told apart by
each one's most distinctive feature not already named ("(more active weeks)"), else by id.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cohortlens.cohorts._matrix import invert_transform
from cohortlens.cohorts.params import INSUFFICIENT_COHORT, INSUFFICIENT_NAME, FeatureSpec
from cohortlens.cohorts.quality import Estimate, mean_interval, wilson_interval
from cohortlens.features.params import AffinityParams

#: |z| at or above which a cohort's mean counts as notably high or low.
Z_NOTABLE = 0.5
#: Minimum share of a cohort with a value before its z-score is used for naming.
MIN_COVERAGE = 0.5
#: Percentiles reported per cohort and feature.
PERCENTILES: tuple[float, ...] = (10.0, 25.0, 50.0, 75.0, 90.0)

_AFFINITY = AffinityParams()

#: Display label and unit of the feature-table columns.
FEATURE_LABELS: dict[str, tuple[str, str]] = {
    "velocity_logit_per_week": ("learning velocity", "logit/week"),
    "ability_logit": ("ability", "logit"),
    "engagement_events_per_week": ("events per week", "events/week"),
    "engagement_minutes_per_week": ("minutes per week", "min/week"),
    "active_weeks": ("active weeks", "weeks"),
    "affinity_effective_domains": ("domain spread", "effective domains"),
    "affinity_top_share": ("top-domain share", "share"),
    "affinity_breadth": ("domains used", "domains"),
    "half_life_days": ("memory half-life", "days"),
    "p_recall_7d": ("recall after 7 days", "probability"),
    "p_recall_30d": ("recall after 30 days", "probability"),
    "reuse_rate": ("reuse rate", "share"),
    "n_events": ("events", "events"),
    "n_graded_events": ("graded events", "events"),
    "days_since_last_event": ("days since last activity", "days"),
    "days_since_first_event": ("days since first activity", "days"),
}

#: Phrases for a notably low / high value, used to tell apart cohorts with the same name.
_DIRECTION_PHRASES: dict[str, tuple[str, str]] = {
    "days_since_first_event": ("joined recently", "joined early"),
    "days_since_last_event": ("active recently", "inactive for longer"),
    "reuse_rate": ("less revisiting", "more revisiting"),
    "ability_logit": ("lower ability", "higher ability"),
    "n_events": ("fewer events", "more events"),
    "n_graded_events": ("fewer graded events", "more graded events"),
    "affinity_breadth": ("fewer domains", "more domains"),
}


def feature_label(column: str) -> str:
    """Human label of a feature column (the column itself when unknown)."""
    return FEATURE_LABELS.get(column, (column.replace("_", " "), ""))[0]


def feature_unit(column: str) -> str:
    """Unit of a feature column ('' when unknown)."""
    return FEATURE_LABELS.get(column, ("", ""))[1]


@dataclass(frozen=True)
class FeatureProfile:
    """One feature of one cohort.

    Attributes:
        centre: mean on the analysis scale, in original units (NaN when nobody has a value).
        z: standardized difference of that mean from the population's.
        coverage: share of the cohort with a value.
        percentiles: values at ``PERCENTILES`` in original units.
    """

    centre: float
    z: float
    coverage: float
    percentiles: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form; NaN becomes None."""
        return {
            "centre": _num(self.centre),
            "z": _num(self.z),
            "coverage": _num(self.coverage),
            "percentiles": [_num(p) for p in self.percentiles],
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> FeatureProfile:
        """Inverse of :meth:`to_dict`."""
        return FeatureProfile(
            _flt(d["centre"]),
            _flt(d["z"]),
            _flt(d["coverage"]),
            tuple(_flt(p) for p in d["percentiles"]),
        )


@dataclass(frozen=True)
class Archetype:
    """The card of one cohort.

    Attributes:
        cohort_id: stable id (``INSUFFICIENT_COHORT`` for learners with too little data).
        name: plain-words name from the naming rule.
        size: learners in the cohort; share: size / all learners assigned.
        partial_share: share of members assigned on some features only (others were null).
        profile: feature column -> :class:`FeatureProfile`.
        outcomes: outcome name -> rate or mean with a 95 % CI (completion, churn, revenue).
    """

    cohort_id: int
    name: str
    size: int
    share: float
    partial_share: float
    profile: dict[str, FeatureProfile] = field(default_factory=dict)
    outcomes: dict[str, Estimate] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form."""
        return {
            "cohort_id": self.cohort_id,
            "name": self.name,
            "size": self.size,
            "share": self.share,
            "partial_share": self.partial_share,
            "profile": {k: v.to_dict() for k, v in self.profile.items()},
            "outcomes": {k: v.to_dict() for k, v in self.outcomes.items()},
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Archetype:
        """Inverse of :meth:`to_dict`."""
        return Archetype(
            cohort_id=int(d["cohort_id"]),
            name=str(d["name"]),
            size=int(d["size"]),
            share=float(d["share"]),
            partial_share=float(d["partial_share"]),
            profile={k: FeatureProfile.from_dict(v) for k, v in d["profile"].items()},
            outcomes={k: Estimate.from_dict(v) for k, v in d["outcomes"].items()},
        )


def _num(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def _flt(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _notable(p: FeatureProfile | None) -> float:
    """The z-score if usable for naming, else 0."""
    if p is None or p.coverage < MIN_COVERAGE or not math.isfinite(p.z):
        return 0.0
    return p.z


def name_cohort(profile: Mapping[str, FeatureProfile], affinity_varies: bool = True) -> str:
    """Plain-words name of one cohort from its profile (the rule in the module docstring)."""
    words: list[str] = []
    aw = _notable(profile.get("active_weeks"))
    eng = _notable(profile.get("engagement_events_per_week"))
    idle = _notable(profile.get("days_since_last_event"))
    if aw <= -Z_NOTABLE or idle >= Z_NOTABLE:
        words.append("disengaging")
    elif eng >= Z_NOTABLE:
        words.append("intensive")
    elif eng <= -Z_NOTABLE:
        words.append("occasional")
    vel = _notable(profile.get("velocity_logit_per_week"))
    if vel >= Z_NOTABLE:
        words.append("fast-learning")
    elif vel <= -Z_NOTABLE:
        words.append("slow-learning")
    words.append(_noun(profile, affinity_varies))
    hl = _notable(profile.get("half_life_days"))
    if hl >= Z_NOTABLE:
        words.append("with strong retention")
    elif hl <= -Z_NOTABLE:
        words.append("with weak retention")
    return " ".join(words)


def _noun(profile: Mapping[str, FeatureProfile], affinity_varies: bool) -> str:
    """Affinity noun from the cohort's centre effective number of domains and top share."""
    ent = profile.get("affinity_effective_domains")
    top = profile.get("affinity_top_share")
    if not affinity_varies or ent is None or ent.coverage < MIN_COVERAGE:
        return "learners"
    if not math.isfinite(ent.centre):
        return "learners"
    if ent.centre > _AFFINITY.generalist_min_effective_domains:
        return "generalists"
    top_share = top.centre if top is not None and math.isfinite(top.centre) else 0.0
    if (
        top_share >= _AFFINITY.specialist_top_share
        or ent.centre < _AFFINITY.specialist_max_effective_domains
    ):
        return "specialists"
    return "focused learners"


def _disambiguate(
    names: list[str], profiles: list[dict[str, FeatureProfile]], ids: list[int]
) -> list[str]:
    """Append each duplicate's most distinctive unnamed feature, else its id."""
    named = {"active_weeks", "engagement_events_per_week", "velocity_logit_per_week"}
    named |= {"affinity_effective_domains", "affinity_top_share", "half_life_days"}
    named |= {"days_since_last_event"}
    out = list(names)
    for name in set(names):
        group = [i for i, n in enumerate(names) if n == name]
        if len(group) < 2:
            continue
        for i in group:
            cands = [
                (abs(_notable(p)), col, p.z)
                for col, p in profiles[i].items()
                if col not in named and abs(_notable(p)) >= Z_NOTABLE
            ]
            if cands:
                _, col, z = max(cands)
                out[i] = f"{name} ({_direction(col, z)})"
        if len({out[i] for i in group}) < len(group):
            for i in group:
                out[i] = f"{name} (cohort {ids[i]})"
    return out


_COUNTS = {"n_events", "n_graded_events", "active_weeks", "affinity_breadth"}


def _direction(column: str, z: float) -> str:
    """Phrase for a notably high (z > 0) or low value of ``column``."""
    if column in _DIRECTION_PHRASES:
        low, high = _DIRECTION_PHRASES[column]
        return high if z > 0 else low
    word = ("more" if z > 0 else "fewer") if column in _COUNTS else ("higher" if z > 0 else "lower")
    return f"{word} {feature_label(column)}"


def population_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd of each column (analysis scale, NaN ignored, winsorized at 0.5/99.5 %)."""
    mean = np.full(x.shape[1], math.nan)
    sd = np.full(x.shape[1], math.nan)
    for j in range(x.shape[1]):  # loop over features
        col = x[:, j]
        col = col[np.isfinite(col)]
        if len(col) == 0:
            continue
        lo, hi = np.quantile(col, [0.005, 0.995])
        col = np.clip(col, lo, hi)
        mean[j] = col.mean()
        sd[j] = col.std()
    return mean, sd


def profile_cohorts(
    labels: np.ndarray,
    cohort_ids: Sequence[int],
    x: np.ndarray,
    specs: Sequence[FeatureSpec],
    moments: tuple[np.ndarray, np.ndarray],
    max_quantile_n: int = 200_000,
    seed: int = 0,
) -> dict[int, dict[str, FeatureProfile]]:
    """Profile of every cohort in ``cohort_ids`` over the features ``specs``.

    ``x`` holds the features on their analysis scale (NaN = null), one row per label;
    ``moments`` are the population mean and sd from :func:`population_moments`. Percentiles
    are computed on at most ``max_quantile_n`` random members per cohort.
    """
    mean_pop, sd_pop = moments
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    rng = np.random.default_rng(seed)
    out: dict[int, dict[str, FeatureProfile]] = {}
    for cid in cohort_ids:  # loop over cohorts (a dozen at most)
        lo, hi = np.searchsorted(sorted_labels, [cid, cid + 1])
        rows = order[lo:hi]
        block = x[rows]
        qrows = (
            block
            if len(rows) <= max_quantile_n
            else block[rng.choice(len(rows), max_quantile_n, replace=False)]
        )
        prof: dict[str, FeatureProfile] = {}
        for j, spec in enumerate(specs):
            col = block[:, j]
            have = np.isfinite(col)
            n_have = int(have.sum())
            coverage = n_have / len(col) if len(col) else math.nan
            if n_have == 0:
                prof[spec.column] = FeatureProfile(
                    math.nan, math.nan, coverage, (math.nan,) * len(PERCENTILES)
                )
                continue
            m = float(col[have].mean())
            z = (m - mean_pop[j]) / sd_pop[j] if sd_pop[j] > 0 else 0.0
            qcol = qrows[:, j]
            pct = np.percentile(qcol[np.isfinite(qcol)], PERCENTILES)
            prof[spec.column] = FeatureProfile(
                float(invert_transform(np.asarray(m), spec.transform)),
                float(z),
                coverage,
                tuple(float(v) for v in invert_transform(pct, spec.transform)),
            )
        out[int(cid)] = prof
    return out


def outcome_estimates(
    labels: np.ndarray, cohort_ids: Sequence[int], outcomes: Mapping[str, np.ndarray]
) -> dict[int, dict[str, Estimate]]:
    """Per cohort: completion and churn rates (Wilson 95 % CI), mean revenue (t 95 % CI).

    ``outcomes`` maps names to float arrays aligned with ``labels`` (NaN = unknown);
    ``completed`` and ``churned`` (0/1) are rates, any other name (``revenue``) a mean.
    """
    out: dict[int, dict[str, Estimate]] = {int(c): {} for c in cohort_ids}
    for name, y in outcomes.items():
        for cid in cohort_ids:  # loop over cohorts
            v = y[labels == cid]
            v = v[np.isfinite(v)]
            if name in ("completed", "churned"):
                out[int(cid)][name] = wilson_interval(int((v > 0.5).sum()), len(v))
            else:
                out[int(cid)][name] = mean_interval(v)
    return out


def label_archetypes(
    labels: np.ndarray,
    cohort_ids: Sequence[int],
    partial: np.ndarray,
    profiles: Mapping[int, dict[str, FeatureProfile]],
    outcome_stats: Mapping[int, dict[str, Estimate]] | None = None,
    affinity_varies: bool = True,
) -> dict[int, Archetype]:
    """Cards of the cohorts ``cohort_ids`` (the insufficient-data cohort included if listed)."""
    total = len(labels)
    sizes = {int(c): int((labels == c).sum()) for c in cohort_ids}
    regular = [int(c) for c in cohort_ids if c != INSUFFICIENT_COHORT]
    names = [name_cohort(profiles[c], affinity_varies) for c in regular]
    names = _disambiguate(names, [profiles[c] for c in regular], regular)
    name_of = dict(zip(regular, names, strict=True))
    name_of[INSUFFICIENT_COHORT] = INSUFFICIENT_NAME
    cards: dict[int, Archetype] = {}
    for c in cohort_ids:
        cid = int(c)
        members = labels == cid
        size = sizes[cid]
        cards[cid] = Archetype(
            cohort_id=cid,
            name=name_of[cid],
            size=size,
            share=size / total if total else math.nan,
            partial_share=float(partial[members].mean()) if size else 0.0,
            profile=dict(profiles.get(cid, {})),
            outcomes=dict((outcome_stats or {}).get(cid, {})),
        )
    return cards
