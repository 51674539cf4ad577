"""One self-contained HTML report of a cohort model, written for a programme manager.

Sections: a plain-language summary (generated from the data, one paragraph per cohort), one
card per cohort, the learners of each cohort (sortable, filterable, CSV download), sizes, a
profile heat map, a 2-D map of learners, feature distributions, outcomes with 95 %
intervals, how well the cohorts hold together (and the choice of k), and drift against the
previous model. Every technical measure is explained in one sentence where it first
appears. Inline CSS, SVG and a little JS (tooltips, tables): nothing is fetched. Shared look
and conventions: :mod:`cohortlens.reports`, docs/REPORTS.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cohortlens.cohorts import _matrix as mx
from cohortlens.cohorts.archetypes import Archetype, FeatureProfile, feature_label, feature_unit
from cohortlens.cohorts.drilldown import MAX_ROWS_PER_COHORT, cohort_learners
from cohortlens.cohorts.matching import PSI_SHIFT, PSI_WATCH, DriftReport, psi_status
from cohortlens.cohorts.model import CohortModel
from cohortlens.cohorts.params import INSUFFICIENT_COHORT, FeatureSpec
from cohortlens.cohorts.quality import Estimate
from cohortlens.cohorts.summary import (
    FEATURE_WORDS,
    RATE_OUTCOMES,
    CohortSummary,
    drift_change_text,
    explain_feature,
    ordered_cards,
    outcome_averages,
    overview,
    population_centre,
    summarize_cohorts,
    value_text,
    velocity_words,
)
from cohortlens.reports.fmt import (
    MINUS,
    count,
    fmt,
    pct,
    pct_interval,
    plural,
    share,
    tick,
    times,
)
from cohortlens.reports.page import ReportMeta, chips, page
from cohortlens.reports.page import section as _page_section
from cohortlens.reports.svg import (
    GREY,
    GRID,
    INK,
    MUTED,
    Svg,
    cohort_colour,
    diverging,
    esc,
    ink_on,
    lines_width,
    log_ticks,
    nice_max,
    nice_ticks,
    text_width,
    wrap,
)
from cohortlens.reports.table import TABLE_JS, data_table

#: Learners drawn for the 2-D projection.
PROJECTION_POINTS = 2500
#: Width (px) of full-width charts: the panel's inner width on a 1366-px screen.
CHART_WIDTH = 1100
#: Font size of row labels and the line height of wrapped labels.
_LABEL = 13.0
_LEADING = 16.0


def write_report(
    model: CohortModel,
    path: Path | str,
    X: mx.FeatureTable | None = None,  # noqa: N803
    title: str = "Learner cohorts",
    *,
    outcomes: pa.Table | None = None,
    revenue_unit: str | None = None,
    command: str | None = None,
    drilldown_rows: int = MAX_ROWS_PER_COHORT,
) -> Path:
    """Render :func:`render_report` to ``path`` (UTF-8) and return the path."""
    out = Path(path)
    out.write_text(
        render_report(
            model,
            X,
            title=title,
            outcomes=outcomes,
            revenue_unit=revenue_unit,
            command=command,
            drilldown_rows=drilldown_rows,
        ),
        encoding="utf-8",
    )
    return out


def render_report(
    model: CohortModel,
    X: mx.FeatureTable | None = None,  # noqa: N803
    *,
    title: str = "Learner cohorts",
    generated_at: datetime | None = None,
    outcomes: pa.Table | None = None,
    revenue_unit: str | None = None,
    command: str | None = None,
    drilldown_rows: int = MAX_ROWS_PER_COHORT,
) -> str:
    """The report as one HTML string.

    ``X`` (the feature table) enables the 2-D map, the drill-down tables and the data's date
    range; ``outcomes`` (``learner_id`` + completed / churned / revenue) adds each learner's
    outcomes to the drill-down; ``revenue_unit`` names revenue's unit (e.g. ``"EUR"``);
    ``command`` is the command line shown in the header; ``drilldown_rows`` caps the learners
    embedded per cohort. Everything else comes from the fitted model itself.
    """
    model._check_fitted()
    cards = _ordered_cards(model)
    summaries = summarize_cohorts(model, revenue_unit)
    meta = ReportMeta(
        command=command,
        data_range=_date_range(X),
        data_basis="first and last event of the learners shown"
        if X is not None
        else "not known: the report was made without the feature table",
        generated_at=generated_at,
    )
    sections = [
        _summary(model, summaries),
        _cards_section(model, cards, revenue_unit),
        _drilldown_section(model, X, outcomes, revenue_unit, drilldown_rows),
        _section(
            "Cohort sizes",
            "Learners per cohort, as a count and as a share of all learners.",
            _sizes_chart(cards),
        ),
        _section(
            "What sets each cohort apart",
            "Each cell is the cohort's centre (its typical value) in the feature's own unit. "
            "The colour compares it with the average learner: orange = higher, blue = lower, "
            "white = about the same (scale below the chart). Hover over a cell for details.",
            _profile_heatmap(model, cards),
        ),
        _projection_section(model, X, cards),
        _section(
            "Feature distributions by cohort",
            "For each feature, one row per cohort: the box holds the middle half of the "
            "cohort's learners (25th to 75th percentile), the dark line is the median, and the "
            "whiskers reach the 10th and 90th percentiles.",
            _distributions(model, cards),
        ),
        _outcomes_section(model, cards, revenue_unit),
        _selection_section(model),
        _drift_section(model),
        _ood_section(model, X),
    ]
    body = "".join(s for s in sections if s)
    return page(
        title,
        meta,
        body,
        scripts=(TABLE_JS,),
        footer=f"cohortlens · cohort model artifact schema "
        f"{esc(model.to_dict()['schema_version'])}"
        + (f" · feature run {esc(model.feature_run_)}" if model.feature_run_ else ""),
    )


# ---------------------------------------------------------------------- helpers


def _ordered_cards(model: CohortModel) -> list[Archetype]:
    """Cards in id order, the insufficient-data cohort last (and only if it has members)."""
    return ordered_cards(model)


def _section(title: str, lead: str, content: str) -> str:
    return _page_section(title, lead, content)


def _date_range(X: mx.FeatureTable | None) -> tuple[str, str] | None:  # noqa: N803
    """First and last event date (UTC) of the learners in the feature table."""
    if X is None or mx.n_rows(X) == 0:
        return None
    names = mx.column_names(X)
    if "first_ts" not in names or "last_ts" not in names:
        return None
    if isinstance(X, pa.Table | pa.RecordBatch):
        lo, hi = pc.min(X.column("first_ts")).as_py(), pc.max(X.column("last_ts")).as_py()
    else:
        lo, hi = min(X["first_ts"]), max(X["last_ts"])
    if lo is None or hi is None:
        return None
    return _iso_date(lo), _iso_date(hi)


def _iso_date(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).date().isoformat()
    if hasattr(value, "isoformat"):
        return str(value.isoformat())[:10]
    return str(value)[:10]


def _cohort_label(card: Archetype) -> str:
    return f"{card.cohort_id} · {card.name}"


def _row_labels(
    cards: Sequence[Archetype], max_width: float, size: float = _LABEL
) -> tuple[list[list[str]], float]:
    """Each card's label wrapped to ``max_width`` px, and the widest line's width."""
    lines = [wrap(_cohort_label(c), max_width, size) for c in cards]
    return lines, max((lines_width(ls, size) for ls in lines), default=0.0)


def _row_height(lines: Sequence[str], minimum: float) -> float:
    return max(minimum, _LEADING * len(lines) + 10)


def _label_block(svg: Svg, x: float, centre_y: float, lines: Sequence[str]) -> None:
    """Right-aligned label lines, vertically centred on ``centre_y``."""
    first = centre_y - (len(lines) - 1) * _LEADING / 2 + _LABEL * 0.35
    for i, line in enumerate(lines):
        svg.text(x, first + i * _LEADING, line, _LABEL, "end")


def _value_text(value: float, column: str, ticks: bool = False) -> str:
    unit = feature_unit(column)
    if unit in ("share", "probability"):
        return pct(value)
    return tick(value) if ticks else fmt(value)


def _outcome_title(name: str, revenue_unit: str | None) -> str:
    if name in RATE_OUTCOMES:
        return f"{name} (share of learners)"
    return f"{name} per learner ({revenue_unit or 'unit not given: see --revenue-unit'})"


# ---------------------------------------------------------------------- summary


def _summary(model: CohortModel, summaries: Sequence[CohortSummary]) -> str:
    paras = "".join(
        f'<p class="cohort-summary" data-cohort="{s.cohort_id}"><b>{esc(s.title)}</b>'
        f"{esc(s.text[len(s.title) :])}</p>"
        for s in summaries
    )
    return _section(
        "In short",
        "",
        f'<div class="summary"><p class="overview">{esc(overview(model, summaries))}</p>'
        f"{paras}</div>",
    )


# ---------------------------------------------------------------------- cards


_MARKS = (
    '<div class="legend marks"><span><span class="mark">▲</span>higher than the average '
    'learner</span><span><span class="mark">▼</span>lower than the average learner</span>'
    "<span>(z +1.2): how far from the average, in standard deviations of all learners; "
    "beyond ±0.5 is notable</span></div>"
)


def _traits(model: CohortModel, card: Archetype, n: int = 4) -> str:
    ranked = sorted(
        (
            (abs(p.z), col, p)
            for col, p in card.profile.items()
            if math.isfinite(p.z) and math.isfinite(p.centre) and p.coverage >= 0.5
        ),
        key=lambda t: -t[0],
    )[:n]
    items = []
    for _, col, p in ranked:
        mark, word = ("▲", "higher") if p.z > 0 else ("▼", "lower")
        avg = population_centre(model, col)
        extra = ""
        if col == "velocity_logit_per_week":
            extra = f'<div class="note">{esc(velocity_words(p.centre))}</div>'
        z = f"{p.z:+.1f}".replace("-", MINUS)
        items.append(
            f'<li data-feature="{esc(col)}" title="{esc(explain_feature(col))}">'
            f'<span class="mark" aria-label="{word} than average">{mark}</span>'
            f"{esc(feature_label(col))}: <b>{esc(value_text(col, p.centre))}</b> "
            f'<span class="z">(average {esc(value_text(col, avg))}; z {z})</span>{extra}</li>'
        )
    return f'<ul class="traits">{"".join(items)}</ul>'


def _card_outcomes(card: Archetype, averages: dict[str, float], revenue_unit: str | None) -> str:
    parts = []
    for name, est in card.outcomes.items():
        if est.n == 0 or not math.isfinite(est.value):
            continue
        avg = averages.get(name, math.nan)
        ratio = est.value / avg if avg else math.nan
        if name in RATE_OUTCOMES:
            value, ci = pct(est.value), pct_interval(est.ci_lower, est.ci_upper)
            label = name
        else:
            unit = f" {revenue_unit}" if revenue_unit else ""
            value, ci = f"{fmt(est.value)}{unit}", f"{fmt(est.ci_lower)}–{fmt(est.ci_upper)}"
            label = f"{name} per learner"
        parts.append(
            f'<div data-outcome="{esc(name)}" data-value="{est.value!r}" '
            f'data-lo="{est.ci_lower!r}" data-hi="{est.ci_upper!r}" data-avg="{avg!r}">'
            f"{esc(label)} <b>{esc(value)}</b> <span class='ci'>({esc(ci)}) · "
            f"{esc(times(ratio))} average</span></div>"
        )
    return f'<div class="outc">{"".join(parts)}</div>' if parts else ""


def _partial_note(model: CohortModel, card: Archetype) -> str:
    """'59 % placed without some measurements (memory half-life missing for 58 %)'."""
    if card.cohort_id == INSUFFICIENT_COHORT or card.partial_share < 0.005:
        return ""
    missing = [
        (1.0 - p.coverage, s.column)
        for s in model.features_
        if (p := card.profile.get(s.column)) is not None and p.coverage < 1.0
    ]
    detail = ""
    if missing:
        share, col = max(missing)
        detail = f" ({feature_label(col)} missing for {pct(share)})"
    return (
        f'<div class="note partial" title="These learners lack a measurement (for example no '
        f"repeat reviews, so no memory half-life); they were placed using the measurements "
        f'they have.">{esc(pct(card.partial_share))} placed on the measurements they have'
        f"{esc(detail)}</div>"
    )


def _cards_section(
    model: CohortModel, cards: Sequence[Archetype], revenue_unit: str | None = None
) -> str:
    averages = outcome_averages(cards)
    html_cards = []
    for c in cards:
        colour = cohort_colour(c.cohort_id)
        label = (
            "insufficient data" if c.cohort_id == INSUFFICIENT_COHORT else f"cohort {c.cohort_id}"
        )
        html_cards.append(
            f'<article class="card" data-cohort="{c.cohort_id}" data-share="{c.share!r}" '
            f'data-size="{c.size}" style="--c:{colour}">'
            f'<div class="id">{esc(label)}</div><h3>{esc(c.name)}</h3>'
            f'<div class="size">{count(c.size)} learners · {pct(c.share, 1)} of all</div>'
            f'<div class="bar"><i style="width:{100 * c.share:.1f}%"></i></div>'
            f"{_partial_note(model, c)}{_traits(model, c)}"
            f"{_card_outcomes(c, averages, revenue_unit)}</article>"
        )
    note = (
        f"The insufficient-data group holds learners with fewer than "
        f"{plural(model.min_events, 'event')} or with values for under "
        f"{model.min_observed_share:.0%} of the clustering features."
    )
    return _section(
        "Cohorts at a glance",
        "Each cohort's name follows a fixed rule on its profile (docs/COHORTS.md). Each card "
        "lists the four features that set the cohort apart most, then its outcomes with their "
        "95 % interval (the range that holds the true value with 95 % confidence) and the "
        "ratio to the average learner. " + note,
        _MARKS + f'<div class="cards">{"".join(html_cards)}</div>',
    )


# ---------------------------------------------------------------------- drill-down


def _drilldown_section(
    model: CohortModel,
    X: mx.FeatureTable | None,  # noqa: N803
    outcomes: pa.Table | None,
    revenue_unit: str | None,
    max_rows: int,
) -> str:
    title = "Learners in each cohort"
    if X is None or mx.n_rows(X) == 0:
        return _section(
            title,
            "",
            "<p class='note'>Not available: the report was made without the feature table.</p>",
        )
    groups = cohort_learners(model, X, outcomes, max_rows=max_rows, revenue_unit=revenue_unit)
    lead = (
        "Open a cohort to see its learners: click a column header to sort, type in the filter "
        "box to keep matching rows, and download the rows shown as CSV. Distance to centre is "
        "how far a learner sits from the cohort's typical profile (0 = exactly typical); the "
        "typical learners are the members nearest the centre. The tables hold the "
        f"{count(mx.n_rows(X))} learners of the feature table given (the cards above describe "
        f"the {count(model.n_learners_)} the model was fitted on)."
    )
    sampled = any(g.sampled for g in groups)
    if sampled:
        lead += (
            f" To keep the report small, at most {count(max_rows)} learners per cohort are "
            "included: the typical learners plus a random sample of the rest. The full list: "
            "cohortlens assign --features FEATURES.parquet --out assignments.parquet."
        )
    boxes = []
    cards = {c.cohort_id: c for c in _ordered_cards(model)}
    for g in groups:
        card = cards[g.cohort_id]
        shown = (
            f"showing {count(len(g.rows))} of {count(g.total)}: typical learners and a random "
            "sample"
            if g.sampled
            else f"all {count(g.total)}"
        )
        typical = ""
        if g.typical:
            names = ", ".join(f"{lid} ({fmt(d, 2)})" for lid, d in g.typical)
            typical = (
                f'<p class="typical"><b>Typical learners</b> (distance to centre): '
                f"{esc(names)}. Half of the cohort lies within {fmt(g.median_distance, 2)} of "
                "the centre.</p>"
            )
        boxes.append(
            f'<details class="dd" data-cohort="{g.cohort_id}" '
            f'style="--c:{cohort_colour(g.cohort_id)}"><summary>{esc(_cohort_label(card))} '
            f"<span>({esc(shown)})</span></summary>{typical}"
            + data_table(
                table_id=f"learners-{g.cohort_id}",
                columns=g.columns,
                rows=g.rows,
                file_name=f"cohort-{g.cohort_id}-learners.csv",
            )
            + "</details>"
        )
    return _section(title, lead, "".join(boxes))


# ---------------------------------------------------------------------- sizes


def _sizes_chart(cards: Sequence[Archetype]) -> str:
    width = CHART_WIDTH
    labels, label_w = _row_labels(cards, 320)
    x0 = 34 + label_w + 14
    value_w = text_width("1,000,000 (100.0 %)", _LABEL) + 12
    span = width - x0 - value_w
    heights = [_row_height(ls, 30) for ls in labels]
    top, bottom = 8, 52
    height = top + sum(heights) + bottom
    svg = Svg(width, height, "cohort sizes")
    max_share = max((c.share for c in cards), default=1.0) or 1.0
    hi = nice_max(max_share)
    plot_bottom = top + sum(heights)
    for t in nice_ticks(0, hi, 5):
        x = x0 + span * t / hi
        svg.line(x, top, x, plot_bottom, GRID)
        svg.text(x, plot_bottom + 16, pct(t), 11.5, "middle", MUTED)
    y: float = top
    for c, ls, h in zip(cards, labels, heights, strict=True):
        _label_block(svg, x0 - 12, y + h / 2, ls)
        w = span * c.share / hi
        svg.rect(
            x0,
            y + h / 2 - 9,
            w,
            18,
            cohort_colour(c.cohort_id),
            tip=f"{c.name}\n{count(c.size)} learners ({pct(c.share, 1)})",
        )
        svg.text(
            x0 + w + 8, y + h / 2 + 4.5, f"{count(c.size)} ({pct(c.share, 1)})", _LABEL, fill=MUTED
        )
        y += h
    svg.x_title(x0 + span / 2, height - 8, "share of all learners")
    svg.y_title(14, top + (plot_bottom - top) / 2, "cohort")
    return f'<div class="panel">{svg.render()}</div>'


# ---------------------------------------------------------------------- heat map


def _profile_specs(model: CohortModel) -> list[FeatureSpec]:
    return list(model.profile_features_)


def _profile_heatmap(model: CohortModel, cards: Sequence[Archetype]) -> str:
    specs = _profile_specs(model)
    labels, label_w = _row_labels(cards, 220)
    n = max(1, len(specs))
    cell_w = max(64.0, min(96.0, (CHART_WIDTH - 34 - label_w - 34) / n))
    left = 34 + label_w + 26
    width = left + cell_w * n + 8
    heads = [wrap(feature_label(s.column), cell_w - 8, 12, bold=True) for s in specs]
    head_lines = max((len(h) for h in heads), default=1)
    top = 10 + head_lines * 15 + 16
    heights = [_row_height(ls, 34) for ls in labels]
    legend_y = top + sum(heights) + 16
    height = legend_y + 62
    svg = Svg(width, height, "profile heat map")
    for j, (s, head) in enumerate(zip(specs, heads, strict=True)):
        x = left + j * cell_w + cell_w / 2
        first = top - 18 - (len(head) - 1) * 15
        svg.lines(x, first, head, 12, "middle", weight="600", leading=15 / 12)
        unit = feature_unit(s.column)
        unit_lines = wrap(unit, cell_w - 6, 10.5) if unit else []
        if unit_lines:
            svg.text(x, top - 5, unit_lines[0], 10.5, "middle", fill=MUTED)
    y: float = top
    for c, ls, h in zip(cards, labels, heights, strict=True):
        svg.rect(left - 16, y + 6, 8, h - 12, cohort_colour(c.cohort_id))
        _label_block(svg, left - 24, y + h / 2, ls)
        for j, s in enumerate(specs):
            p = c.profile.get(s.column)
            x = left + j * cell_w
            if p is None or not math.isfinite(p.centre):
                svg.rect(x + 1, y + 1, cell_w - 2, h - 2, "#f3f4f6", tip="no values")
                svg.text(x + cell_w / 2, y + h / 2 + 4, "–", 12, "middle", fill=MUTED)
                continue
            avg = population_centre(model, s.column)
            tip = (
                f"{c.name}\n{feature_label(s.column)}: {value_text(s.column, p.centre)} "
                f"(average learner {value_text(s.column, avg)}; z = {p.z:+.2f})\nmedian "
                f"{_value_text(p.percentiles[2], s.column)} · {pct(p.coverage)} have a value"
            )
            fill = diverging(p.z)
            svg.rect(x + 1, y + 1, cell_w - 2, h - 2, fill, tip=tip)
            svg.text(
                x + cell_w / 2,
                y + h / 2 + 4.5,
                _value_text(p.centre, s.column),
                12.5,
                "middle",
                ink_on(fill),
            )
        y += h
    # the colour scale, so the caption's colours can be checked against the cells
    scale_x, scale_w = left, min(360.0, cell_w * n)
    steps = 40
    for i in range(steps):
        z = -2 + 4 * (i + 0.5) / steps
        svg.rect(scale_x + scale_w * i / steps, legend_y, scale_w / steps + 0.5, 12, diverging(z))
    svg.text(scale_x, legend_y + 26, "lower than average", 11.5, fill=MUTED)
    svg.text(scale_x + scale_w / 2, legend_y + 26, "same", 11.5, "middle", fill=MUTED)
    svg.text(scale_x + scale_w, legend_y + 26, "higher", 11.5, "end", fill=MUTED)
    svg.x_title(
        scale_x + scale_w + 16 + (width - scale_x - scale_w - 16) / 2,
        legend_y + 10,
        "feature (cell = cohort's typical value)",
    )
    svg.y_title(14, top + (legend_y - 16 - top) / 2, "cohort")
    return f'<div class="panel">{svg.render()}</div>'


# ---------------------------------------------------------------------- projection


def _direction_words(loadings: np.ndarray, specs: Sequence[FeatureSpec]) -> str:
    """The two features that drive a map direction, in words ('more active weeks, ...')."""
    top = np.argsort(-np.abs(loadings))[:2]
    words = []
    for t in top:
        col = specs[int(t)].column
        more, less, _ = FEATURE_WORDS.get(
            col, (f"higher {feature_label(col)}", f"lower {feature_label(col)}", "")
        )
        words.append(more if loadings[t] > 0 else less)
    return " and ".join(words)


def _projection_section(
    model: CohortModel,
    X: mx.FeatureTable | None,  # noqa: N803
    cards: Sequence[Archetype],
) -> str:
    lead = (
        "Each dot is a learner. The map squeezes the clustering features into the two "
        "directions along which learners differ most (principal components), so learners "
        "who behave alike sit close together; crosses mark the cohort centres."
    )
    title = "Learners in two dimensions"
    if X is None or mx.n_rows(X) == 0 or len(model.features_) < 2:
        return _section(
            title,
            lead,
            "<p class='note'>Not drawn: the report was rendered without the feature table "
            "(or the model clusters on a single feature).</p>",
        )
    n = mx.n_rows(X)
    rng = np.random.default_rng(model.random_state)
    rows = np.sort(rng.choice(n, min(n, 20 * PROJECTION_POINTS), replace=False))
    sub = _take_rows(X, rows)
    labels = model.predict(sub)
    z = model.scaler_.transform(mx.analysis_matrix(sub, model.features_))
    keep = np.isfinite(z).all(axis=1) & (labels != INSUFFICIENT_COHORT)
    z, labels = z[keep][:PROJECTION_POINTS], labels[keep][:PROJECTION_POINTS]
    if len(z) < 3:
        return _section(title, lead, "<p class='note'>Too few learners.</p>")
    mean = z.mean(axis=0)
    _, sv, vt = np.linalg.svd(z - mean, full_matrices=False)
    comps = vt[:2]
    explained = (sv[:2] ** 2) / (sv**2).sum()
    pts = (z - mean) @ comps.T
    cents = (model.cluster_centers_ - mean) @ comps.T
    # robust limits: the 1st-99th percentile of the learners (and every centre), padded 4 %
    lo = np.minimum(np.quantile(pts, 0.01, axis=0), cents.min(axis=0))
    hi = np.maximum(np.quantile(pts, 0.99, axis=0), cents.max(axis=0))
    span = np.where(hi - lo > 1e-9, hi - lo, 1.0)
    lo, hi = lo - 0.04 * span, hi + 0.04 * span
    span = hi - lo
    inside = ((pts >= lo) & (pts <= hi)).all(axis=1)
    n_out = int((~inside).sum())

    feats = list(model.features_)
    x_title = (
        f"→ {_direction_words(comps[0], feats)} ({pct(explained[0])} of the differences "
        "between learners)"
    )
    y_title = f"→ {_direction_words(comps[1], feats)} ({pct(explained[1])})"
    width, height = CHART_WIDTH, 600
    y_lines = wrap(y_title, height - 120, 12.5)
    left = 34 + 16 * len(y_lines) + 8
    right, top, bottom = 14, 12, 58
    x_lines = wrap(x_title, width - left - right, 12.5)
    bottom += 16 * (len(x_lines) - 1)
    pw, ph = width - left - right, height - top - bottom
    radius = 2.6
    inset = radius + 2.0

    def sx(v: float) -> float:
        return left + inset + (v - lo[0]) / span[0] * (pw - 2 * inset)

    def sy(v: float) -> float:
        return top + ph - inset - (v - lo[1]) / span[1] * (ph - 2 * inset)

    svg = Svg(width, height, "2-D map of learners coloured by cohort")
    svg.rect(left, top, pw, ph, "#fbfbfc", extra=' class="plot-area" stroke="#e5e7eb"')
    for t in nice_ticks(float(lo[0]), float(hi[0]), 7):
        svg.line(sx(t), top, sx(t), top + ph, GRID)
        svg.text(sx(t), top + ph + 15, tick(t), 11, "middle", MUTED)
    for t in nice_ticks(float(lo[1]), float(hi[1]), 6):
        svg.line(left, sy(t), left + pw, sy(t), GRID)
        svg.text(left - 6, sy(t) + 4, tick(t), 11, "end", MUTED)
    name_of = {c.cohort_id: c.name for c in cards}
    order = rng.permutation(len(pts))
    for i in order:  # one SVG element per plotted learner (bounded sample)
        if not inside[i]:
            continue
        cid = int(labels[i])
        svg.circle(
            sx(float(pts[i, 0])),
            sy(float(pts[i, 1])),
            radius,
            cohort_colour(cid),
            extra=' class="pt" fill-opacity="0.55"',
        )
    placed: list[tuple[float, float, float, float]] = []
    for i, cid in enumerate(model.cohort_ids_.tolist()):
        cx, cy = sx(float(cents[i, 0])), sy(float(cents[i, 1]))
        d = f"M{cx - 8:.1f},{cy - 8:.1f} L{cx + 8:.1f},{cy + 8:.1f} M{cx - 8:.1f},{cy + 8:.1f} L{cx + 8:.1f},{cy - 8:.1f}"
        svg.add(
            f'<g data-tip="{esc(name_of.get(cid, ""))}"><path d="{d}" stroke="#ffffff" '
            f'stroke-width="6"/><path d="{d}" stroke="{cohort_colour(cid)}" stroke-width="3"/></g>'
        )
        label = str(cid)
        w, h = text_width(label, 14, True) + 2, 14.0
        bounds = (left + 2, top + 2, left + pw - 2, top + ph - 2)
        for dx, dy in (
            (12, -6),
            (12, 16),
            (-12 - w, -6),
            (-12 - w, 16),
            (-w / 2, -14),
            (-w / 2, 26),
        ):
            box = (cx + dx, cy + dy - h, cx + dx + w, cy + dy)
            fits = box[0] >= bounds[0] and box[2] <= bounds[2] and box[1] >= bounds[1]
            fits = fits and box[3] <= bounds[3]
            clash = any(
                not (box[2] <= b[0] or box[0] >= b[2] or box[3] <= b[1] or box[1] >= b[3])
                for b in placed
            )
            if fits and not clash:
                break
        placed.append(box)
        svg.text(
            box[0],
            box[3] - 2,
            label,
            14,
            weight="700",
            extra=' stroke="#fff" stroke-width="3" paint-order="stroke"',
        )
    for k, line in enumerate(x_lines):
        svg.x_title(left + pw / 2, top + ph + 36 + 16 * k, line)
    for k, line in enumerate(y_lines):
        svg.y_title(16 + 16 * k, top + ph / 2, line)
    shown = [c for c in cards if c.cohort_id != INSUFFICIENT_COHORT]
    out_note = (
        f" {count(n_out)} of them ({pct(n_out / len(pts), 1)}) lie beyond the axes, which "
        "hold the middle 98 % of learners, and are not drawn."
        if n_out
        else ""
    )
    return _section(
        title,
        lead + f" {count(len(pts))} learners drawn at random.{out_note} Axis values are in "
        "scaled units (the spread of a typical feature is about 1).",
        f'<div class="panel">{_legend(shown)}{svg.render()}</div>',
    )


def _legend(cards: Sequence[Archetype]) -> str:
    items = "".join(
        f'<span style="--c:{cohort_colour(c.cohort_id)}">{esc(_cohort_label(c))}</span>'
        for c in cards
    )
    return f'<div class="legend">{items}</div>'


def _take_rows(X: mx.FeatureTable, rows: np.ndarray) -> mx.FeatureTable:  # noqa: N803
    """The given rows of any supported table."""
    if isinstance(X, pa.Table | pa.RecordBatch):
        return X.take(pa.array(rows))
    if hasattr(X, "iloc"):
        return X.iloc[rows]
    return {k: np.asarray(X[k])[rows] for k in mx.column_names(X)}


# ---------------------------------------------------------------------- distributions


def _distributions(model: CohortModel, cards: Sequence[Archetype]) -> str:
    panels = [_distribution_panel(s, cards) for s in _profile_specs(model)]
    legend = _legend(cards)
    return f'{legend}<div class="grid2">{"".join(p for p in panels if p)}</div>'


def _spaced_ticks(
    ticks: Sequence[float], pos: dict[float, float], labels: dict[float, str], size: float
) -> list[float]:
    """Drop ticks whose labels would touch their left neighbour's."""
    kept: list[float] = []
    right = -math.inf
    for t in ticks:
        half = text_width(labels[t], size) / 2
        if pos[t] - half >= right + 6:
            kept.append(t)
            right = pos[t] + half
    return kept


