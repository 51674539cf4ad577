"""The page both reports share: CSS (screen and print), the header, sections, the scripts.

One look for the cohort and the experiment report: the header names the data's date range
and the command that made the report; every section has a title and a one-paragraph lead;
everything is inline (no CDN, no font or script download), so the file opens offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cohortlens._version import __version__
from cohortlens.reports.svg import esc

CSS = """
:root{--ink:#1f2933;--muted:#5b6472;--line:#e5e7eb;--bg:#f8fafc;--ok:#1a7f37;--bad:#b42318;
--warn:#9a6700}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--ink);background:var(--bg)}
main{max-width:1180px;margin:0 auto;padding:20px 20px 48px}
h1{font-size:26px;line-height:1.25;margin:0 0 6px}
h2{font-size:19px;margin:34px 0 6px;padding-top:10px;border-top:1px solid var(--line)}
h3{font-size:16px;margin:18px 0 4px}
p{margin:6px 0}
p.lead{color:var(--muted);margin:4px 0 12px;max-width:920px}
.note{color:var(--muted);font-size:13.5px;max-width:920px}
code{font:13px/1.4 "DejaVu Sans Mono",ui-monospace,monospace;background:#eef1f5;border-radius:4px;
padding:1px 4px;overflow-wrap:anywhere}
header.top{border-bottom:1px solid var(--line);padding-bottom:10px;margin-bottom:6px}
dl.meta{display:flex;flex-wrap:wrap;gap:4px 22px;margin:6px 0 0;font-size:13.5px;color:var(--muted)}
dl.meta div{display:flex;gap:6px;min-width:0;max-width:100%}
dl.meta dt{font-weight:600}dl.meta dd{margin:0;min-width:0;overflow-wrap:anywhere}
.summary{background:#fff;border:1px solid var(--line);border-radius:12px;padding:12px 16px;
margin:12px 0}
.summary p{margin:8px 0;max-width:980px}
.chips{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.chip{background:#fff;border:1px solid var(--line);border-radius:10px;padding:8px 12px;
flex:1 1 200px;max-width:360px}
.chip b{display:block;font-size:20px}
.chip span{display:block;font-size:13px;font-weight:600}
.chip small{display:block;color:var(--muted);font-size:12.5px;line-height:1.4;margin-top:2px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:14px}
.card{background:#fff;border:1px solid var(--line);border-radius:12px;padding:12px 14px 14px;
border-top:6px solid var(--c);min-width:0}
.card h3{margin:2px 0 2px;font-size:16px;line-height:1.3;overflow-wrap:anywhere}
.card .id{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .size{font-size:13px;color:var(--muted);margin-bottom:6px}
.bar{height:8px;background:var(--line);border-radius:4px;overflow:hidden;margin:4px 0 8px}
.bar i{display:block;height:100%;background:var(--c)}
.traits{margin:6px 0 0;padding:0;list-style:none;font-size:13.5px}
.traits li{margin:3px 0}
.traits .z,.outc .ci{color:var(--muted)}
.mark{display:inline-block;width:1.1em;color:var(--ink)}
.outc{font-size:13.5px;margin-top:8px;border-top:1px dashed var(--line);padding-top:6px}
.outc div{margin:2px 0}
.panel{background:#fff;border:1px solid var(--line);border-radius:12px;padding:12px;margin:10px 0;
min-width:0}
.grid2{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px}
.grid2 .panel{margin:0}
table{border-collapse:collapse;font-size:14px;background:#fff}
td,th{padding:5px 10px;border-bottom:1px solid var(--line);text-align:right;vertical-align:top}
th{font-weight:600}
td:first-child,th:first-child,td.text,th.text{text-align:left}
td.num,.nowrap,.iv{white-space:nowrap;font-variant-numeric:tabular-nums}
.wide{width:100%}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;font-size:13px;margin:6px 0}
.legend span::before{content:"";display:inline-block;width:11px;height:11px;border-radius:3px;
background:var(--c);margin-right:5px;vertical-align:-1px}
.legend.marks span::before{display:none}
.banner{padding:10px 14px;border-radius:8px;margin:12px 0;font-weight:600}
.banner.ok{background:#dafbe1;border:1px solid var(--ok)}
.banner.bad,.banner.refuse{background:#ffebe9;border:1px solid var(--bad)}
.banner.warn{background:#fff8c5;border:1px solid var(--warn)}
.dcards{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}
.dcard{background:#fff;border:1px solid var(--line);border-radius:10px;padding:8px 12px;min-width:0}
.dcard h3{margin:2px 0 6px;font-size:15px;overflow-wrap:anywhere}
.dcard dl{margin:0;font-size:13.5px}
.dcard dl div{display:flex;flex-wrap:wrap;justify-content:space-between;gap:0 12px;
border-bottom:1px solid var(--line);padding:3px 0}
.dcard dt{color:var(--muted)}.dcard dd{margin:0 0 0 auto;text-align:right;overflow-wrap:anywhere}
details.dd{background:#fff;border:1px solid var(--line);border-radius:12px;margin:8px 0;
padding:8px 12px;border-left:6px solid var(--c)}
details.dd summary{cursor:pointer;font-weight:600}
details.dd summary span{font-weight:400;color:var(--muted)}
.dd-tools{display:flex;flex-wrap:wrap;gap:8px 14px;align-items:center;margin:8px 0;font-size:13.5px}
.dd-tools input{font:inherit;padding:4px 8px;border:1px solid #c7ccd4;border-radius:6px;width:240px;
max-width:100%}
.dd-tools button{font:inherit;padding:4px 10px;border:1px solid #c7ccd4;border-radius:6px;
background:#f3f4f6;cursor:pointer}
.dd-scroll{max-height:440px;overflow-y:auto;overflow-x:hidden;border-top:1px solid var(--line)}
.dd table{width:100%;font-size:13px}
.dd th{position:sticky;top:0;background:#fff;cursor:pointer;user-select:none}
.dd th[aria-sort=ascending]::after{content:" ▲"}
.dd th[aria-sort=descending]::after{content:" ▼"}
.dd td{overflow-wrap:break-word}
.typical{font-size:13.5px;margin:6px 0}
#tip{position:fixed;pointer-events:none;background:#111827;color:#fff;font-size:12.5px;
padding:6px 8px;border-radius:6px;max-width:320px;display:none;z-index:10;white-space:pre-line}
svg.chart{display:block}
svg text{font-family:inherit}
footer{margin-top:40px;color:var(--muted);font-size:12px}
@media print{
body{background:#fff;font-size:11pt}
main{max-width:none;padding:0}
.panel,.card,.summary,.chip,table,svg.chart{break-inside:avoid}
h2{break-after:avoid}
.dd-tools,#tip{display:none}
.dd-scroll{max-height:none;overflow:visible}
.card{border-top-width:4px}
a{color:inherit;text-decoration:none}
}
"""

#: Tooltips: any element with ``data-tip`` shows its text near the pointer.
TOOLTIP_JS = """
(function(){
  var tip=document.getElementById('tip');
  if(!tip){return;}
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


@dataclass(frozen=True)
class ReportMeta:
    """What the header says about where the report came from.

    Attributes:
        command: the command line that made the report (``None``: not recorded, e.g. the
            Python API was called directly).
        data_range: first and last date in the data (ISO dates), or ``None`` when unknown.
        data_basis: what the dates are (e.g. ``"first and last event"``).
        generated_at: when the report was rendered (default: now, UTC).
    """

    command: str | None = None
    data_range: tuple[str, str] | None = None
    data_basis: str = ""
    generated_at: datetime | None = None


def section(title: str, lead: str, content: str, *, slug: str | None = None) -> str:
    """A report section: an anchor id, a title, a one-paragraph lead, the content (HTML)."""
    sid = slug or "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")
    lead_html = f'<p class="lead">{esc(lead)}</p>' if lead else ""
    return f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>{lead_html}{content}</section>'


def chips(items: Sequence[tuple[str, str, str]]) -> str:
    """Figure chips: (value, what it is, one sentence explaining it)."""
    out = "".join(
        f'<div class="chip"><b>{esc(v)}</b><span>{esc(label)}</span>'
        + (f"<small>{esc(why)}</small>" if why else "")
        + "</div>"
        for v, label, why in items
    )
    return f'<div class="chips">{out}</div>'


def header(title: str, meta: ReportMeta) -> str:
    """The shared header: title, the data's date range, the command, when and which version."""
    when = (meta.generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    if meta.data_range is not None:
        first, last = meta.data_range
        span = f"{first} to {last}" if first != last else first
        data = esc(span + (f" ({meta.data_basis})" if meta.data_basis else ""))
    else:
        data = esc(meta.data_basis or "date range not known")
    command = (
        f"<code>{esc(meta.command)}</code>"
        if meta.command
        else "not recorded (rendered through the Python API)"
    )
    return (
        f'<header class="top"><h1>{esc(title)}</h1><dl class="meta">'
        f'<div><dt>Data</dt><dd class="data-range">{data}</dd></div>'
        f'<div><dt>Made by</dt><dd class="command">{command}</dd></div>'
        f"<div><dt>Generated</dt><dd>{esc(when)} · cohortlens {esc(__version__)}</dd></div>"
        "</dl></header>"
    )


def page(
    title: str,
    meta: ReportMeta,
    body: str,
    *,
    scripts: Sequence[str] = (),
    footer: str = "",
) -> str:
    """A complete, self-contained HTML document."""
    script = "".join(f"<script>{s}</script>" for s in (TOOLTIP_JS, *scripts))
    foot = f"<footer>{footer}</footer>" if footer else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f"{header(title, meta)}{body}{foot}</main>"
        f'<div id="tip"></div>{script}</body></html>'
    )


__all__ = ["CSS", "TOOLTIP_JS", "ReportMeta", "chips", "header", "page", "section"]
