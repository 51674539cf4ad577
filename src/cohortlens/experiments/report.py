"""Self-contained HTML report of an experiment, written for a programme manager.

Sections: the trust verdict (a refusal, never a green banner, when the input cannot be
analysed), a plain-language summary of every comparison, the results table (one row per
metric × arm, intervals on one line, numbers to the precision their standard error
supports), the technical details, a forest plot of relative changes, and, for sequential
runs with several looks, the intervals over time. The per-segment report adds a forest
plot per (metric, arm) with one row per segment (cohort). Inline CSS and SVG; the shared
look of :mod:`cohortlens.reports`; nothing is fetched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

from cohortlens.experiments.errors import AnalysisStatus, ReportStatus, Verdict
from cohortlens.experiments.results import EffectEstimate, ExperimentReport, SequentialLook
from cohortlens.experiments.spec import MetricKind
from cohortlens.reports.fmt import (
    NBSP,
    UNDEFINED,
    count,
    decimals_for,
    estimate,
    interval,
    p_value,
    pct,
    signed_pct,
    tick,
)
from cohortlens.reports.page import ReportMeta, page, section
from cohortlens.reports.svg import GRID, INK, MUTED, Svg, esc, nice_ticks, text_width, wrap

if TYPE_CHECKING:
    from cohortlens.experiments.segments import SegmentReport

#: Verdict colours (Okabe & Ito: distinguishable under colour-vision deficiencies); the
#: verdict is always written beside its colour too.
_COLORS = {
    Verdict.IMPROVEMENT: "#0072b2",
    Verdict.REGRESSION: "#d55e00",
    Verdict.NO_SIGNIFICANT_CHANGE: "#5b6472",
    Verdict.WITHHELD: "#9a6700",
    Verdict.NOT_COMPUTED: "#8c959f",
}
_VERDICT_WORDS = {
    Verdict.IMPROVEMENT: "improvement",
    Verdict.REGRESSION: "regression",
    Verdict.NO_SIGNIFICANT_CHANGE: "no significant change",
    Verdict.WITHHELD: "withheld",
    Verdict.NOT_COMPUTED: "not computed",
}
_STATUS_WORDS = {
    AnalysisStatus.EMPTY_ARM: "an arm has no learners with this metric",
    AnalysisStatus.TOO_FEW_UNITS: "an arm has a single learner, too few for an interval",
    AnalysisStatus.ZERO_DENOMINATOR: "the ratio's denominator is zero in an arm",
    AnalysisStatus.ZERO_VARIANCE: "the metric does not vary, so nothing can be tested",
    AnalysisStatus.ZERO_BASELINE: "the control's mean is zero, so no relative change",
    AnalysisStatus.OK: "computed",
}
_WIDTH = 1100


def render_html(
    report: ExperimentReport,
    *,
    title: str = "Experiment report",
    meta: ReportMeta | None = None,
    units: Mapping[str, str] | None = None,
) -> str:
    """The report as one HTML document (a string). ``units`` names each mean metric's unit
    (e.g. ``{"revenue": "EUR"}``); ``meta`` fills the header (command, data range)."""
    body = _report_body(report, units or {})
    return page(title, meta or ReportMeta(), body)


def _report_body(report: ExperimentReport, units: Mapping[str, str]) -> str:
    refusal = _refusal(report)
    if refusal is not None:
        return f'<div class="banner refuse" role="alert">{esc(refusal)}</div>' + section(
            "What was given",
            "The learners per arm and, for each comparison, why it could not be tested.",
            _srm_table(report) + _status_table(report),
        )
    parts = [
        _banner(report),
        section("In short", "", _plain_summary(report, units)),
        section(
            "Results",
            "One row per metric and arm against the control. Change = arm − control; relative "
            "change = change ÷ control. The 95 % interval is the range that holds the true "
            "change with 95 % confidence: when it excludes 0 the change is significant"
            + (
                " at the end of the experiment. Verdicts use the always-valid p-value instead, "
                "which stays valid however often the results were looked at, so a verdict can "
                "say no significant change while the interval excludes 0."
                if report.sequential is not None
                else "."
            ),
            _effects_table(report, units),
        ),
        section(
            "Relative change by metric",
            "Each row is one metric and arm: the dot is the relative change against control, "
            "the thick bar its 95 % interval"
            + (
                ", the thin bar the always-valid interval (valid however often the results "
                "were looked at)"
                if report.sequential is not None
                else ""
            )
            + ". Right of the dashed line = higher than control.",
            _verdict_legend()
            + _forest_panel(report.effects, sequential=report.sequential is not None),
        ),
        section("Is the split trustworthy?", _srm_lead(report), _srm_table(report)),
        section("Technical details", _details_lead(report), _details_table(report, units)),
    ]
    if report.looks:
        keys = sorted({(lk.metric, lk.variant) for lk in report.looks}, key=_look_order(report))
        kinds = {(e.metric, e.variant): e.kind for e in report.effects}
        charts = []
        for metric, variant in keys:
            series = [lk for lk in report.looks if lk.metric == metric and lk.variant == variant]
            charts.append(
                f"<h3>{esc(metric)}: {esc(variant)} against {esc(report.control)}</h3>"
                + _time_svg(series, metric, kinds.get((metric, variant)), units.get(metric))
            )
        parts.append(
            section(
                "Intervals over time (sequential looks)",
                "The change at each look, counting every learner up to that period. Grey band: "
                "the fixed-horizon 95 % interval at each look (not valid when results are "
                "watched as they come in); blue band: the always-valid interval, which is.",
                "".join(charts),
            )
        )
    parts.append(_methods_note(report))
    return "".join(parts)


def _look_order(report: ExperimentReport) -> Callable[[tuple[str, str]], int]:
    order = {(e.metric, e.variant): i for i, e in enumerate(report.effects)}
    return lambda key: order.get(key, len(order))


# ---------------------------------------------------------------------- verdict


def _refusal(report: ExperimentReport) -> str | None:
    """Why this report cannot be read as an experiment result, or ``None``."""
    with_units = [v for v in report.variants if report.units.get(v, 0) > 0]
    if len(with_units) < 2:
        found = ", ".join(f"{v} ({report.units.get(v, 0):,})" for v in report.variants) or "none"
        return (
            "Not analysed: an experiment needs at least two arms with learners; found "
            f"{found}. No result can be read from this input."
        )
    if not report.effects:
        return "Not analysed: no metric was given, so there is nothing to compare."
    if all(e.status is AnalysisStatus.EMPTY_ARM for e in report.effects) or not any(
        math.isfinite(e.pvalue) for e in report.effects
    ):
        return (
            "Not analysed: no comparison could be tested (every metric's reason is listed "
            "below). No result can be read from this input."
        )
    return None


def _banner(report: ExperimentReport) -> str:
    if report.status is ReportStatus.SRM_MISMATCH:
        return (
            '<div class="banner bad" role="alert">Conclusions withheld: the split of learners '
            f"between arms differs from the design (sample ratio mismatch, p = "
            f"{esc(p_value(report.srm.pvalue))}, below {report.srm.alpha}). The assignment or "
            "the data pipeline is broken, so no effect below may be claimed.</div>"
        )
    if report.status is ReportStatus.GUARDRAIL_FAILED:
        failed = sorted({e.metric for e in report.effects if e.guardrail_failed})
        return (
            '<div class="banner bad" role="alert">Guardrail failed: '
            f"{esc(', '.join(failed))} got significantly worse. Do not ship as is.</div>"
        )
    untested = [e for e in report.effects if not math.isfinite(e.pvalue)]
    extra = ""
    if untested:
        names = ", ".join(f"{e.metric} ({e.variant})" for e in untested)
        extra = (
            f'<div class="banner warn">Not every comparison could be tested: {esc(names)}; '
            "see each status under Technical details.</div>"
        )
    return (
        '<div class="banner ok">Trust checks passed: the split matches the design (sample '
        f"ratio p = {esc(p_value(report.srm.pvalue))}) and no guardrail got worse.</div>" + extra
    )


def _srm_lead(report: ExperimentReport) -> str:
    return (
        "Learners per arm against the design's split. A sample ratio mismatch (p below "
        f"{report.srm.alpha}) means learners were lost or mis-assigned unevenly, and every "
        "result above is then unreliable."
    )


def _srm_table(report: ExperimentReport) -> str:
    total = sum(report.srm.observed.values()) or 0
    rows = "".join(
        f"<tr><td>{esc(v)}{' (control)' if v == report.control != 'control' else ''}</td>"
        f"<td class='num'>{count(report.srm.observed.get(v, 0))}</td>"
        f"<td class='num'>{_expected(report.srm.expected.get(v, math.nan))}</td>"
        f"<td class='num'>{pct(report.srm.observed.get(v, 0) / total, 1) if total else UNDEFINED}"
        "</td></tr>"
        for v in report.variants
    )
    note = (
        f"<p class='note'>Sample ratio check: chi-square = {esc(_num(report.srm.statistic))}, "
        f"df = {report.srm.df}, p = {esc(p_value(report.srm.pvalue))} (flagged below "
        f"{report.srm.alpha}).</p>"
        if math.isfinite(report.srm.statistic)
        else ""
    )
    return (
        "<table><thead><tr><th>arm</th><th>learners</th><th>expected by the design</th>"
        f"<th>share</th></tr></thead><tbody>{rows}</tbody></table>{note}"
    )


def _expected(value: float) -> str:
    """An expected count: whole when it is (nearly) whole, else one decimal."""
    if not math.isfinite(value):
        return UNDEFINED
    if abs(value - round(value)) < 0.05:
        return count(round(value))
    return f"{value:,.1f}"


def _status_table(report: ExperimentReport) -> str:
    if not report.effects:
        return ""
    rows = "".join(
        f"<tr><td>{esc(e.metric)}</td><td>{esc(e.variant)}</td>"
        f"<td class='num'>{count(e.n_control)}</td><td class='num'>{count(e.n_treatment)}</td>"
        f"<td>{esc(e.status.value)}: {esc(_STATUS_WORDS[e.status])}</td></tr>"
        for e in report.effects
    )
    return (
        "<table><thead><tr><th>metric</th><th>arm</th><th>learners (control)</th>"
        f"<th>learners (arm)</th><th class='text'>status</th></tr></thead><tbody>{rows}</tbody>"
        "</table>"
    )


# ---------------------------------------------------------------------- numbers


@dataclass(frozen=True)
class _Shown:
    """How one comparison's numbers are written."""

    control: str
    treatment: str
    change: str
    change_ci: str
    relative: str
    relative_ci: str


