"""Plain-language summaries of a fitted cohort model, generated from its cards.

One paragraph per cohort, for a reader without statistics: its share of learners, the
outcome on which it differs most from the average (with its 95 % interval and the ratio to
the average), and the two features that set it apart most, each against all learners, in
the feature's own units. The report prints these first; the reading test checks each one
against its card's figures.

Example: "Cohort 2, disengaging focused learners: 27 % of learners (1,314). 85 % churned
(95 % interval 83–87 %), 2.1× the average of 41 %. Compared with all learners they have
fewer active weeks (7.4 against 17 weeks) and fewer events per week (3.4 against 9.5)."
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from cohortlens.cohorts._matrix import invert_transform
from cohortlens.cohorts.archetypes import Z_NOTABLE, Archetype, feature_label, feature_unit
from cohortlens.cohorts.model import CohortModel
from cohortlens.cohorts.params import INSUFFICIENT_COHORT
from cohortlens.reports.fmt import NBSP, count, fmt, pct, pct_interval, plural, share, times

if TYPE_CHECKING:
    from cohortlens.cohorts.matching import DriftReport
    from cohortlens.cohorts.ood import OODSummary

#: Outcomes read as rates (shares of learners); any other outcome is a mean per learner.
RATE_OUTCOMES = ("completed", "churned")

#: Per feature: (words for a higher value, words for a lower value, one sentence explaining
#: it for a reader without statistics). Features not listed read "higher / lower <label>".
FEATURE_WORDS: dict[str, tuple[str, str, str]] = {
    "velocity_logit_per_week": (
        "faster learning",
        "slower learning",
        "Learning velocity is the gain in ability per week, in logits (log-odds): +0.1 "
        "logit a week lifts a 50 % chance of answering an average item to about 52.5 % "
        "a week later, and to 73 % after 10 weeks.",
    ),
    "ability_logit": (
        "higher ability",
        "lower ability",
        "Ability is estimated skill in logits (log-odds): 0 means a 50 % chance of answering "
        "an average item correctly, +1 about 73 %, −1 about 27 %.",
    ),
    "engagement_events_per_week": (
        "more events per week",
        "fewer events per week",
        "Events per week counts a learner's activity (answers, views, reviews) per week of "
        "their time on the platform.",
    ),
    "engagement_minutes_per_week": (
        "more minutes per week",
        "fewer minutes per week",
        "Minutes per week is the time a learner spends on the platform per week.",
    ),
    "active_weeks": (
        "more active weeks",
        "fewer active weeks",
        "Active weeks counts the weeks with any activity.",
    ),
    "affinity_entropy_norm": (
        "a wider spread over domains",
        "a narrower spread over domains",
        "Domain spread is how evenly a learner's activity is split over subject domains, "
        "from 0 (one domain) to 1 (all domains equally).",
    ),
    "affinity_effective_domains": (
        "a wider spread over domains",
        "a narrower spread over domains",
        "Domain spread is the number of domains a learner's activity is effectively split "
        "over (1 = a single domain).",
    ),
    "affinity_top_share": (
        "more of their activity in one domain",
        "less of their activity in one domain",
        "Top-domain share is the share of a learner's activity in their main domain.",
    ),
    "affinity_breadth": (
        "more domains",
        "fewer domains",
        "Domains used counts the subject domains a learner was active in.",
    ),
    "half_life_days": (
        "a longer memory half-life",
        "a shorter memory half-life",
        "Memory half-life is the number of days after a review until the chance of "
        "recalling the item has fallen to half.",
    ),
    "p_recall_7d": (
        "better recall after 7 days",
        "worse recall after 7 days",
        "Recall after 7 days is the estimated chance of remembering an item a week after "
        "reviewing it.",
    ),
    "p_recall_30d": (
        "better recall after 30 days",
        "worse recall after 30 days",
        "Recall after 30 days is the estimated chance of remembering an item 30 days after "
        "reviewing it.",
    ),
    "reuse_rate": (
        "more revisiting of items",
        "less revisiting of items",
        "Reuse rate is the share of a learner's events that return to an item seen before.",
    ),
    "n_events": ("more events", "fewer events", "Events counts all of a learner's events."),
    "n_graded_events": (
        "more graded events",
        "fewer graded events",
        "Graded events counts the answers that were marked right or wrong.",
    ),
    "days_since_last_event": (
        "a longer time since their last activity",
        "a shorter time since their last activity",
        "Days since last activity counts the days from a learner's last event to the end "
        "of the data.",
    ),
    "days_since_first_event": (
        "an earlier start",
        "a later start",
        "Days since first activity counts the days from a learner's first event to the end "
        "of the data.",
    ),
}

#: Unit words printed after a value (shares and probabilities are printed as percentages).
_UNIT_WORDS = {
    "logit/week": "logits a week",
    "logit": "logits",
    "events/week": "events a week",
    "min/week": "minutes a week",
    "weeks": "weeks",
    "days": "days",
    "events": "events",
    "domains": "domains",
    "effective domains": "domains",
    "entropy 0-1": "on a 0–1 scale",
}


def explain_feature(column: str) -> str:
    """One sentence explaining a feature to a reader without statistics ('' if unknown)."""
    return FEATURE_WORDS.get(column, ("", "", ""))[2]


def value_parts(column: str, value: float) -> tuple[str, str]:
    """A feature value as (number, unit words): a percentage for shares (unit ''), else 3
    significant digits, signed for logits, and the unit in words (``weeks``)."""
    unit = feature_unit(column)
    if unit in ("share", "probability"):
        return pct(value), ""
    number = fmt(value)
    if unit in ("logit/week", "logit") and math.isfinite(value) and value > 0:
        number = "+" + number
    return number, _UNIT_WORDS.get(unit, unit)


def value_text(column: str, value: float) -> str:
    """A feature value as a reader sees it (``7.4 weeks``, ``+0.018 logits a week``, ``27 %``)."""
    number, unit = value_parts(column, value)
    return f"{number}{NBSP}{unit}" if unit else number


def velocity_words(value: float, weeks: int = 10) -> str:
    """What a velocity (logits/week) means in chances: from 50 % to p after ``weeks``."""
    if not math.isfinite(value):
        return ""
    after = 1.0 / (1.0 + math.exp(-value * weeks))
    return (
        f"at this pace a 50 % chance of answering an average item becomes {pct(after)} "
        f"after {weeks} weeks"
    )


@dataclass(frozen=True)
class OutcomeLine:
    """One outcome of one cohort against the average over all learners with the outcome."""

    outcome: str
    kind: Literal["rate", "mean"]
    value: float
    ci_lower: float
    ci_upper: float
    n: int
    average: float

    @property
    def ratio(self) -> float:
        """The cohort's value divided by the average (NaN when the average is 0)."""
        return self.value / self.average if self.average else math.nan