def _distribution_panel(spec: FeatureSpec, cards: Sequence[Archetype]) -> str:
    rows: list[tuple[Archetype, FeatureProfile]] = []
    for c in cards:
        prof = c.profile.get(spec.column)
        if prof is not None and all(math.isfinite(v) for v in prof.percentiles):
            rows.append((c, prof))
    if not rows:
        return ""
    log = spec.transform == "log"
    lo = min(p.percentiles[0] for _, p in rows)
    hi = max(p.percentiles[-1] for _, p in rows)
    if log:
        lo, hi = max(lo, 1e-6), max(hi, 1e-6)
    if hi <= lo:
        hi = lo + (abs(lo) if lo else 1.0)
    width, row_h = 400, 22
    label = feature_label(spec.column)
    title_lines = wrap(label, width - 16, 13, bold=True)
    unit = feature_unit(spec.column)
    unit_words = {"share": "%", "probability": "%"}.get(unit, unit)
    axis = (unit_words or "value") + (", log scale" if log else "")
    top = 10 + 17 * len(title_lines) + 4
    left = 52
    height = top + row_h * len(rows) + 44

    def f(v: float) -> float:
        return math.log(max(v, 1e-6)) if log else v

    flo, fhi = f(lo), f(hi)
    plot_w = width - left - 24

    def sx(v: float) -> float:
        return left + (f(v) - flo) / (fhi - flo) * plot_w

    svg = Svg(width, height, f"distribution of {label} by cohort")
    svg.lines(8, 22, title_lines, 13, weight="600", leading=17 / 13)
    plot_bottom = top + row_h * len(rows)
    all_ticks = [t for t in (log_ticks(lo, hi) if log else nice_ticks(lo, hi, 5)) if lo <= t <= hi]
    texts = {t: _value_text(t, spec.column, True) for t in all_ticks}
    for t in _spaced_ticks(all_ticks, {t: sx(t) for t in all_ticks}, texts, 10.5):
        svg.line(sx(t), top - 4, sx(t), plot_bottom, GRID)
        svg.text(sx(t), plot_bottom + 13, texts[t], 10.5, "middle", fill=MUTED)
    for i, (c, p) in enumerate(rows):
        y = top + i * row_h
        colour = cohort_colour(c.cohort_id)
        p10, p25, p50, p75, p90 = p.percentiles
        svg.text(left - 8, y + 15, str(c.cohort_id), 11.5, "end", fill=MUTED)
        tip = (
            f"{c.name}\n{label}: median {_value_text(p50, spec.column)}; middle half "
            f"{_value_text(p25, spec.column)}–{_value_text(p75, spec.column)}; "
            f"10–90 %: {_value_text(p10, spec.column)}–{_value_text(p90, spec.column)}"
        )
        svg.line(sx(p10), y + 11, sx(p90), y + 11, colour, 1.5)
        svg.rect(
            sx(p25), y + 4, sx(p75) - sx(p25), 14, colour, tip=tip, extra=' fill-opacity="0.75"'
        )
        svg.line(sx(p50), y + 3, sx(p50), y + 19, INK, 2)
    svg.x_title(left + plot_w / 2, height - 8, axis, 11.5)
    svg.y_title(14, top + (plot_bottom - top) / 2, "cohort", 11.5)
    return f'<div class="panel">{svg.render()}</div>'