def _is_rate(e: EffectEstimate) -> bool:
    return e.kind is MetricKind.BINARY


def _shown(e: EffectEstimate, units: Mapping[str, str]) -> _Shown:
    """The comparison's numbers, each to the precision its standard error supports."""
    rel_dec = min(3, decimals_for(100 * e.rel_std_error, fallback=1))
    relative = signed_pct(e.rel_effect_size, rel_dec)
    relative_ci = interval(
        e.rel_effect_size_ci_lower,
        e.rel_effect_size_ci_upper,
        lambda v: signed_pct(v, rel_dec),
        unit=NBSP + "%",
    )
    if _is_rate(e):
        dec = min(3, decimals_for(100 * e.std_error, fallback=1))
        level = max(0, dec - 1)
        return _Shown(
            pct(e.mean_control, level),
            pct(e.mean_treatment, level),
            _pp(e.effect_size, dec),
            interval(
                e.effect_size_ci_lower,
                e.effect_size_ci_upper,
                lambda v: _pp(v, dec),
                unit=NBSP + "pp",
            ),
            relative,
            relative_ci,
        )
    dec = decimals_for(e.std_error)
    return _Shown(
        estimate(e.mean_control, dec),
        estimate(e.mean_treatment, dec),
        estimate(e.effect_size, dec, signed=True),
        interval(
            e.effect_size_ci_lower,
            e.effect_size_ci_upper,
            lambda v: estimate(v, dec, signed=True),
        ),
        relative,
        relative_ci,
    )