@dataclass(frozen=True)
class TraitLine:
    """One feature that sets a cohort apart: its centre against all learners'."""

    column: str
    centre: float
    average: float
    z: float
    text: str


@dataclass(frozen=True)
class CohortSummary:
    """The plain-language summary of one cohort (``text`` is the paragraph)."""

    cohort_id: int
    name: str
    size: int
    share: float
    headline: OutcomeLine | None
    outcomes: tuple[OutcomeLine, ...]
    traits: tuple[TraitLine, ...]
    text: str

    @property
    def title(self) -> str:
        """``Cohort 2, disengaging focused learners`` (``Insufficient data`` for id 0)."""
        if self.cohort_id == INSUFFICIENT_COHORT:
            return "Insufficient data"
        return f"Cohort {self.cohort_id}, {self.name}"


def ordered_cards(model: CohortModel) -> list[Archetype]:
    """Cards in id order, the insufficient-data cohort last (and only if it has members)."""
    cards = [model.archetypes_[int(c)] for c in sorted(model.cohort_ids_.tolist())]
    insufficient = model.archetypes_.get(INSUFFICIENT_COHORT)
    if insufficient is not None and insufficient.size > 0:
        cards.append(insufficient)
    return cards


def outcome_averages(cards: Sequence[Archetype]) -> dict[str, float]:
    """Each outcome's rate or mean over all learners who have it (the n-weighted mean of the
    cohorts' values, i.e. the population figure)."""
    totals: dict[str, tuple[float, int]] = {}
    for card in cards:
        for name, est in card.outcomes.items():
            if est.n > 0 and math.isfinite(est.value):
                s, n = totals.get(name, (0.0, 0))
                totals[name] = (s + est.value * est.n, n + est.n)
    return {name: s / n for name, (s, n) in totals.items() if n > 0}