# ---------------------------------------------------------------------- outcomes


def _outcomes_section(
    model: CohortModel, cards: Sequence[Archetype], revenue_unit: str | None = None
) -> str:
    names: list[str] = []
    for c in cards:
        for k in c.outcomes:
            if k not in names:
                names.append(k)
    if not names:
        return _section(
            "Outcomes by cohort",
            "Completion, churn and revenue per cohort.",
            "<p class='note'>No outcomes were supplied when the model was fitted.</p>",
        )
    averages = outcome_averages(cards)
    panels = [_outcome_panel(name, cards, averages, revenue_unit) for name in names]
    return _section(
        "Outcomes by cohort",
        "Dot = the cohort's rate (or mean); bar = its 95 % interval, the range that holds the "
        "true value with 95 % confidence; the dashed line is the average over all learners.",
        "".join(panels) + _association(model),
    )


def _association(model: CohortModel) -> str:
    q = model.quality_
    if not q.outcomes:
        return ""
    rows = "".join(
        f"<tr><td>{esc(o.outcome)}</td><td class='num'>{count(o.n)}</td>"
        f"<td class='num'>{pct(o.n_positive / o.n if o.n else math.nan)}</td>"
        f"<td class='num'>{fmt(o.cramers_v, 2)}</td><td class='num'>{fmt(o.auc_cohort, 2)}</td>"
        f"<td class='num'>{fmt(o.auc_features, 2)}</td></tr>"
        for o in q.outcomes
    )
    return (
        '<div class="panel"><h3>How much does the cohort tell about the outcome?</h3>'
        "<p class='note'><b>Cramér's V</b> measures how strongly cohort and outcome go "
        "together, from 0 (not at all) to 1 (the cohort decides the outcome). <b>AUC</b> is the "
        "chance that a learner with the outcome is ranked above one without it when only their "
        "cohort is known: 0.5 is guessing, 1 is perfect. Beside it, the AUC of a model that "
        "sees every feature: the most a cohort id could approach.</p>"
        "<table><thead><tr><th>outcome</th><th>learners</th><th>rate</th><th>Cramér's V</th>"
        "<th>AUC (cohort)</th><th>AUC (all features)</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def _outcome_panel(
    name: str, cards: Sequence[Archetype], averages: dict[str, float], revenue_unit: str | None
) -> str:
    rows = [(c, c.outcomes[name]) for c in cards if name in c.outcomes and c.outcomes[name].n > 0]
    if not rows:
        return ""
    rate = name in RATE_OUTCOMES
    overall = averages.get(name, math.nan)
    hi = (
        1.0
        if rate
        else max((e.ci_upper if math.isfinite(e.ci_upper) else e.value) for _, e in rows) * 1.05
    )
    hi = nice_max(hi if hi > 0 else 1.0)
    width = CHART_WIDTH
    labels, label_w = _row_labels([c for c, _ in rows], 300)
    x0 = 34 + label_w + 14

    def value_of(e: Estimate) -> str:
        return pct(e.value, 1) if rate else fmt(e.value)

    def ci_of(e: Estimate) -> str:
        if rate:
            return pct_interval(e.ci_lower, e.ci_upper, 1)
        return f"{fmt(e.ci_lower)}–{fmt(e.ci_upper)}"

    texts = [f"{value_of(e)} ({ci_of(e)})" for _, e in rows]
    value_w = max(text_width(t, 12.5) for t in texts) + 24
    plot_w = width - x0 - value_w
    heights = [_row_height(ls, 28) for ls in labels]
    title = _outcome_title(name, revenue_unit)
    top = 50
    plot_bottom = top + sum(heights)
    height = plot_bottom + 50

    def sx(v: float) -> float:
        return x0 + max(0.0, min(v, hi)) / hi * plot_w

    svg = Svg(width, height, f"{name} by cohort")
    svg.text(8, 18, title, 14, weight="600")
    for t in nice_ticks(0, hi, 5):
        svg.line(sx(t), top - 4, sx(t), plot_bottom, GRID)
        svg.text(sx(t), plot_bottom + 15, pct(t) if rate else tick(t), 11, "middle", fill=MUTED)
    if math.isfinite(overall):
        svg.line(sx(overall), top - 8, sx(overall), plot_bottom, MUTED, 1.2, "4 3")
        avg_text = f"all learners: {pct(overall, 1) if rate else fmt(overall)}"
        w = text_width(avg_text, 11.5)
        ax = min(max(sx(overall), x0 + w / 2), x0 + plot_w - w / 2)
        svg.text(ax, top - 14, avg_text, 11.5, "middle", fill=MUTED)
    y: float = top
    for (c, e), ls, h, text in zip(rows, labels, heights, texts, strict=True):
        colour = cohort_colour(c.cohort_id)
        cy = y + h / 2
        _label_block(svg, x0 - 12, cy, ls)
        if math.isfinite(e.ci_lower) and math.isfinite(e.ci_upper):
            svg.line(sx(e.ci_lower), cy, sx(e.ci_upper), cy, colour, 3)
        svg.circle(
            sx(e.value),
            cy,
            5.5,
            colour,
            tip=f"{c.name}\n{name}: {value_of(e)} (95 % interval {ci_of(e)}; n = {count(e.n)})",
        )
        svg.text(x0 + plot_w + 16, cy + 4.5, text, 12.5)
        y += h
    x_axis = f"share of learners who {'completed' if name == 'completed' else 'churned'}"
    if not rate:
        x_axis = f"mean {name} per learner" + (f" ({revenue_unit})" if revenue_unit else "")
    elif name not in ("completed", "churned"):
        x_axis = f"share of learners: {name}"
    svg.x_title(x0 + plot_w / 2, height - 8, x_axis)
    svg.y_title(14, top + (plot_bottom - top) / 2, "cohort")
    return f'<div class="panel">{svg.render()}</div>'