def _pp(value: float, decimals: int) -> str:
    """A difference of two shares in percentage points (``+2.1 pp``)."""
    if not math.isfinite(value):
        return UNDEFINED
    return estimate(100 * value, decimals, signed=True) + NBSP + "pp"


def _num(v: float) -> str:
    if not math.isfinite(v):
        return UNDEFINED
    if abs(v) >= 1e4:
        return f"{v:,.0f}"
    if v != 0 and abs(v) < 1e-3:
        return f"{v:.2e}"
    return f"{v:,.4g}"


def _decision_p(report: ExperimentReport, e: EffectEstimate) -> float:
    """The p-value that decides the verdict (adjusted for primary metrics)."""
    seq = report.sequential is not None
    rel = report.decision == "relative"
    if e.role.value == "guardrail":
        return (
            (e.seq_rel_pvalue if rel else e.seq_pvalue)
            if seq
            else (e.rel_pvalue if rel else e.pvalue)
        )
    name = f"{'seq_' if seq else ''}{'rel_' if rel else ''}pvalue"
    if report.correction in ("holm", "bh"):
        name += f"_{report.correction}"
    value = getattr(e, name, math.nan)
    return float(value)


def _verdict_html(e: EffectEstimate) -> str:
    return (
        f'<span style="color:{_COLORS[e.verdict]};font-weight:600">'
        f"{esc(_VERDICT_WORDS[e.verdict])}</span>"
    )