def population_centre(model: CohortModel, column: str) -> float:
    """The centre of all learners for a profiled feature, in original units (the mean on the
    feature's analysis scale, transformed back: a geometric mean for log features)."""
    moments = model.population_moments_.get(column)
    spec = next((s for s in model.profile_features_ if s.column == column), None)
    if moments is None or spec is None:
        return math.nan
    return float(invert_transform(np.array([moments[0]]), spec.transform)[0])


def _outcome_lines(card: Archetype, averages: dict[str, float]) -> list[OutcomeLine]:
    lines = []
    for name, est in card.outcomes.items():
        if est.n == 0 or not math.isfinite(est.value) or name not in averages:
            continue
        kind: Literal["rate", "mean"] = "rate" if name in RATE_OUTCOMES else "mean"
        lines.append(
            OutcomeLine(name, kind, est.value, est.ci_lower, est.ci_upper, est.n, averages[name])
        )
    return lines


def _headline(lines: Sequence[OutcomeLine]) -> OutcomeLine | None:
    """The rate outcome furthest from its average (by the log of the ratio)."""
    rates = [o for o in lines if o.kind == "rate" and o.value > 0 and o.average > 0 and o.ratio > 0]
    if not rates:
        return None
    return max(rates, key=lambda o: abs(math.log(o.ratio)))


def distinctive(card: Archetype, n: int = 4) -> list[str]:
    """The ``n`` profiled features with the largest |z| (at least half the cohort has them)."""
    ranked = sorted(
        (
            (abs(p.z), col)
            for col, p in card.profile.items()
            if math.isfinite(p.z) and math.isfinite(p.centre) and p.coverage >= 0.5
        ),
        key=lambda t: -t[0],
    )
    return [col for _, col in ranked[:n]]


def _trait(model: CohortModel, card: Archetype, column: str) -> TraitLine:
    p = card.profile[column]
    average = population_centre(model, column)
    more, less, _ = FEATURE_WORDS.get(
        column, (f"a higher {feature_label(column)}", f"a lower {feature_label(column)}", "")
    )
    words = more if p.z > 0 else less
    (mine, unit), (theirs, _) = value_parts(column, p.centre), value_parts(column, average)
    text = f"{words} ({mine} against {theirs}" + (f"{NBSP}{unit})" if unit else ")")
    return TraitLine(column, p.centre, average, p.z, text)


def outcome_sentence(o: OutcomeLine, revenue_unit: str | None = None) -> str:
    """``85 % churned (95 % interval 83–87 %), 2.1× the average of 41 %``."""
    if o.kind == "rate":
        return (
            f"{pct(o.value)} {o.outcome} (95{NBSP}% interval "
            f"{pct_interval(o.ci_lower, o.ci_upper)}), "
            f"{times(o.ratio)} the average of {pct(o.average)}"
        )
    unit = f" {revenue_unit}" if revenue_unit else ""
    return (
        f"{o.outcome} per learner {fmt(o.value)}{unit} (95{NBSP}% interval {fmt(o.ci_lower)}–"
        f"{fmt(o.ci_upper)}), {times(o.ratio)} the average of {fmt(o.average)}{unit}"
    )