# ---------------------------------------------------------------------- selection


def _quality(model: CohortModel) -> str:
    q = model.quality_
    sil_word = (
        "strong structure"
        if q.silhouette > 0.5
        else "reasonable structure"
        if q.silhouette > 0.25
        else "weak structure"
    )
    stab_word = "stable" if q.stability_ari >= 0.9 else "not fully stable"
    feats = ", ".join(feature_label(s.column) for s in model.features_)
    dropped = (
        " Not used: "
        + "; ".join(f"{feature_label(c)} ({why})" for c, why in model.dropped_features_.items())
        + "."
        if model.dropped_features_
        else ""
    )
    figures = chips(
        [
            (
                fmt(q.silhouette, 2),
                f"silhouette: {sil_word}",
                "How clearly learners sit in their own cohort rather than the next one, from "
                "−1 to 1; above 0.25 is reasonable, above 0.5 strong.",
            ),
            (
                fmt(q.davies_bouldin, 2),
                "Davies–Bouldin index",
                "How much each cohort overlaps its most similar one; lower is better, 0 "
                "would be perfectly separate cohorts.",
            ),
            (
                fmt(q.stability_ari, 3),
                f"stability: {stab_word}",
                "How exactly the same cohorts come back when refitted on resampled learners "
                "(adjusted Rand index): 1 = identical, 0 = no better than chance.",
            ),
        ]
    )
    return f"<p class='note'>Clustered on {esc(feats)}.{esc(dropped)}</p>{figures}"