def _metric_name(e: EffectEstimate) -> str:
    role = ""
    if e.role.value == "guardrail":
        role = " (guardrail)"
    return f"{e.metric}{role}"


# ---------------------------------------------------------------------- summary


def _plain_summary(report: ExperimentReport, units: Mapping[str, str]) -> str:
    arms = ", ".join(
        f"{esc(v)} {count(report.units.get(v, 0))}" for v in report.variants if v != report.control
    )
    lead = (
        f"<p class='overview'>{count(sum(report.units.values()))} learners: "
        f"{esc(report.control)} {count(report.units.get(report.control, 0))}"
        f"{'' if report.control == 'control' else ' (the control)'}, "
        f"{arms}.</p>"
    )
    sentences = []
    for e in report.effects:
        s = _shown(e, units)
        what = f"<b>{esc(_metric_name(e))}</b>, {esc(e.variant)} against {esc(e.control)}: "
        if e.verdict is Verdict.NOT_COMPUTED or not math.isfinite(e.effect_size):
            sentences.append(
                f'<p class="effect-summary">{what}could not be tested '
                f"({esc(_STATUS_WORDS[e.status])}).</p>"
            )
            continue
        verdict = _VERDICT_WORDS[e.verdict]
        unit = f" {units[e.metric]}" if e.metric in units and not _is_rate(e) else ""
        if e.verdict is Verdict.WITHHELD:
            verdict = "withheld, because the split is broken"
        elif e.role.value == "guardrail" and e.guardrail_failed is False:
            verdict += "; the guardrail holds"
        rel = (
            f", a relative change of {esc(s.relative)} (95 % interval {esc(s.relative_ci)})"
            if math.isfinite(e.rel_effect_size)
            else ""
        )
        sentences.append(
            f'<p class="effect-summary">{what}{esc(s.treatment + unit)} against '
            f"{esc(s.control + unit)}"
            f"{rel}: {_verdict_span(e, verdict)}.</p>"
        )
    return f'<div class="summary">{lead}{"".join(sentences)}</div>'


def _verdict_span(e: EffectEstimate, words: str) -> str:
    return f'<span style="color:{_COLORS[e.verdict]};font-weight:600">{esc(words)}</span>'


# ---------------------------------------------------------------------- tables