def summarize_cohorts(model: CohortModel, revenue_unit: str | None = None) -> list[CohortSummary]:
    """One :class:`CohortSummary` per cohort with members (report order)."""
    model._check_fitted()
    cards = ordered_cards(model)
    averages = outcome_averages(cards)
    out = []
    for card in cards:
        lines = _outcome_lines(card, averages)
        headline = _headline(lines)
        if card.cohort_id == INSUFFICIENT_COHORT:
            traits: list[TraitLine] = []
        else:
            traits = [
                _trait(model, card, col)
                for col in distinctive(card, 2)
                if abs(card.profile[col].z) >= Z_NOTABLE
            ]
        summary = CohortSummary(
            card.cohort_id,
            card.name,
            card.size,
            card.share,
            headline,
            tuple(lines),
            tuple(traits),
            "",
        )
        out.append(_with_text(model, summary))
    return out


def _with_text(model: CohortModel, s: CohortSummary) -> CohortSummary:
    parts = [f"{s.title}: {share(s.share)} of learners ({count(s.size)})."]
    if s.cohort_id == INSUFFICIENT_COHORT:
        parts[0] = (
            f"{s.title}: {share(s.share)} of learners ({count(s.size)}) had fewer than "
            f"{plural(model.min_events, 'event')} or too few measurements to be placed in a "
            "cohort."
        )
    if s.headline is not None:
        sentence = outcome_sentence(s.headline)
        parts.append(sentence[0].upper() + sentence[1:] + ".")
    if s.traits:
        joined = " and ".join(t.text for t in s.traits)
        parts.append(f"Compared with all learners they have {joined}.")
    elif s.cohort_id != INSUFFICIENT_COHORT:
        parts.append("They are close to the average learner on every measure.")
    return CohortSummary(
        s.cohort_id, s.name, s.size, s.share, s.headline, s.outcomes, s.traits, " ".join(parts)
    )


def overview(model: CohortModel, summaries: Sequence[CohortSummary]) -> str:
    """The report's opening sentences: how many learners and cohorts, and the outcome
    that differs most between cohorts."""
    regular = [s for s in summaries if s.cohort_id != INSUFFICIENT_COHORT]
    insufficient = next((s for s in summaries if s.cohort_id == INSUFFICIENT_COHORT), None)
    text = (
        f"{count(model.n_learners_)} learners were grouped into {len(regular)} cohorts of "
        "learners who behave alike"
    )
    if insufficient is not None:
        text += (
            f"; {count(insufficient.size)} more ({share(insufficient.share)}) had too little "
            "activity to be placed"
        )
    text += "."
    if regular:
        largest = max(regular, key=lambda s: s.size)
        text += f" The largest is {largest.title.lower()} ({share(largest.share)} of learners)."
    spread = _widest_outcome(regular)
    if spread is not None:
        name, lo, hi, avg = spread
        text += (
            f" {name.capitalize()} ranges from {pct(lo.value)} in cohort {lo.cohort} to "
            f"{pct(hi.value)} in cohort {hi.cohort}, against {pct(avg)} over all learners."
        )
    return text


@dataclass(frozen=True)
class _At:
    cohort: int
    value: float


def _widest_outcome(regular: Sequence[CohortSummary]) -> tuple[str, _At, _At, float] | None:
    best: tuple[str, _At, _At, float] | None = None
    names = {o.outcome for s in regular for o in s.outcomes if o.kind == "rate"}
    for name in sorted(names):
        vals = [
            _At(s.cohort_id, o.value)
            for s in regular
            for o in s.outcomes
            if o.outcome == name and math.isfinite(o.value)
        ]
        avg = next(o.average for s in regular for o in s.outcomes if o.outcome == name)
        if len(vals) < 2:
            continue
        lo, hi = min(vals, key=lambda a: a.value), max(vals, key=lambda a: a.value)
        if best is None or hi.value - lo.value > best[2].value - best[1].value:
            best = (name, lo, hi, avg)
    return best


# ---------------------------------------------------------------------- unfamiliar learners