def _selection_section(model: CohortModel) -> str:
    sel = model.selection_
    title = "How well the cohorts hold together"
    if sel is None:
        return _section(
            title,
            f"The number of cohorts (k = {model.n_cohorts_}) was given, not chosen.",
            _quality(model),
        )
    cands = sel.candidates
    width, height, left, bottom, top = 720, 330, 70, 56, 20
    ks = [c.k for c in cands]
    kmin, kmax = min(ks), max(ks)
    right = 20

    def sx(k: float) -> float:
        return left + 14 + (k - kmin) / max(1, kmax - kmin) * (width - left - right - 28)

    def sy(v: float) -> float:
        return top + (1 - max(0.0, min(1.0, v))) * (height - top - bottom)

    svg = Svg(width, height, "choice of the number of cohorts")
    chosen = sel.chosen_k
    svg.rect(sx(chosen) - 14, top, 28, height - top - bottom, "#fde68a")
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        svg.line(left, sy(t), width - right, sy(t), GRID)
        svg.text(left - 8, sy(t) + 4, f"{t:.2f}", 11, "end", fill=MUTED)
    thr = model.selection.min_stability_ari
    svg.line(left, sy(thr), width - right, sy(thr), "#6b7280", 1, "5 4")
    for series, key, colour in (
        ("silhouette", "silhouette", "#0072b2"),
        ("stability", "stability_ari", "#e69f00"),
    ):
        pts = [(sx(c.k), sy(getattr(c, key))) for c in cands]
        svg.polyline(pts, colour, 2.5)
        for c, (x, y) in zip(cands, pts, strict=True):
            svg.circle(x, y, 4.5, colour, tip=f"k = {c.k}\n{series}: {getattr(c, key):.3f}")
    for c in cands:
        svg.text(
            sx(c.k),
            height - bottom + 18,
            str(c.k),
            12,
            "middle",
            weight="700" if c.k == chosen else None,
        )
    svg.x_title((left + width - right) / 2, height - 10, "number of cohorts (k)")
    svg.y_title(18, top + (height - top - bottom) / 2, "score (0 to 1)")
    legend = (
        '<div class="legend"><span style="--c:#0072b2">silhouette (higher = better separated)'
        '</span><span style="--c:#e69f00">stability (higher = more reproducible)</span>'
        '<span style="--c:#fde68a">chosen k</span><span style="--c:#6b7280">dashed line: the '
        f"stability a k needs ({thr})</span></div>"
    )
    return _section(
        title,
        f"The number of cohorts was chosen by the data: {sel.reason}. Each k was fitted on "
        f"{sel.sample_size:,} sampled learners; silhouette on {sel.silhouette_sample_size:,}.",
        f'{_quality(model)}<div class="panel">{legend}{svg.render()}</div>',
    )