def _effects_table(report: ExperimentReport, units: Mapping[str, str]) -> str:
    p_head = "p" if report.correction == "none" else f"p ({report.correction}-adjusted)"
    if report.sequential is not None:
        p_head = "always-valid " + p_head
    head = (
        "<tr><th>metric</th><th class='text'>arm</th><th>control</th><th>arm</th>"
        "<th>change (95 % interval)</th><th>relative change (95 % interval)</th>"
        f"<th>{esc(p_head)}</th><th class='text'>verdict</th></tr>"
    )
    rows = []
    for e in report.effects:
        s = _shown(e, units)
        unit = units.get(e.metric)
        name = esc(_metric_name(e)) + (f"<br><span class='note'>{esc(unit)}</span>" if unit else "")
        rows.append(
            f"<tr><td>{name}</td><td class='text'>{esc(e.variant)}</td>"
            f"<td class='num'>{esc(s.control)}</td><td class='num'>{esc(s.treatment)}</td>"
            f"<td class='num'>{esc(s.change)}<br><span class='iv'>({esc(s.change_ci)})</span></td>"
            f"<td class='num'>{esc(s.relative)}<br><span class='iv'>({esc(s.relative_ci)})</span>"
            f"</td><td class='num'>{esc(p_value(_decision_p(report, e)))}</td>"
            f"<td class='text'>{_verdict_html(e)}</td></tr>"
        )
    note = (
        "<p class='note'>Shares are in %, changes of shares in percentage points (pp). The "
        "p-value is the chance of a change at least this large if the arm truly made no "
        "difference"
        + (
            f"; primary metrics' p-values are {esc(report.correction)}-adjusted because several "
            "comparisons were tested at once (guardrails are not adjusted)"
            if report.correction != "none"
            else ""
        )
        + ".</p>"
    )
    return (
        f"<table class='wide results'><thead>{head}</thead><tbody>{''.join(rows)}</tbody>"
        f"</table>{note}"
    )


def _details_lead(report: ExperimentReport) -> str:
    text = (
        "For analysts: the test used, the unadjusted p-value, the variance removed by CUPED "
        "(a pre-experiment covariate), the business impact interval (the change's interval "
        "times the learners it is projected onto) and each comparison's status."
    )
    if report.sequential is not None:
        text += (
            " Always-valid figures (mSPRT) stay valid however often the results were looked "
            "at; the verdicts use them."
        )
    return text


def _details_table(report: ExperimentReport, units: Mapping[str, str]) -> str:
    """One card per metric and arm: test, learners, p-values, always-valid interval, CUPED,
    impact interval and status (cards wrap to any screen width, unlike a wide table)."""
    seq = report.sequential is not None
    cards = []
    for e in report.effects:
        rate = _is_rate(e)
        dec = decimals_for(100 * e.std_error if rate else e.std_error)
        unit = units.get(e.metric, "")
        items: list[tuple[str, str]] = [  # (label, value as HTML)
            ("test", esc(e.test.replace("_", " "))),
            (
                "learners",
                esc(f"{count(e.n_control)} control, {count(e.n_treatment)} {e.variant}"),
            ),
            ("p (unadjusted)", esc(p_value(e.pvalue))),
        ]
        if seq:
            if rate:
                seq_iv = interval(
                    e.seq_ci_lower, e.seq_ci_upper, partial(_pp, decimals=dec), unit=NBSP + "pp"
                )
            else:
                seq_iv = interval(
                    e.seq_ci_lower, e.seq_ci_upper, partial(estimate, decimals=dec, signed=True)
                )
            items += [
                (
                    "always-valid interval of the change",
                    f"<span class='iv'>{esc(seq_iv)}</span>" + (f" {esc(unit)}" if unit else ""),
                ),
                ("always-valid p", esc(p_value(e.seq_pvalue))),
            ]
        width = e.impact_ci_upper - e.impact_ci_lower
        impact_dec = decimals_for(width / 4 if math.isfinite(width) else math.nan, fallback=0)
        impact = interval(
            e.impact_ci_lower,
            e.impact_ci_upper,
            partial(estimate, decimals=impact_dec, signed=True),
        )
        items += [
            (
                "CUPED variance removed",
                esc(pct(e.variance_reduction, 1) if e.cuped_applied else "not used"),
            ),
            (
                "impact interval",
                f"<span class='iv'>{esc(impact)}</span> "
                f"{esc(e.impact_unit)} over {count(e.impact_units)} learners",
            ),
            ("status", esc(f"{e.status.value.replace('_', ' ')}: {_STATUS_WORDS[e.status]}")),
        ]
        rows = "".join(f"<div><dt>{esc(k)}</dt><dd>{v}</dd></div>" for k, v in items)
        cards.append(
            f'<div class="dcard"><h3>{esc(_metric_name(e))} · {esc(e.variant)}</h3>'
            f"<dl>{rows}</dl></div>"
        )
    return f'<div class="dcards">{"".join(cards)}</div>'