#: How a feature's PSI reads for a reader without statistics.
PSI_WORDS = {
    "stable": "about the same as in training",
    "watch": "somewhat different from training",
    "shift": "very different from training",
    "unknown": "not measured",
}


@dataclass(frozen=True)
class OODText:
    """The out-of-distribution check in plain words: what share, what it means, what to do."""

    headline: str
    meaning: str
    action: str
    features: str | None


def ood_text(o: OODSummary) -> OODText:
    """Plain-language reading of :func:`cohortlens.cohorts.ood.ood_summary` for a programme
    manager: the share of learners unlike any the model learned from, what that means for
    their cohorts, what to do, and which measures differ most."""
    # about 1 % of the training learners themselves lie beyond the 99th percentile
    expected = 0.01
    if not math.isfinite(o.share_beyond):
        return OODText(
            "This model was saved before the check existed, so it cannot say how these "
            "learners compare with the ones it learned from.",
            "Refit the model (cohortlens discover) to get the check.",
            "",
            None,
        )
    headline = (
        f"{share(o.share_beyond)} of the {count(o.n_assessed)} learners placed in a cohort "
        f"({count(o.n_beyond)}) are unlike any learner the model learned from: they are "
        "further from every cohort than 99 in 100 of the learners it was fitted on."
    )
    if o.warning:
        meaning = (
            f"That is more than the {share(o.max_share)} this check allows (about "
            f"{pct(expected)} is normal), so these learners differ from the ones the model "
            "was built on. Their cohort is the nearest one, not necessarily a good fit, and "
            "the cohort descriptions in this report may not describe them."
        )
        action = (
            "Before acting on these cohorts, fit a new model on these learners "
            "(cohortlens discover) or check that the data were collected the same way as "
            "the training data (same platform, same period, same event types)."
        )
    else:
        meaning = (
            f"On learners like the training learners about {pct(expected)} lie that far "
            f"out; this check warns above {share(o.max_share)}. These learners resemble the "
            "ones the model was built on, so their cohorts can be read as described."
        )
        action = "Nothing to do; the check runs again with every report."
    ranked = [f for f in o.features if math.isfinite(f.psi) and f.status in ("watch", "shift")]
    ranked.sort(key=lambda f: -f.psi)
    features = None
    if ranked:
        parts = [f"{feature_label(f.column).lower()} ({PSI_WORDS[f.status]})" for f in ranked[:3]]
        features = "Measures that differ most from training: " + ", ".join(parts) + "."
    return OODText(headline, meaning, action, features)


def drift_change_text(d: DriftReport) -> str:
    """Why learners changed cohort since the previous model, in one or two sentences."""
    if d.n_compared == 0:
        return "No learner of the previous model is in this one, so none could be compared."
    text = (
        f"{count(d.n_changed)} of {count(d.n_compared)} learners ({share(d.changed_share)}) "
        "are in a different cohort than under the previous model."
    )
    if d.n_changed == 0:
        return text
    if d.changed_basis == "assignments":
        text += (
            f" {count(d.changed_by_features)} of them moved because their own measures "
            "changed (new activity, or a new feature run): the previous model would also "
            f"place them elsewhere now. {count(d.changed_by_refit)} moved because the model "
            "was refitted: the previous model would still give them their old cohort."
        )
    else:
        text += (
            " The comparison uses today's measures for both models, so every one of these "
            "moves comes from refitting the model, none from changed measures."
        )
    return text


__all__ = [
    "FEATURE_WORDS",
    "PSI_WORDS",
    "RATE_OUTCOMES",
    "CohortSummary",
    "OODText",
    "OutcomeLine",
    "TraitLine",
    "distinctive",
    "drift_change_text",
    "explain_feature",
    "ood_text",
    "ordered_cards",
    "outcome_averages",
    "outcome_sentence",
    "overview",
    "population_centre",
    "summarize_cohorts",
    "value_parts",
    "value_text",
    "velocity_words",
]