# ---------------------------------------------------------------------- out of distribution


def _ood_section(model: CohortModel, X: mx.FeatureTable | None) -> str:  # noqa: N803
    """Are these learners like the ones the model learned from? (needs ``X``)"""
    if X is None:
        return ""
    from cohortlens.cohorts.ood import ood_summary
    from cohortlens.cohorts.summary import PSI_WORDS, ood_text

    o = ood_summary(model, X)
    t = ood_text(o)
    title = "Out of distribution: are these learners like the ones the model learned from?"
    lead = (
        "A cohort model only knows the kinds of learners it was fitted on. This check measures "
        "how many of the learners in this report lie outside that range."
    )
    if not math.isfinite(o.share_beyond):
        return _section(title, lead, f"<p class='note'>{esc(t.headline)} {esc(t.meaning)}</p>")
    figures = chips(
        [
            (
                share(o.share_beyond),
                "of learners are unlike the training learners",
                f"{count(o.n_beyond)} of {count(o.n_assessed)} learners are further from every "
                "cohort centre than 99 in 100 training learners (distance "
                f"{fmt(o.distance_p99, 2)} in scaled units).",
            ),
            (
                share(o.max_share),
                "warning level",
                "About 1 % is normal: that many of the training learners are that far out too.",
            ),
        ]
    )
    warn = f"<p class='note ood-warning'><b>Warning:</b> {esc(o.message)}</p>" if o.warning else ""
    body = (
        f"<div class='ood-reading'><p><b>What we found.</b> {esc(t.headline)}</p>"
        f"<p><b>What it means.</b> {esc(t.meaning)}</p>"
        f"<p><b>What to do.</b> {esc(t.action)}</p>"
        + (f"<p>{esc(t.features)}</p>" if t.features else "")
        + "</div>"
    )
    rows = "".join(
        f"<tr><td>{esc(feature_label(f.column))}</td><td>{esc(PSI_WORDS.get(f.status, f.status))}"
        f"</td><td class='num'>{_psi_text(f.psi)}</td></tr>"
        for f in sorted(o.features, key=lambda f: -f.psi if math.isfinite(f.psi) else 0.0)
    )
    table = (
        "<details><summary>Each measure against the training data</summary>"
        "<p class='note'>The population stability index (PSI) compares the spread of a "
        f"measure with its spread in training: below {PSI_WATCH} about the same, "
        f"{PSI_WATCH}–{PSI_SHIFT} somewhat different, above {PSI_SHIFT} very different.</p>"
        "<table><thead><tr><th>measure</th><th>compared with training</th><th>PSI</th></tr>"
        f"</thead><tbody>{rows}</tbody></table></details>"
        if rows
        else ""
    )
    return _section(title, lead, figures + warn + body + table)