# ---------------------------------------------------------------------- charts


def _verdict_legend() -> str:
    items = "".join(
        f'<span style="--c:{_COLORS[v]}">{esc(_VERDICT_WORDS[v])}</span>'
        for v in (Verdict.IMPROVEMENT, Verdict.REGRESSION, Verdict.NO_SIGNIFICANT_CHANGE)
    )
    return f'<div class="legend">{items}</div>'


@dataclass(frozen=True)
class _ForestRow:
    label: str
    effect: EffectEstimate


def _forest_panel(
    effects: Sequence[EffectEstimate],
    *,
    sequential: bool,
    labels: Sequence[str] | None = None,
    y_title: str = "metric and arm",
) -> str:
    rows = [
        _ForestRow(
            labels[i] if labels is not None else f"{_metric_name(e)} · {e.variant}",
            e,
        )
        for i, e in enumerate(effects)
        if math.isfinite(e.rel_effect_size)
    ]
    if not rows:
        return '<p class="note">No relative change could be computed.</p>'
    return f'<div class="panel">{_forest_svg(rows, sequential=sequential, y_title=y_title)}</div>'


def _forest_svg(rows: Sequence[_ForestRow], *, sequential: bool, y_title: str) -> str:
    """Rows of relative changes with their intervals around a zero line."""
    values = []
    for r in rows:
        e = r.effect
        values += [e.rel_effect_size_ci_lower, e.rel_effect_size_ci_upper, e.rel_effect_size]
        if sequential:
            values += [e.seq_rel_ci_lower, e.seq_rel_ci_upper]
    finite = [v for v in values if math.isfinite(v)] + [0.0]
    lo, hi = min(finite), max(finite)
    pad = 0.08 * (hi - lo or 0.01)
    lo, hi = lo - pad, hi + pad
    size = 13.0
    lines = [wrap(r.label, 280, size) for r in rows]
    label_w = max(text_width(line, size) for ls in lines for line in ls)
    x0 = 34 + label_w + 16
    texts = [
        f"{signed_pct(r.effect.rel_effect_size)} ({_VERDICT_WORDS[r.effect.verdict]})" for r in rows
    ]
    value_w = max(text_width(t, 12.5) for t in texts) + 24
    plot_w = _WIDTH - x0 - value_w
    heights = [max(28.0, 16 * len(ls) + 10) for ls in lines]
    top = 10
    plot_bottom = top + sum(heights)
    height = plot_bottom + 48

    def x(v: float) -> float:
        return x0 + (max(lo, min(hi, v)) - lo) / (hi - lo) * plot_w

    svg = Svg(_WIDTH, height, "forest plot of relative changes")
    ticks = nice_ticks(lo, hi, 6)
    right = -math.inf
    for t in ticks:
        label = signed_pct(t, _tick_decimals(ticks))
        half = text_width(label, 11) / 2
        svg.line(x(t), top, x(t), plot_bottom, GRID)
        if x(t) - half >= right + 6 and x(t) + half <= _WIDTH:
            svg.text(x(t), plot_bottom + 15, label, 11, "middle", MUTED)
            right = x(t) + half
    svg.line(x(0.0), top - 4, x(0.0), plot_bottom, "#6b7280", 1.2, "4 3")
    y: float = top
    for r, ls, h, text in zip(rows, lines, heights, texts, strict=True):
        e = r.effect
        cy = y + h / 2
        color = _COLORS[e.verdict]
        first = cy - (len(ls) - 1) * 8 + size * 0.35
        for i, line in enumerate(ls):
            svg.text(x0 - 12, first + 16 * i, line, size, "end")
        if sequential and math.isfinite(e.seq_rel_ci_lower) and math.isfinite(e.seq_rel_ci_upper):
            svg.line(
                x(e.seq_rel_ci_lower),
                cy,
                x(e.seq_rel_ci_upper),
                cy,
                color,
                1.5,
                extra=' stroke-opacity="0.6" stroke-linecap="round"',
            )
        if math.isfinite(e.rel_effect_size_ci_lower) and math.isfinite(e.rel_effect_size_ci_upper):
            svg.line(
                x(e.rel_effect_size_ci_lower),
                cy,
                x(e.rel_effect_size_ci_upper),
                cy,
                color,
                5,
                extra=' stroke-opacity="0.9" stroke-linecap="round"',
            )
        svg.circle(
            x(e.rel_effect_size),
            cy,
            4.5,
            "#ffffff",
            tip=f"{r.label}: {signed_pct(e.rel_effect_size)} (95 % interval "
            f"{interval(e.rel_effect_size_ci_lower, e.rel_effect_size_ci_upper, signed_pct, unit=NBSP + '%')})",
            extra=f' stroke="{color}" stroke-width="2"',
        )
        svg.text(x0 + plot_w + 16, cy + 4.5, text, 12.5, fill=color)
        y += h
    svg.x_title(x0 + plot_w / 2, height - 8, "relative change against control")
    svg.y_title(14, top + (plot_bottom - top) / 2, y_title)
    return svg.render()


