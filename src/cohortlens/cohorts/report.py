"""One self-contained HTML report of a cohort model: inline CSS, inline SVG, a few lines of JS.

Sections: summary and quality, one card per cohort, sizes, profile heat map, a 2-D
projection of learners (principal components of the scaled features), feature distributions
per cohort, outcome rates with 95 % CIs, the choice of k, and drift against the previous
model. Nothing is fetched from the network; the file opens anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from cohortlens._version import __version__
from cohortlens.cohorts import _matrix as mx
from cohortlens.cohorts._svg import (
    GREY,
    GRID,
    INK,
    MUTED,
    Svg,
    cohort_colour,
    diverging,
    esc,
    fmt,
    nice_ticks,
    pct,
    tick,
)
from cohortlens.cohorts.archetypes import Archetype, FeatureProfile, feature_label, feature_unit
from cohortlens.cohorts.matching import PSI_SHIFT, PSI_WATCH, psi_status
from cohortlens.cohorts.model import CohortModel
from cohortlens.cohorts.params import INSUFFICIENT_COHORT, FeatureSpec

#: Learners drawn for the 2-D projection.
PROJECTION_POINTS = 2500

_CSS = """
:root{--ink:#1f2933;--muted:#6b7280;--line:#e5e7eb;--bg:#f8fafc}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--ink);background:var(--bg)}
main{max-width:1180px;margin:0 auto;padding:24px 20px 48px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:19px;margin:36px 0 6px;padding-top:8px;border-top:1px solid var(--line)}
p.lead,p.note{color:var(--muted);margin:4px 0 12px}
.chips{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.chip{background:#fff;border:1px solid var(--line);border-radius:10px;padding:8px 12px;min-width:150px}
.chip b{display:block;font-size:20px}
.chip span{color:var(--muted);font-size:13px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(265px,1fr));gap:14px}
.card{background:#fff;border:1px solid var(--line);border-radius:12px;padding:12px 14px 14px;
border-top:6px solid var(--c)}
.card h3{margin:2px 0 2px;font-size:16px;line-height:1.3}
.card .id{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .size{font-size:13px;color:var(--muted);margin-bottom:6px}
.bar{height:8px;background:var(--line);border-radius:4px;overflow:hidden;margin:4px 0 8px}
.bar i{display:block;height:100%;background:var(--c)}
.traits{margin:6px 0 0;padding:0;list-style:none;font-size:13px}
.traits li{margin:2px 0}
.up{color:#b4472e}.down{color:#21609b}
.outc{font-size:13px;margin-top:8px;border-top:1px dashed var(--line);padding-top:6px}
.panel{background:#fff;border:1px solid var(--line);border-radius:12px;padding:12px;margin:10px 0}
.grid2{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:12px}
table{border-collapse:collapse;font-size:14px;background:#fff}
td,th{padding:5px 10px;border-bottom:1px solid var(--line);text-align:right}
td:first-child,th:first-child{text-align:left}
.legend{display:flex;flex-wrap:wrap;gap:12px;font-size:13px;margin:6px 0}
.legend span::before{content:"";display:inline-block;width:11px;height:11px;border-radius:3px;
background:var(--c);margin-right:5px;vertical-align:-1px}
#tip{position:fixed;pointer-events:none;background:#111827;color:#fff;font-size:12.5px;
padding:6px 8px;border-radius:6px;max-width:320px;display:none;z-index:10;white-space:pre-line}
footer{margin-top:40px;color:var(--muted);font-size:12px}
"""

_JS = """
(function(){
  var tip=document.getElementById('tip');
  document.addEventListener('mousemove',function(e){
    var t=e.target&&e.target.closest?e.target.closest('[data-tip]'):null;
    if(!t){tip.style.display='none';return;}
    tip.textContent=t.getAttribute('data-tip');
    tip.style.display='block';
    var x=e.clientX+14,y=e.clientY+14;
    if(x+tip.offsetWidth>window.innerWidth-8){x=e.clientX-tip.offsetWidth-14;}
    if(y+tip.offsetHeight>window.innerHeight-8){y=e.clientY-tip.offsetHeight-14;}
    tip.style.left=x+'px';tip.style.top=y+'px';
  });
})();
"""


def write_report(
    model: CohortModel,
    path: Path | str,
    X: mx.FeatureTable | None = None,  # noqa: N803
    title: str = "Learner cohorts",
) -> Path:
    """Render :func:`render_report` to ``path`` (UTF-8) and return the path."""
    out = Path(path)
    out.write_text(render_report(model, X, title=title), encoding="utf-8")
    return out


def render_report(
    model: CohortModel,
    X: mx.FeatureTable | None = None,  # noqa: N803
    *,
    title: str = "Learner cohorts",
    generated_at: datetime | None = None,
) -> str:
    """The report as one HTML string. ``X`` (the feature table) enables the 2-D projection;
    everything else comes from the fitted model itself."""
    model._check_fitted()
    cards = _ordered_cards(model)
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        _summary(model, title),
        _cards_section(model, cards),
        _section(
            "Cohort sizes",
            "Learners per cohort, as a count and a share of everyone assigned.",
            _sizes_chart(cards),
        ),
        _section(
            "What sets each cohort apart",
            "Each cell is the cohort's centre in original units; the colour is its z-score "
            "against all learners (orange = higher, blue = lower). Hover for details.",
            _profile_heatmap(model, cards),
        ),
        _projection_section(model, X, cards),
        _section(
            "Feature distributions by cohort",
            "Box = middle half of the cohort (25th-75th percentile), line = median, "
            "whiskers = 10th-90th percentile.",
            _distributions(model, cards),
        ),
        _outcomes_section(model, cards),
        _selection_section(model),
        _drift_section(model),
        _ood_section(model, X),
    ]
    body = "".join(s for s in sections if s)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body><main>"
        f"{body}<footer>cohortlens {esc(__version__)} · artifact schema "
        f"{esc(model.to_dict()['schema_version'])} · generated {esc(when)}</footer>"
        f'</main><div id="tip"></div><script>{_JS}</script></body></html>'
    )


# ---------------------------------------------------------------------- helpers


def _ordered_cards(model: CohortModel) -> list[Archetype]:
    """Cards in id order, the insufficient-data cohort last (and only if it has members)."""
    regular = [model.archetypes_[int(c)] for c in sorted(model.cohort_ids_.tolist())]
    insufficient = model.archetypes_.get(INSUFFICIENT_COHORT)
    if insufficient is not None and insufficient.size > 0:
        regular.append(insufficient)
    return regular


def _section(title: str, lead: str, content: str) -> str:
    slug = "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")
    return (
        f'<section id="{esc(slug)}"><h2>{esc(title)}</h2><p class="lead">{esc(lead)}</p>'
        f"{content}</section>"
    )


def _short(card: Archetype, width: int = 34) -> str:
    name = card.name if len(card.name) <= width else card.name[: width - 1] + "…"
    return f"{card.cohort_id} · {name}"


def _legend(cards: Sequence[Archetype]) -> str:
    items = "".join(
        f'<span style="--c:{cohort_colour(c.cohort_id)}">{esc(_short(c, 60))}</span>' for c in cards
    )
    return f'<div class="legend">{items}</div>'


def _profile_specs(model: CohortModel) -> list[FeatureSpec]:
    return list(model.profile_features_)


def _value_text(value: float, column: str, ticks: bool = False) -> str:
    unit = feature_unit(column)
    if unit in ("share", "probability"):
        return pct(value)
    return tick(value) if ticks else fmt(value)


# ---------------------------------------------------------------------- summary


def _summary(model: CohortModel, title: str) -> str:
    q = model.quality_
    sel = model.selection_
    how = sel.reason if sel is not None else f"k={model.n_cohorts_} was given"
    sil_word = (
        "strong structure"
        if q.silhouette > 0.5
        else "reasonable structure"
        if q.silhouette > 0.25
        else "weak structure"
    )
    stab_word = "stable" if q.stability_ari >= 0.9 else "not fully stable"
    chips = [
        (f"{model.n_learners_:,}", "learners"),
        (f"{model.n_cohorts_}", "cohorts (+ insufficient data)"),
        (fmt(q.silhouette, 2), f"silhouette: {sil_word}"),
        (fmt(q.davies_bouldin, 2), "Davies–Bouldin (lower is better)"),
        (fmt(q.stability_ari, 3), f"bootstrap ARI: {stab_word}"),
    ]
    chip_html = "".join(
        f'<div class="chip"><b>{esc(v)}</b><span>{esc(t)}</span></div>' for v, t in chips
    )
    feats = ", ".join(feature_label(s.column) for s in model.features_)
    dropped = (
        " Not used: "
        + "; ".join(f"{feature_label(c)} ({why})" for c, why in model.dropped_features_.items())
        + "."
        if model.dropped_features_
        else ""
    )
    run = f" Feature run {esc(model.feature_run_)}." if model.feature_run_ else ""
    assoc = ""
    if q.outcomes:
        rows = "".join(
            f"<tr><td>{esc(o.outcome)}</td><td>{o.n:,}</td><td>{pct(o.n_positive / o.n if o.n else math.nan)}</td>"
            f"<td>{fmt(o.cramers_v, 3)}</td><td>{fmt(o.auc_cohort, 3)}</td>"
            f"<td>{fmt(o.auc_features, 3)}</td></tr>"
            for o in q.outcomes
        )
        assoc = (
            "<p class='note'>Do cohorts differ in outcomes? Cramér's V of cohort × outcome; "
            "AUC of predicting the outcome from the cohort alone, beside a logistic model on "
            "the raw features (the ceiling).</p><table><tr><th>outcome</th><th>learners</th>"
            "<th>rate</th><th>Cramér's V</th><th>AUC (cohort)</th><th>AUC (features)</th></tr>"
            f"{rows}</table>"
        )
    return (
        f"<header><h1>{esc(title)}</h1><p class='lead'>Clustered on {esc(feats)}.{esc(dropped)}"
        f"{run} {esc(how)}.</p><div class='chips'>{chip_html}</div>{assoc}</header>"
    )


# ---------------------------------------------------------------------- cards


def _traits(card: Archetype, n: int = 4) -> str:
    ranked = sorted(
        (
            (abs(p.z), col, p)
            for col, p in card.profile.items()
            if math.isfinite(p.z) and p.coverage >= 0.5
        ),
        key=lambda t: -t[0],
    )[:n]
    items = []
    for _, col, p in ranked:
        cls, arrow = ("up", "▲") if p.z > 0 else ("down", "▼")
        items.append(
            f'<li><span class="{cls}">{arrow}</span> {esc(feature_label(col))}: '
            f"<b>{esc(_value_text(p.centre, col))}</b> "
            f'<span style="color:#6b7280">(z {p.z:+.1f})</span></li>'
        )
    return f'<ul class="traits">{"".join(items)}</ul>'


def _card_outcomes(card: Archetype) -> str:
    if not card.outcomes:
        return ""
    parts = []
    for name, est in card.outcomes.items():
        if est.n == 0:
            continue
        if name in ("completed", "churned"):
            parts.append(
                f"{esc(name)} <b>{pct(est.value)}</b> "
                f"<span style='color:#6b7280'>({pct(est.ci_lower)}–{pct(est.ci_upper)})</span>"
            )
        else:
            parts.append(
                f"{esc(name)} <b>{fmt(est.value)}</b> "
                f"<span style='color:#6b7280'>({fmt(est.ci_lower)}–{fmt(est.ci_upper)})</span>"
            )
    return f'<div class="outc">{"<br>".join(parts)}</div>' if parts else ""


def _cards_section(model: CohortModel, cards: Sequence[Archetype]) -> str:
    html_cards = []
    for c in cards:
        colour = cohort_colour(c.cohort_id)
        partial = (
            f" · {pct(c.partial_share)} assigned on partial features"
            if c.partial_share >= 0.005
            else ""
        )
        label = (
            "insufficient data" if c.cohort_id == INSUFFICIENT_COHORT else f"cohort {c.cohort_id}"
        )
        html_cards.append(
            f'<article class="card" data-cohort="{c.cohort_id}" style="--c:{colour}">'
            f'<div class="id">{esc(label)}</div><h3>{esc(c.name)}</h3>'
            f'<div class="size">{c.size:,} learners · {pct(c.share, 1)}{esc(partial)}</div>'
            f'<div class="bar"><i style="width:{100 * c.share:.1f}%"></i></div>'
            f"{_traits(c)}{_card_outcomes(c)}</article>"
        )
    note = (
        f"The insufficient-data cohort holds learners with fewer than {model.min_events} events "
        f"or values for under {model.min_observed_share:.0%} of the clustering features."
    )
    return _section(
        "Cohorts at a glance",
        "Each cohort's name follows a fixed rule on its profile (docs/COHORTS.md). " + note,
        f'<div class="cards">{"".join(html_cards)}</div>',
    )


# ---------------------------------------------------------------------- sizes


def _sizes_chart(cards: Sequence[Archetype]) -> str:
    row_h, left, width = 30, 290, 1100
    svg = Svg(width, 20 + row_h * len(cards), "cohort sizes")
    max_share = max((c.share for c in cards), default=1.0) or 1.0
    span = width - left - 150
    for i, c in enumerate(cards):
        y = 10 + i * row_h
        svg.text(left - 10, y + 19, _short(c, 40), 13, "end")
        w = span * c.share / max_share
        svg.rect(
            left,
            y + 5,
            w,
            row_h - 10,
            cohort_colour(c.cohort_id),
            tip=f"{c.name}\n{c.size:,} learners ({pct(c.share, 1)})",
        )
        svg.text(left + w + 8, y + 19, f"{c.size:,}  ({pct(c.share, 1)})", 13, fill=MUTED)
    return f'<div class="panel">{svg.render()}</div>'


# ---------------------------------------------------------------------- heat map


def _profile_heatmap(model: CohortModel, cards: Sequence[Archetype]) -> str:
    specs = _profile_specs(model)
    left, top, cell_w, cell_h = 290, 58, 84, 34
    width = left + cell_w * len(specs) + 10
    svg = Svg(width, top + cell_h * len(cards) + 10, "profile heat map")
    for j, s in enumerate(specs):
        x = left + j * cell_w + cell_w / 2
        words = feature_label(s.column).split(" ")
        first = " ".join(words[: (len(words) + 1) // 2])
        second = " ".join(words[(len(words) + 1) // 2 :])
        svg.text(x, top - 30, first, 12, "middle", weight="600")
        svg.text(x, top - 16, second, 12, "middle", weight="600")
        svg.text(x, top - 3, feature_unit(s.column), 10.5, "middle", fill=MUTED)
    for i, c in enumerate(cards):
        y = top + i * cell_h
        svg.rect(left - 14, y + 6, 8, cell_h - 12, cohort_colour(c.cohort_id))
        svg.text(left - 20, y + 22, _short(c, 36), 13, "end")
        for j, s in enumerate(specs):
            p = c.profile.get(s.column)
            x = left + j * cell_w
            if p is None or not math.isfinite(p.centre):
                svg.rect(x + 1, y + 1, cell_w - 2, cell_h - 2, "#f3f4f6", tip="no values")
                svg.text(x + cell_w / 2, y + 22, "–", 12, "middle", fill=MUTED)
                continue
            tip = (
                f"{c.name}\n{feature_label(s.column)}: {_value_text(p.centre, s.column)} "
                f"{feature_unit(s.column)}\nz = {p.z:+.2f} · median "
                f"{_value_text(p.percentiles[2], s.column)} · {pct(p.coverage)} have a value"
            )
            svg.rect(x + 1, y + 1, cell_w - 2, cell_h - 2, diverging(p.z), tip=tip)
            ink = "#ffffff" if abs(p.z) > 1.4 else INK
            svg.text(x + cell_w / 2, y + 22, _value_text(p.centre, s.column), 12.5, "middle", ink)
    return f'<div class="panel" style="overflow-x:auto">{svg.render()}</div>'


# ---------------------------------------------------------------------- projection


def _projection_section(
    model: CohortModel,
    X: mx.FeatureTable | None,  # noqa: N803
    cards: Sequence[Archetype],
) -> str:
    lead = (
        "Each dot is a learner, placed by the two principal components of the scaled "
        "clustering features; crosses mark the cohort centres."
    )
    if X is None or mx.n_rows(X) == 0 or len(model.features_) < 2:
        return _section(
            "Learners in two dimensions",
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
        return _section("Learners in two dimensions", lead, "<p class='note'>Too few learners.</p>")
    mean = z.mean(axis=0)
    _, sv, vt = np.linalg.svd(z - mean, full_matrices=False)
    comps = vt[:2]
    explained = (sv[:2] ** 2) / (sv**2).sum()
    pts = (z - mean) @ comps.T
    cents = (model.cluster_centers_ - mean) @ comps.T
    width, height, pad = 760, 560, 46
    lo = np.minimum(np.quantile(pts, 0.005, axis=0), cents.min(axis=0))
    hi = np.maximum(np.quantile(pts, 0.995, axis=0), cents.max(axis=0))
    span = np.where(hi - lo > 1e-9, hi - lo, 1.0)

    def sx(v: float) -> float:
        return pad + (v - lo[0]) / span[0] * (width - 2 * pad)

    def sy(v: float) -> float:
        return height - pad - (v - lo[1]) / span[1] * (height - 2 * pad)

    svg = Svg(width, height, "2-D projection of learners coloured by cohort")
    svg.rect(pad, pad, width - 2 * pad, height - 2 * pad, "#fbfbfc")
    name_of = {c.cohort_id: c.name for c in cards}
    order = rng.permutation(len(pts))
    for i in order:  # drawing: one SVG element per plotted learner (bounded sample)
        x, y = float(np.clip(pts[i, 0], lo[0], hi[0])), float(np.clip(pts[i, 1], lo[1], hi[1]))
        cid = int(labels[i])
        svg.circle(
            sx(x),
            sy(y),
            2.6,
            cohort_colour(cid),
            extra=' fill-opacity="0.55"',
        )
    for i, cid in enumerate(model.cohort_ids_.tolist()):
        cx, cy = sx(float(cents[i, 0])), sy(float(cents[i, 1]))
        svg.add(
            f'<g data-tip="{esc(name_of.get(cid, ""))}"><path d="M{cx - 9:.1f},{cy - 9:.1f} '
            f'L{cx + 9:.1f},{cy + 9:.1f} M{cx - 9:.1f},{cy + 9:.1f} L{cx + 9:.1f},{cy - 9:.1f}" '
            f'stroke="#ffffff" stroke-width="6"/><path d="M{cx - 9:.1f},{cy - 9:.1f} '
            f'L{cx + 9:.1f},{cy + 9:.1f} M{cx - 9:.1f},{cy + 9:.1f} L{cx + 9:.1f},{cy - 9:.1f}" '
            f'stroke="{cohort_colour(cid)}" stroke-width="3"/></g>'
        )
        svg.text(
            cx + 12,
            cy - 8,
            str(cid),
            14,
            weight="700",
            extra=' stroke="#fff" stroke-width="3" paint-order="stroke"',
        )
    feats = [feature_label(s.column) for s in model.features_]

    def loading(c: np.ndarray) -> str:
        top = np.argsort(-np.abs(c))[:2]
        return ", ".join(f"{'+' if c[t] > 0 else '−'}{feats[t]}" for t in top)

    svg.text(
        width / 2,
        height - 12,
        f"component 1 ({pct(explained[0])} of variance: {loading(comps[0])})",
        12.5,
        "middle",
        fill=MUTED,
    )
    svg.text(
        14,
        height / 2,
        f"component 2 ({pct(explained[1])}: {loading(comps[1])})",
        12.5,
        "middle",
        fill=MUTED,
        extra=f' transform="rotate(-90 14 {height / 2:.0f})"',
    )
    shown = [c for c in cards if c.cohort_id != INSUFFICIENT_COHORT]
    return _section(
        "Learners in two dimensions",
        lead + f" {len(pts):,} learners drawn at random.",
        f'<div class="panel">{_legend(shown)}{svg.render()}</div>',
    )


def _take_rows(X: mx.FeatureTable, rows: np.ndarray) -> mx.FeatureTable:  # noqa: N803
    """The given rows of any supported table."""
    if isinstance(X, pa.Table | pa.RecordBatch):
        return X.take(pa.array(rows))
    if hasattr(X, "iloc"):
        return X.iloc[rows]
    return {k: np.asarray(X[k])[rows] for k in mx.column_names(X)}


# ---------------------------------------------------------------------- distributions


def _distributions(model: CohortModel, cards: Sequence[Archetype]) -> str:
    panels = []
    for s in _profile_specs(model):
        panels.append(_distribution_panel(s, cards))
    return f'<div class="grid2">{"".join(p for p in panels if p)}</div>'


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
    left, row_h, width = 44, 22, 380
    height = 48 + row_h * len(rows)

    def f(v: float) -> float:
        return math.log(max(v, 1e-6)) if log else v

    flo, fhi = f(lo), f(hi)

    def sx(v: float) -> float:
        return left + (f(v) - flo) / (fhi - flo) * (width - left - 16)

    svg = Svg(width, height, f"distribution of {feature_label(spec.column)} by cohort")
    label = feature_label(spec.column)
    unit = feature_unit(spec.column)
    svg.text(
        8,
        16,
        f"{label}" + (f" ({unit}, log scale)" if log else f" ({unit})" if unit else ""),
        13,
        weight="600",
    )
    ticks = _log_ticks(lo, hi) if log else nice_ticks(lo, hi, 5)
    for t in ticks:
        if lo <= t <= hi:
            svg.line(sx(t), 26, sx(t), height - 18, GRID)
            svg.text(
                sx(t), height - 5, _value_text(t, spec.column, True), 10.5, "middle", fill=MUTED
            )
    for i, (c, p) in enumerate(rows):
        y = 30 + i * row_h
        colour = cohort_colour(c.cohort_id)
        p10, p25, p50, p75, p90 = p.percentiles
        svg.text(
            left - 8, y + 14, str(c.cohort_id) if c.cohort_id else "–", 11.5, "end", fill=MUTED
        )
        tip = (
            f"{c.name}\n{label}: median {_value_text(p50, spec.column)}; middle half "
            f"{_value_text(p25, spec.column)}–{_value_text(p75, spec.column)}; "
            f"10–90 %: {_value_text(p10, spec.column)}–{_value_text(p90, spec.column)}"
        )
        svg.line(sx(p10), y + 10, sx(p90), y + 10, colour, 1.5)
        svg.rect(
            sx(p25), y + 3, sx(p75) - sx(p25), 14, colour, tip=tip, extra=' fill-opacity="0.75"'
        )
        svg.line(sx(p50), y + 2, sx(p50), y + 18, INK, 2)
    return f'<div class="panel">{svg.render()}</div>'


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks between lo and hi (positive)."""
    out = []
    e = math.floor(math.log10(lo))
    while 10**e <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10**e
            if lo <= v <= hi:
                out.append(float(v))
        e += 1
    if len(out) > 7:
        out = [v for v in out if math.isclose(math.log10(v) % 1, 0, abs_tol=1e-9)]
    return out


# ---------------------------------------------------------------------- outcomes


def _outcomes_section(model: CohortModel, cards: Sequence[Archetype]) -> str:
    names: list[str] = []
    for c in cards:
        for k in c.outcomes:
            if k not in names:
                names.append(k)
    if not names:
        return _section(
            "Outcomes",
            "Completion, churn and revenue per cohort.",
            "<p class='note'>No outcomes were supplied when the model was fitted.</p>",
        )
    panels = [_outcome_panel(name, cards) for name in names]
    return _section(
        "Outcomes by cohort",
        "Dot = rate (or mean) in the cohort, bar = 95 % confidence interval; the dashed line "
        "is the rate over all learners.",
        "".join(panels),
    )


def _outcome_panel(name: str, cards: Sequence[Archetype]) -> str:
    rows = [(c, c.outcomes[name]) for c in cards if name in c.outcomes and c.outcomes[name].n > 0]
    if not rows:
        return ""
    rate = name in ("completed", "churned")
    total_n = sum(e.n for _, e in rows)
    overall = sum(e.value * e.n for _, e in rows) / total_n if total_n else math.nan
    hi = (
        1.0
        if rate
        else max((e.ci_upper if math.isfinite(e.ci_upper) else e.value) for _, e in rows) * 1.1
    )
    hi = hi if hi > 0 else 1.0
    left, row_h, width = 330, 28, 900
    height = 52 + row_h * len(rows)

    def sx(v: float) -> float:
        return left + max(0.0, v) / hi * (width - left - 30)

    svg = Svg(width, height, f"{name} by cohort")
    svg.text(8, 16, f"{name} ({'rate' if rate else 'mean'})", 14, weight="600")
    for t in nice_ticks(0, hi, 5):
        svg.line(sx(t), 26, sx(t), height - 18, GRID)
        svg.text(sx(t), height - 5, pct(t) if rate else tick(t), 11, "middle", fill=MUTED)
    if math.isfinite(overall):
        svg.line(sx(overall), 24, sx(overall), height - 18, MUTED, 1.2, "4 3")
    for i, (c, e) in enumerate(rows):
        y = 32 + i * row_h
        colour = cohort_colour(c.cohort_id)
        value = pct(e.value, 1) if rate else fmt(e.value)
        ci = (
            f"{pct(e.ci_lower, 1)}–{pct(e.ci_upper, 1)}"
            if rate
            else f"{fmt(e.ci_lower)}–{fmt(e.ci_upper)}"
        )
        svg.text(left - 10, y + 11, _short(c, 44), 13, "end")
        if math.isfinite(e.ci_lower) and math.isfinite(e.ci_upper):
            svg.line(sx(e.ci_lower), y + 6, sx(e.ci_upper), y + 6, colour, 3)
        svg.circle(
            sx(e.value),
            y + 6,
            5.5,
            colour,
            tip=f"{c.name}\n{name}: {value} (95 % CI {ci}; n = {e.n:,})",
        )
        right = sx(e.ci_upper) if math.isfinite(e.ci_upper) else sx(e.value)
        svg.text(right + 10, y + 11, value, 12.5)
    return f'<div class="panel">{svg.render()}</div>'


# ---------------------------------------------------------------------- selection


def _selection_section(model: CohortModel) -> str:
    sel = model.selection_
    if sel is None:
        return ""
    cands = sel.candidates
    width, height, left, bottom, top = 640, 300, 50, 40, 20
    ks = [c.k for c in cands]
    kmin, kmax = min(ks), max(ks)

    def sx(k: float) -> float:
        return left + (k - kmin) / max(1, kmax - kmin) * (width - left - 30)

    def sy(v: float) -> float:
        return top + (1 - max(0.0, min(1.0, v))) * (height - top - bottom)

    svg = Svg(width, height, "choice of the number of cohorts")
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        svg.line(left, sy(t), width - 30, sy(t), GRID)
        svg.text(left - 8, sy(t) + 4, f"{t:.2f}", 11, "end", fill=MUTED)
    chosen = sel.chosen_k
    svg.rect(sx(chosen) - 12, top, 24, height - top - bottom, "#fef3c7")
    thr = model.selection.min_stability_ari
    svg.line(left, sy(thr), width - 30, sy(thr), "#9ca3af", 1, "5 4")
    svg.text(width - 32, sy(thr) - 5, f"stability bar {thr}", 11, "end", fill=MUTED)
    for series, key, colour in (
        ("silhouette", "silhouette", "#4e79a7"),
        ("bootstrap ARI", "stability_ari", "#f28e2b"),
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
    svg.text((left + width - 30) / 2, height - 4, "number of cohorts k", 12, "middle", fill=MUTED)
    legend = (
        '<div class="legend"><span style="--c:#4e79a7">silhouette (higher = better separated)</span>'
        '<span style="--c:#f28e2b">bootstrap ARI (higher = more reproducible)</span>'
        '<span style="--c:#fef3c7">chosen k</span></div>'
    )
    return _section(
        "Choosing the number of cohorts",
        f"{sel.reason}. Fits on {sel.sample_size:,} sampled learners; silhouette on "
        f"{sel.silhouette_sample_size:,}.",
        f'<div class="panel">{legend}{svg.render()}</div>',
    )


# ---------------------------------------------------------------------- out of distribution


def _ood_section(model: CohortModel, X: mx.FeatureTable | None) -> str:  # noqa: N803
    """How far the reported learners lie from the training population (needs ``X``)."""
    if X is None:
        return ""
    from cohortlens.cohorts.ood import ood_summary

    o = ood_summary(model, X)
    lead = (
        "Share of learners farther from every cohort centre than 99 % of the model's training "
        f"learners (about 1 % on data like the training data; a warning above "
        f"{o.max_share:.0%}), and the PSI of each feature against the training deciles."
    )
    if not math.isfinite(o.share_beyond):
        return _section(
            "Out of distribution",
            lead,
            "<p class='note'>The model predates this check (no training distance stored).</p>",
        )
    chips = (
        f"<div class='chips'><div class='chip'><b>{pct(o.share_beyond, 1)}</b><span>of "
        f"{o.n_assessed:,} learners beyond the training 99th-percentile distance "
        f"({fmt(o.distance_p99, 2)} scaled units)</span></div></div>"
    )
    warn = f"<p class='note'><b>Warning:</b> {esc(o.message)}</p>" if o.warning else ""
    rows = "".join(
        f"<tr><td>{esc(f.column)}</td><td>{_psi_text(f.psi)}</td><td>{esc(f.status)}</td></tr>"
        for f in sorted(o.features, key=lambda f: -f.psi if math.isfinite(f.psi) else 0.0)
    )
    table = (
        f"<table><thead><tr><th>feature</th><th>PSI</th><th>status</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        if rows
        else ""
    )
    return _section("Out of distribution", lead, chips + warn + table)


# ---------------------------------------------------------------------- drift


def _drift_section(model: CohortModel) -> str:
    d = model.drift_
    if d is None:
        return _section(
            "Drift versus the previous model",
            "Cohort shares, feature stability and learners who changed cohort.",
            "<p class='note'>No previous model: this is the first run (ids start at 1).</p>",
        )
    headline = (
        f"<div class='chips'><div class='chip'><b>{pct(d.changed_share, 1)}</b><span>of "
        f"{d.n_compared:,} learners changed cohort ({esc(d.changed_basis)})</span></div>"
        f"<div class='chip'><b>{_psi_text(d.cohort_share_psi)}</b><span>PSI of cohort shares"
        f" ({esc(psi_status(d.cohort_share_psi))})</span></div>"
        f"<div class='chip'><b>{sum(m.carried for m in d.matches)} / {len(d.matches)}</b>"
        f"<span>cohorts kept their id</span></div>"
        f"<div class='chip'><b>{fmt(d.mean_centroid_shift, 2)}</b><span>mean centre shift "
        f"(scaled units)</span></div></div>"
    )
    return _section(
        "Drift versus the previous model",
        "Shares by stable cohort id then and now; population stability index (PSI) per feature "
        f"(< {PSI_WATCH} stable, {PSI_WATCH}–{PSI_SHIFT} watch, > {PSI_SHIFT} shift).",
        headline + _share_shift(model) + _psi_chart(model) + _matches_table(model),
    )


def _share_shift(model: CohortModel) -> str:
    d = model.drift_
    assert d is not None
    ids = sorted(set(d.previous_shares) | set(d.current_shares), key=lambda i: (i == 0, i))
    ids = [i for i in ids if d.previous_shares.get(i, 0) > 0 or d.current_shares.get(i, 0) > 0]
    left, row_h, width = 150, 36, 900
    height = 40 + row_h * len(ids)
    top_share = max([*d.previous_shares.values(), *d.current_shares.values(), 0.01])

    def sx(v: float) -> float:
        return left + v / top_share * (width - left - 140)

    svg = Svg(width, height, "cohort shares, previous and current")
    svg.text(8, 16, "share of learners: previous (light) vs now", 14, weight="600")
    for i, cid in enumerate(ids):
        y = 28 + i * row_h
        colour = cohort_colour(cid)
        prev, cur = d.previous_shares.get(cid, 0.0), d.current_shares.get(cid, 0.0)
        label = "insufficient" if cid == INSUFFICIENT_COHORT else f"cohort {cid}"
        svg.text(left - 8, y + 18, label, 13, "end")
        svg.rect(
            left,
            y + 2,
            sx(prev) - left,
            11,
            colour,
            tip=f"{label}: previous {pct(prev, 1)}",
            extra=' fill-opacity="0.35"',
        )
        svg.rect(left, y + 14, sx(cur) - left, 11, colour, tip=f"{label}: now {pct(cur, 1)}")
        svg.text(
            max(sx(prev), sx(cur)) + 6, y + 18, f"{pct(prev, 1)} → {pct(cur, 1)}", 11, fill=MUTED
        )
    return f'<div class="panel">{svg.render()}</div>'


def _psi_chart(model: CohortModel) -> str:
    d = model.drift_
    assert d is not None
    feats = list(d.features)
    if not feats:
        return "<div class='panel'><p class='note'>No common features to compare.</p></div>"
    left, row_h, width = 200, 28, 900
    height = 50 + row_h * len(feats)
    hi = max(0.3, *(f.psi for f in feats if math.isfinite(f.psi)))

    def sx(v: float) -> float:
        return left + min(v, hi) / hi * (width - left - 80)

    svg = Svg(width, height, "population stability index per feature")
    svg.text(8, 16, "PSI per feature", 14, weight="600")
    for thr, lab in ((PSI_WATCH, "watch"), (PSI_SHIFT, "shift")):
        svg.line(sx(thr), 24, sx(thr), height - 18, "#9ca3af", 1, "4 3")
        svg.text(sx(thr), height - 5, f"{thr} {lab}", 12, "middle", fill=MUTED)
    colours = {"stable": "#59a14f", "watch": "#edc948", "shift": "#e15759", "unknown": GREY}
    for i, f in enumerate(feats):
        y = 28 + i * row_h
        svg.text(left - 8, y + 14, feature_label(f.column), 13, "end")
        v = f.psi if math.isfinite(f.psi) else 0.0
        svg.rect(
            left,
            y + 3,
            sx(v) - left,
            14,
            colours.get(f.status, GREY),
            tip=f"{feature_label(f.column)}: PSI {fmt(f.psi, 3)} ({f.status}); nulls "
            f"{pct(f.null_share_previous, 1)} → {pct(f.null_share_current, 1)}",
        )
        svg.text(sx(v) + 8, y + 15, _psi_text(f.psi), 12, fill=MUTED)
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
        f"<td>{'–' if m.previous_id is None else m.previous_id}</td><td>{fmt(m.distance, 2)}</td>"
        f"<td>{fmt(m.threshold, 2)}</td><td>{'kept' if m.carried else 'new id'}</td></tr>"
        for m in sorted(d.matches, key=lambda m: m.cohort_id)
    )
    retired = (
        f"<p class='note'>Retired ids: {', '.join(str(i) for i in d.retired_ids)}.</p>"
        if d.retired_ids
        else ""
    )
    return (
        "<div class='panel'><table><tr><th>cohort now</th><th>matched previous id</th>"
        "<th>centre distance</th><th>keep-id threshold</th><th>id</th></tr>"
        f"{rows}</table>{retired}</div>"
    )