# ---------------------------------------------------------------------- drift


def _drift_section(model: CohortModel) -> str:
    d = model.drift_
    if d is None:
        return _section(
            "Drift versus the previous model",
            "Cohort shares, feature stability and learners who changed cohort.",
            "<p class='note'>No previous model: this is the first run (ids start at 1).</p>",
        )
    headline = chips(
        [
            (
                pct(d.changed_share, 1),
                f"of {count(d.n_compared)} learners changed cohort",
                {
                    "assignments": "Compared with the stored assignments of the same learners.",
                    "reassignment": "Compared by applying the previous model to today's features.",
                }.get(d.changed_basis, f"Compared by {d.changed_basis}."),
            ),
            *_change_reason_chips(d),
            (
                _psi_text(d.cohort_share_psi),
                f"cohort-share PSI ({psi_status(d.cohort_share_psi)})",
                "How much the cohort shares moved (population stability index): below "
                f"{PSI_WATCH} stable, above {PSI_SHIFT} a shift.",
            ),
            (
                f"{sum(m.carried for m in d.matches)} / {len(d.matches)}",
                "cohorts kept their id",
                "A cohort keeps its id when its centre stays closer to the old one than to "
                "any other.",
            ),
            (
                fmt(d.mean_centroid_shift, 2),
                "mean centre shift",
                "How far the kept cohorts' centres moved, in scaled units (a typical "
                "feature's spread is about 1).",
            ),
        ]
    )
    return _section(
        "Drift versus the previous model",
        "Shares by stable cohort id then and now, and the population stability index (PSI) "
        "of each feature: how much its distribution moved since the previous model "
        f"(below {PSI_WATCH} stable, {PSI_WATCH}–{PSI_SHIFT} watch, above {PSI_SHIFT} shift).",
        headline
        + f"<p class='drift-why'>{esc(drift_change_text(d))}</p>"
        + _share_shift(model)
        + _psi_chart(model)
        + _matches_table(model),
    )


