"""Self-contained HTML report of an experiment (inline CSS and SVG; no script, no network).

Sections: the trust verdict (SRM), a forest plot of relative lifts with their CIs (fixed
horizon, and always-valid when sequential), the results table with business impact
intervals, and, for sequential runs with several looks, the interval over time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from html import escape
from typing import TYPE_CHECKING

from cohortlens.experiments.errors import ReportStatus, Verdict
from cohortlens.experiments.results import EffectEstimate, ExperimentReport, SequentialLook

if TYPE_CHECKING:
    from cohortlens.experiments.segments import SegmentReport

_COLORS = {
    Verdict.IMPROVEMENT: "#1a7f37",
    Verdict.REGRESSION: "#cf222e",
    Verdict.NO_SIGNIFICANT_CHANGE: "#57606a",
    Verdict.WITHHELD: "#9a6700",
    Verdict.NOT_COMPUTED: "#8c959f",
}
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem;
  color:#1f2328;max-width:1200px}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
.banner{padding:.75rem 1rem;border-radius:6px;margin:1rem 0;font-weight:600}
.ok{background:#dafbe1;border:1px solid #1a7f37}.bad{background:#ffebe9;border:1px solid #cf222e}
.warn{background:#fff8c5;border:1px solid #9a6700}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border-bottom:1px solid #d0d7de;padding:.3rem .5rem;text-align:right}
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}
.note{color:#57606a;font-size:.8rem}
svg text{font-family:inherit}
"""