def _tick_decimals(ticks: Sequence[float]) -> int:
    """Decimals (of a percentage) that write the tick step exactly, at most 3."""
    if len(ticks) < 2:
        return 1
    step = abs(ticks[1] - ticks[0]) * 100
    return next((d for d in range(4) if abs(round(step, d) - step) < 1e-9), 3)


def _time_svg(
    series: Sequence[SequentialLook], metric: str, kind: MetricKind | None, unit: str | None
) -> str:
    """Change over looks with the fixed and the always-valid bands."""
    rate = kind is MetricKind.BINARY
    scale = 100.0 if rate else 1.0
    values = [
        scale * v
        for lk in series
        for v in (lk.ci_lower, lk.ci_upper, lk.seq_ci_lower, lk.seq_ci_upper, lk.effect_size)
        if math.isfinite(v)
    ] + [0.0]
    lo, hi = min(values), max(values)
    pad = 0.08 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    w, h = _WIDTH, 260
    y_ticks = nice_ticks(lo, hi, 5)
    tick_w = max((text_width(tick(t), 11) for t in y_ticks), default=20)
    top, bottom, right = 10, 52, 14
    what = f"change in {metric}" + (
        " (percentage points)" if rate else (f" ({unit})" if unit else "")
    )
    title_lines = wrap(what, h - top - bottom - 10, 12)
    left = 8 + 15 * len(title_lines) + tick_w + 10
    n = len(series)
    plot_w = w - left - right

    def x(i: int) -> float:
        return left + 10 + (i / max(n - 1, 1)) * (plot_w - 20)

    def y(v: float) -> float:
        return top + (hi - scale * v) / (hi - lo) * (h - top - bottom)

    def band(lower: list[float], upper: list[float], fill: str) -> str:
        pts = [(x(i), y(v)) for i, v in enumerate(upper) if math.isfinite(v)]
        pts += [(x(i), y(v)) for i, v in reversed(list(enumerate(lower))) if math.isfinite(v)]
        if len(pts) < 3:
            return ""
        return f'<polygon points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}" fill="{fill}"/>'

    svg = Svg(w, h, f"{metric}: change over time")
    for t in y_ticks:
        yy = top + (hi - t) / (hi - lo) * (h - top - bottom)
        svg.line(left, yy, w - right, yy, GRID)
        svg.text(left - 6, yy + 4, tick(t), 11, "end", MUTED)
    svg.add(
        band([lk.seq_ci_lower for lk in series], [lk.seq_ci_upper for lk in series], "#0072b233")
    )
    svg.add(band([lk.ci_lower for lk in series], [lk.ci_upper for lk in series], "#5b647244"))
    zero = top + hi / (hi - lo) * (h - top - bottom)
    svg.line(left, zero, w - right, zero, "#6b7280", 1.2, "4 3")
    pts = [
        (x(i), y(lk.effect_size)) for i, lk in enumerate(series) if math.isfinite(lk.effect_size)
    ]
    if len(pts) > 1:
        svg.polyline(pts, INK, 1.5)
    right_edge = -math.inf
    for i, lk in enumerate(series):
        label = str(lk.label)
        half = text_width(label, 11) / 2
        if x(i) - half >= right_edge + 8 and x(i) + half <= w:
            svg.text(x(i), h - bottom + 16, label, 11, "middle", MUTED)
            right_edge = x(i) + half
    svg.x_title(left + plot_w / 2, h - 8, "look (learners counted up to this period)")
    for k, line in enumerate(title_lines):
        svg.y_title(18 + 15 * k, top + (h - top - bottom) / 2, line, 12)
    return f'<div class="panel">{svg.render()}</div>'