def _change_reason_chips(d: DriftReport) -> list[tuple[str, str, str]]:
    """Why learners changed cohort: their features moved, or the model was refitted."""
    if d.changed_basis == "assignments":
        return [
            (
                count(d.changed_by_features),
                "moved because their features changed",
                "New activity or a new feature run moved them: the previous model would also "
                "place them elsewhere now.",
            ),
            (
                count(d.changed_by_refit),
                "moved because the model was refitted",
                "Their features still put them in their old cohort under the previous model; "
                "the new model's cohorts moved.",
            ),
        ]
    return [
        (
            count(d.n_changed),
            "moved because the model was refitted",
            "Both models were applied to today's features, so every move comes from the "
            "refit; none from changed features.",
        )
    ]


def _share_shift(model: CohortModel) -> str:
    d = model.drift_
    assert d is not None
    ids = sorted(set(d.previous_shares) | set(d.current_shares), key=lambda i: (i == 0, i))
    ids = [i for i in ids if d.previous_shares.get(i, 0) > 0 or d.current_shares.get(i, 0) > 0]
    left, row_h, width = 150, 36, CHART_WIDTH
    top = 30
    height = top + row_h * len(ids) + 48
    top_share = max([*d.previous_shares.values(), *d.current_shares.values(), 0.01])
    hi = nice_max(top_share)
    span = width - left - 160

    def sx(v: float) -> float:
        return left + v / hi * span

    svg = Svg(width, height, "cohort shares, previous and current")
    svg.text(8, 18, "share of learners: previous model (light) and now (dark)", 14, weight="600")
    plot_bottom = top + row_h * len(ids)
    for t in nice_ticks(0, hi, 5):
        svg.line(sx(t), top, sx(t), plot_bottom, GRID)
        svg.text(sx(t), plot_bottom + 15, pct(t), 11, "middle", fill=MUTED)
    for i, cid in enumerate(ids):
        y = top + i * row_h
        colour = cohort_colour(cid)
        prev, cur = d.previous_shares.get(cid, 0.0), d.current_shares.get(cid, 0.0)
        label = "insufficient" if cid == INSUFFICIENT_COHORT else f"cohort {cid}"
        svg.text(left - 10, y + 22, label, 13, "end")
        svg.rect(
            left,
            y + 5,
            sx(prev) - left,
            12,
            colour,
            tip=f"{label}: previous {pct(prev, 1)}",
            extra=' fill-opacity="0.35"',
        )
        svg.rect(left, y + 18, sx(cur) - left, 12, colour, tip=f"{label}: now {pct(cur, 1)}")
        svg.text(
            max(sx(prev), sx(cur)) + 8, y + 22, f"{pct(prev, 1)} → {pct(cur, 1)}", 12, fill=MUTED
        )
    svg.x_title(left + span / 2, height - 8, "share of learners")
    svg.y_title(14, top + (plot_bottom - top) / 2, "cohort")
    return f'<div class="panel">{svg.render()}</div>'


def _psi_chart(model: CohortModel) -> str:
    d = model.drift_
    assert d is not None
    feats = list(d.features)
    if not feats:
        return "<div class='panel'><p class='note'>No common features to compare.</p></div>"
    labels = [feature_label(f.column) for f in feats]
    left = 34 + max(text_width(lb, 13) for lb in labels) + 14
    row_h, width = 28, CHART_WIDTH
    top = 30
    height = top + row_h * len(feats) + 54
    hi = max(0.3, *(f.psi for f in feats if math.isfinite(f.psi)))
    span = width - left - 90

    def sx(v: float) -> float:
        return left + min(v, hi) / hi * span

    svg = Svg(width, height, "population stability index per feature")
    svg.text(8, 18, "PSI per feature", 14, weight="600")
    plot_bottom = top + row_h * len(feats)
    for thr, lab in ((PSI_WATCH, "watch"), (PSI_SHIFT, "shift")):
        svg.line(sx(thr), top, sx(thr), plot_bottom, "#6b7280", 1, "4 3")
        svg.text(sx(thr), plot_bottom + 15, f"{thr} {lab}", 11.5, "middle", fill=MUTED)
    colours = {"stable": "#009e73", "watch": "#e69f00", "shift": "#d55e00", "unknown": GREY}
    for i, (f, lb) in enumerate(zip(feats, labels, strict=True)):
        y = top + i * row_h
        svg.text(left - 10, y + 18, lb, 13, "end")
        v = f.psi if math.isfinite(f.psi) else 0.0
        svg.rect(
            left,
            y + 6,
            sx(v) - left,
            16,
            colours.get(f.status, GREY),
            tip=f"{lb}: PSI {fmt(f.psi, 3)} ({f.status}); nulls "
            f"{pct(f.null_share_previous, 1)} → {pct(f.null_share_current, 1)}",
        )
        svg.text(sx(v) + 8, y + 18, f"{_psi_text(f.psi)} ({f.status})", 12, fill=MUTED)
    svg.x_title(left + span / 2, height - 8, "population stability index (PSI)")
    svg.y_title(14, top + (plot_bottom - top) / 2, "feature")
    return f'<div class="panel">{svg.render()}</div>'


def _psi_text(value: float) -> str:
    if not math.isfinite(value):
        return "–"
    return "< 0.01" if value < 0.01 else f"{value:.2f}"


def _matches_table(model: CohortModel) -> str:
    d = model.drift_
    assert d is not None
    rows = "".join(
        f"<tr><td><span style='color:{cohort_colour(m.cohort_id)}'>■</span> {m.cohort_id} · "
        f"{esc(model.archetypes_[m.cohort_id].name)}</td>"
        f"<td class='num'>{'–' if m.previous_id is None else m.previous_id}</td>"
        f"<td class='num'>{fmt(m.distance, 2)}</td>"
        f"<td class='num'>{fmt(m.threshold, 2)}</td><td>{'kept' if m.carried else 'new id'}</td>"
        "</tr>"
        for m in sorted(d.matches, key=lambda m: m.cohort_id)
    )
    retired = (
        f"<p class='note'>Retired ids: {', '.join(str(i) for i in d.retired_ids)}.</p>"
        if d.retired_ids
        else ""
    )
    return (
        "<div class='panel'><table><thead><tr><th>cohort now</th><th>matched previous id</th>"
        "<th>centre distance</th><th>keep-id threshold</th><th>id</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>{retired}</div>"
    )