def render_html(report: ExperimentReport, *, title: str = "Experiment report") -> str:
    """The report as one HTML document (a string)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        _banner(report),
        _srm_table(report),
        "<h2>Relative lift by metric (forest plot)</h2>",
        _forest_svg(report.effects, sequential=report.sequential is not None),
        '<p class="note">Thick bar: fixed-horizon CI at level '
        f"{1 - report.alpha:.0%}"
        + (
            "; thin bar: always-valid confidence sequence (valid under daily looks)"
            if report.sequential is not None
            else ""
        )
        + ". Relative CIs are symmetric (delta method on the linear scale).</p>",
        "<h2>Results</h2>",
        _effects_table(report),
    ]
    if report.looks:
        parts.append("<h2>Intervals over time (sequential looks)</h2>")
        parts.append(
            '<p class="note">Grey band: fixed-horizon CI at each look (not valid when peeking); '
            "blue band: always-valid interval (running intersection).</p>"
        )
        keys = sorted({(lk.metric, lk.variant) for lk in report.looks}, key=_look_order(report))
        for metric, variant in keys:
            series = [lk for lk in report.looks if lk.metric == metric and lk.variant == variant]
            parts.append(
                f"<h3>{escape(metric)} — {escape(variant)} vs {escape(report.control)}</h3>"
            )
            parts.append(_time_svg(series))
    parts.append(_methods_note(report))
    parts.append("</body></html>")
    return "\n".join(parts)


def _look_order(report: ExperimentReport) -> Callable[[tuple[str, str]], int]:
    order = {(e.metric, e.variant): i for i, e in enumerate(report.effects)}
    return lambda key: order.get(key, len(order))


def _banner(report: ExperimentReport) -> str:
    if report.status is ReportStatus.SRM_MISMATCH:
        return (
            '<div class="banner bad">Sample ratio mismatch (p = '
            f"{_p(report.srm.pvalue)} &lt; {report.srm.alpha}): the split differs from the design, "
            "so the assignment or the data pipeline is broken. Conclusions are withheld.</div>"
        )
    if report.status is ReportStatus.GUARDRAIL_FAILED:
        failed = sorted({e.metric for e in report.effects if e.guardrail_failed})
        return (
            '<div class="banner bad">Guardrail failed: '
            f"{escape(', '.join(failed))} regressed significantly.</div>"
        )
    if not any(math.isfinite(e.pvalue) for e in report.effects):
        return (
            '<div class="banner warn">Nothing could be tested: no comparison has a p-value '
            "(see each status).</div>"
        )
    return (
        f'<div class="banner ok">No sample ratio mismatch (p = {_p(report.srm.pvalue)}); '
        "no guardrail regression.</div>"
    )


def _srm_table(report: ExperimentReport) -> str:
    rows = "".join(
        f"<tr><td>{escape(v)}</td><td></td><td>{report.srm.observed.get(v, 0):,}</td>"
        f"<td>{report.srm.expected.get(v, math.nan):,.1f}</td></tr>"
        for v in report.variants
    )
    return (
        "<table><tr><th>Variant</th><th></th><th>Units</th><th>Expected</th></tr>"
        f"{rows}</table>"
        f'<p class="note">SRM chi-square = {_num(report.srm.statistic)}, df = {report.srm.df}, '
        f"p = {_p(report.srm.pvalue)} (flag below {report.srm.alpha}).</p>"
    )


def _effects_table(report: ExperimentReport) -> str:
    seq = report.sequential is not None
    head = [
        "Metric",
        "Variant",
        "Control",
        "Treatment",
        "Abs. lift [CI]",
        "Rel. lift [CI]",
        "p",
        f"p ({report.correction})",
    ]
    if seq:
        head += ["Always-valid CI", "Always-valid p"]
    head += ["CUPED var. reduction", "Impact interval", "Verdict", "Status"]
    rows = []
    for e in report.effects:
        adjusted = {"holm": e.pvalue_holm, "bh": e.pvalue_bh}.get(report.correction, e.pvalue)
        cells = [
            escape(e.metric) + (" (guardrail)" if e.role.value == "guardrail" else ""),
            escape(e.variant),
            _num(e.mean_control),
            _num(e.mean_treatment),
            _with_ci(_num, e.effect_size, e.effect_size_ci_lower, e.effect_size_ci_upper),
            _with_ci(
                _pct, e.rel_effect_size, e.rel_effect_size_ci_lower, e.rel_effect_size_ci_upper
            ),
            _p(e.pvalue),
            "—" if e.role.value == "guardrail" else _p(adjusted),
        ]
        if seq:
            cells += [f"[{_num(e.seq_ci_lower)}, {_num(e.seq_ci_upper)}]", _p(e.seq_pvalue)]
        cells += [
            _pct(e.variance_reduction) if e.cuped_applied else "—",
            f"[{_num(e.impact_ci_lower)}, {_num(e.impact_ci_upper)}] "
            f"{escape(e.impact_unit)} over {e.impact_units:,} learners",
            f'<span style="color:{_COLORS[e.verdict]};font-weight:600">'
            f"{escape(e.verdict.value)}</span>",
            escape(e.status.value),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"
    return f"<table>{header}{''.join(rows)}</table>"


def _forest_svg(effects: Sequence[EffectEstimate], *, sequential: bool) -> str:
    """Rows of relative lifts with CIs around a zero line."""
    rows = [e for e in effects if math.isfinite(e.rel_effect_size)]
    if not rows:
        return '<p class="note">No relative lift could be computed.</p>'
    values = []
    for e in rows:
        values += [e.rel_effect_size_ci_lower, e.rel_effect_size_ci_upper]
        if sequential:
            values += [e.seq_rel_ci_lower, e.seq_rel_ci_upper]
    finite = [v for v in values if math.isfinite(v)] + [0.0]
    lo, hi = min(finite), max(finite)
    pad = 0.08 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    label_w, plot_w, row_h, top = 260, 520, 26, 24
    width, height = label_w + plot_w + 240, top + row_h * len(rows) + 30

    def x(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * plot_w

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        'aria-label="forest plot of relative lifts">'
    ]
    x0 = x(0.0)
    out.append(
        f'<line x1="{x0:.1f}" y1="{top - 10}" x2="{x0:.1f}" y2="{height - 24}" stroke="#8c959f" '
        'stroke-dasharray="4 3"/>'
    )
    for tick in _ticks(lo, hi):
        out.append(
            f'<text x="{x(tick):.1f}" y="{height - 8}" font-size="11" text-anchor="middle" '
            f'fill="#57606a">{_pct(tick)}</text>'
        )
    for i, e in enumerate(rows):
        y = top + i * row_h + row_h / 2
        color = _COLORS[e.verdict]
        out.append(
            f'<text x="4" y="{y + 4:.1f}" font-size="12">'
            f"{escape(e.metric)} · {escape(e.variant)}"
            f"{' (guardrail)' if e.role.value == 'guardrail' else ''}</text>"
        )
        if sequential and math.isfinite(e.seq_rel_ci_lower) and math.isfinite(e.seq_rel_ci_upper):
            out.append(
                _hline(
                    x(max(e.seq_rel_ci_lower, lo)),
                    x(min(e.seq_rel_ci_upper, hi)),
                    y,
                    color,
                    1.5,
                    0.5,
                )
            )
        if math.isfinite(e.rel_effect_size_ci_lower):
            out.append(
                _hline(
                    x(e.rel_effect_size_ci_lower), x(e.rel_effect_size_ci_upper), y, color, 5, 0.9
                )
            )
        out.append(
            f'<circle cx="{x(e.rel_effect_size):.1f}" cy="{y:.1f}" r="4.5" fill="white" '
            f'stroke="{color}" '
            'stroke-width="2"/>'
        )
        out.append(
            f'<text x="{label_w + plot_w + 8}" y="{y + 4:.1f}" font-size="11" fill="{color}">'
            f"{_pct(e.rel_effect_size)} ({escape(e.verdict.value.replace('_', ' '))})</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _time_svg(series: Sequence[SequentialLook]) -> str:
    """Effect estimate over looks with fixed and always-valid bands."""
    values = [
        v
        for lk in series
        for v in (lk.ci_lower, lk.ci_upper, lk.seq_ci_lower, lk.seq_ci_upper, lk.effect_size)
        if math.isfinite(v)
    ] + [0.0]
    lo, hi = min(values), max(values)
    pad = 0.08 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    w, h, left, bottom, top = 640, 220, 70, 30, 10
    n = len(series)

    def x(i: int) -> float:
        return left + (i / max(n - 1, 1)) * (w - left - 10)

    def y(v: float) -> float:
        return top + (hi - v) / (hi - lo) * (h - top - bottom)

    def band(lower: list[float], upper: list[float], fill: str) -> str:
        pts = [(x(i), y(v)) for i, v in enumerate(upper) if math.isfinite(v)]
        pts += [(x(i), y(v)) for i, v in reversed(list(enumerate(lower))) if math.isfinite(v)]
        if len(pts) < 3:
            return ""
        return f'<polygon points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}" fill="{fill}"/>'

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
        'aria-label="effect over time">'
    ]
    out.append(
        band([lk.seq_ci_lower for lk in series], [lk.seq_ci_upper for lk in series], "#0969da33")
    )
    out.append(band([lk.ci_lower for lk in series], [lk.ci_upper for lk in series], "#57606a44"))
    out.append(
        f'<line x1="{left}" y1="{y(0.0):.1f}" x2="{w - 10}" y2="{y(0.0):.1f}" stroke="#8c959f" '
        'stroke-dasharray="4 3"/>'
    )
    pts = " ".join(
        f"{x(i):.1f},{y(lk.effect_size):.1f}"
        for i, lk in enumerate(series)
        if math.isfinite(lk.effect_size)
    )
    out.append(f'<polyline points="{pts}" fill="none" stroke="#1f2328" stroke-width="1.5"/>')
    for tick in _ticks(lo, hi):
        out.append(
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" font-size="10" text-anchor="end" '
            f'fill="#57606a">{_num(tick)}</text>'
        )
    step = max(1, n // 10)
    for i in range(0, n, step):
        out.append(
            f'<text x="{x(i):.1f}" y="{h - 10}" font-size="10" text-anchor="middle" fill="#57606a">'
            f"{escape(series[i].label)}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _methods_note(report: ExperimentReport) -> str:
    seq = ""
    if report.sequential is not None:
        seq = (
            " Always-valid results use a normal-mixture mSPRT tuned at "
            f"{report.sequential.tuning_n:,} units; "
            "verdicts use them."
        )
    return (
        '<h2>Method</h2><p class="note">Welch t-test for means, z-test for proportions '
        "(unpooled, no continuity correction) and ratios (delta method with covariance). "
        "Relative lift = absolute "
        "lift / control mean, symmetric delta-method CI. CUPED uses a pre-period covariate with a "
        "pooled coefficient. Verdicts of primary metrics use "
        f"{escape(report.correction)}-adjusted p-values; guardrails are not corrected and fail "
        "on a significant regression. Impact intervals are the "
        "decision interval of the absolute lift times the learners shown (ratio metrics: times the "
        f"control's mean denominator).{seq}</p>"
    )


def _with_ci(fmt: Callable[[float], str], value: float, lower: float, upper: float) -> str:
    return f"{fmt(value)} [{fmt(lower)}, {fmt(upper)}]"


def _hline(x1: float, x2: float, y: float, color: str, width: float, opacity: float) -> str:
    return (
        f'<line x1="{x1:.1f}" y1="{y:.1f}" x2="{x2:.1f}" y2="{y:.1f}" stroke="{color}" '
        f'stroke-width="{width}" stroke-opacity="{opacity}" stroke-linecap="round"/>'
    )


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    if not span > 0:
        return [lo]
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=10 * mag)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step) + 1)]


def _num(v: float) -> str:
    if not math.isfinite(v):
        return "—"
    if abs(v) >= 1e4:
        return f"{v:,.0f}"
    if v != 0 and abs(v) < 1e-3:
        return f"{v:.3g}"
    return f"{v:,.4g}"


def _pct(v: float) -> str:
    return "—" if not math.isfinite(v) else f"{v:+.2%}"


def _p(v: float) -> str:
    if not math.isfinite(v):
        return "—"
    return f"{v:.2g}" if v < 0.001 else f"{v:.3f}"


def render_segments_html(seg: SegmentReport, *, title: str = "Experiment report by segment") -> str:
    """A per-segment report: the post-hoc warning, the heterogeneity table, one forest plot
    of segment lifts per (metric, treatment), then the total report."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
    ]
    if seg.warning:
        parts.append(f'<div class="banner warn">{escape(seg.warning)}</div>')
    parts.append(
        f'<p class="note">Segment p-values are corrected across the {len(seg.segments)} '
        f"segments ({escape(seg.segment_correction)}); segment SRM p-values are "
        "Holm-adjusted across segments.</p>"
    )
    rows = "".join(
        f"<tr><td>{escape(h.metric)}</td><td>{escape(h.variant)}</td><td>{_num(h.q)}</td>"
        f"<td>{h.df}</td><td>{_p(h.pvalue)}</td><td>{_pct(h.i_squared)}</td></tr>"
        for h in seg.heterogeneity
    )
    parts.append(
        "<h2>Do the segment effects differ? (Cochran's Q)</h2><table><tr><th>Metric</th>"
        "<th>Variant</th><th>Q</th><th>df</th><th>p</th><th>I²</th></tr>" + rows + "</table>"
    )
    for e in seg.total.effects:
        parts.append(f"<h2>{escape(e.metric)} — {escape(e.variant)}: relative lift by segment</h2>")
        seg_rows = [
            replace(
                s_e, metric=f"{seg.by}={name}", variant=f"n {s_e.n_control + s_e.n_treatment:,}"
            )
            for name, rep in seg.segments.items()
            for s_e in rep.effects
            if (s_e.metric, s_e.variant) == (e.metric, e.variant)
        ]
        total_row = replace(e, metric="total", variant=f"n {e.n_control + e.n_treatment:,}")
        parts.append(_forest_svg([*seg_rows, total_row], sequential=False))
    parts.append("<h2>Total</h2>")
    inner = render_html(seg.total, title="Total")
    parts.append(inner.split("<body>", 1)[1].rsplit("</body>", 1)[0])
    parts.append("</body></html>")
    return "\n".join(parts)


__all__ = ["render_html", "render_segments_html"]