def _methods_note(report: ExperimentReport) -> str:
    seq = ""
    if report.sequential is not None:
        seq = (
            " Always-valid results use a normal-mixture mSPRT tuned at "
            f"{report.sequential.tuning_n:,} learners; verdicts use them."
        )
    return section(
        "Method",
        "",
        '<p class="note">Welch t-test for means, z-test for proportions (unpooled, no '
        "continuity correction) and ratios (delta method with covariance). Relative change = "
        "change / control mean, with a delta-method interval. CUPED adjusts for a "
        "pre-experiment covariate with a pooled coefficient. Verdicts of primary metrics use "
        f"{esc(report.correction)}-adjusted p-values; guardrails are not adjusted and fail on "
        "a significant change in the harmful direction. Impact intervals are the decision "
        "interval of the change times the learners shown (ratio metrics: times the control's "
        f"mean denominator).{seq} Method and sources: docs/EXPERIMENTS.md.</p>",
    )


# ---------------------------------------------------------------------- segments


def render_segments_html(
    seg: SegmentReport,
    *,
    title: str = "Experiment report by segment",
    meta: ReportMeta | None = None,
    units: Mapping[str, str] | None = None,
) -> str:
    """A per-segment report: the post-hoc warning, whether the segment effects differ, one
    forest plot of segment changes per (metric, arm), then the total report."""
    parts = []
    if seg.warning:
        parts.append(f'<div class="banner warn">{esc(seg.warning)}</div>')
    het_rows = "".join(
        f"<tr><td>{esc(h.metric)}</td><td class='text'>{esc(h.variant)}</td>"
        f"<td class='num'>{esc(_num(h.q))}</td><td class='num'>{h.df}</td>"
        f"<td class='num'>{esc(p_value(h.pvalue))}</td><td class='num'>{esc(pct(h.i_squared))}</td>"
        "</tr>"
        for h in seg.heterogeneity
    )
    parts.append(
        section(
            f"Do the effects differ between {seg.by} segments?",
            "Cochran's Q tests whether the change differs between segments: a small p-value "
            "says it does. I² is the share of the differences between segments that chance "
            f"does not explain (0 %: none). Segment p-values are corrected across the "
            f"{len(seg.segments)} segments ({seg.segment_correction}); segment sample-ratio "
            "p-values are Holm-adjusted.",
            "<table><thead><tr><th>metric</th><th class='text'>arm</th><th>Q</th><th>df</th>"
            f"<th>p</th><th>I²</th></tr></thead><tbody>{het_rows}</tbody></table>",
        )
    )
    forests = []
    for e in seg.total.effects:
        seg_rows: list[EffectEstimate] = []
        labels: list[str] = []
        for name, rep in seg.segments.items():
            for s_e in rep.effects:
                if (s_e.metric, s_e.variant) == (e.metric, e.variant):
                    seg_rows.append(s_e)
                    labels.append(
                        f"{seg.by} {name} ({count(s_e.n_control + s_e.n_treatment)} learners)"
                    )
        seg_rows.append(e)
        labels.append(f"all learners ({count(e.n_control + e.n_treatment)})")
        forests.append(
            f"<h3>{esc(_metric_name(e))}: {esc(e.variant)} against {esc(e.control)}</h3>"
            + _forest_panel(
                [replace(s) for s in seg_rows], sequential=False, labels=labels, y_title=seg.by
            )
        )
    parts.append(
        section(
            f"Relative change by {seg.by}",
            "One row per segment and one for all learners: the dot is the relative change "
            "against control, the bar its 95 % interval; verdicts use p-values corrected "
            "across segments.",
            _verdict_legend() + "".join(forests),
        )
    )
    parts.append(f"<h2>All learners</h2>{_report_body(seg.total, units or {})}")
    return page(title, meta or ReportMeta(), "".join(parts))


__all__ = ["render_html", "render_segments_html"]
