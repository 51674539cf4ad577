"""A tiny inline-SVG builder for the HTML reports (no dependencies, no network).

Text is laid out before the browser sees it, so labels are measured here with the advance
widths of DejaVu Sans (the widest of the common sans-serif faces, and what ``system-ui``
resolves to on Debian); narrower faces only leave more room. Long labels wrap onto further
lines (:func:`wrap`); nothing is cut off with an ellipsis.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

#: Categorical palette, indexed by stable cohort id so colours survive re-runs. The first
#: eight are Okabe & Ito's colour-blind-safe set (yellow replaced by Tol's olive, which reads
#: on white); beyond eight, Paul Tol's "muted" colours (distinguishable, but no palette of
#: more than eight is safe for every colour-vision deficiency: ids are printed beside marks).
PALETTE: tuple[str, ...] = (
    "#0072b2",
    "#e69f00",
    "#009e73",
    "#cc79a7",
    "#56b4e9",
    "#d55e00",
    "#999933",
    "#332288",
    "#882255",
    "#44aa99",
    "#aa4499",
    "#117733",
    "#ddcc77",
)
GREY = "#a8a29e"
INK = "#1f2933"
MUTED = "#5b6472"
GRID = "#e5e7eb"
#: Diverging scale for "lower / higher than average" (blue - white - orange, colour-blind
#: safe: the two ends differ in lightness as well as hue). Stops at t = -1, -0.5, 0, 0.5, 1.
DIVERGING_STOPS: tuple[str, ...] = ("#2166ac", "#92c5de", "#f7f7f7", "#fdb863", "#e08214")

# Advance widths (em) of DejaVu Sans for ASCII 32..126, regular and bold (measured with
# canvas.measureText in Chromium at 100 px).
_W_REGULAR = (
    "0.318,0.401,0.460,0.838,0.636,0.950,0.780,0.275,0.390,0.390,0.500,0.838,0.318,0.361,"
    "0.318,0.337,0.636,0.636,0.636,0.636,0.636,0.636,0.636,0.636,0.636,0.636,0.337,0.337,"
    "0.838,0.838,0.838,0.531,1.000,0.684,0.686,0.698,0.770,0.632,0.575,0.775,0.752,0.295,"
    "0.295,0.656,0.557,0.863,0.748,0.787,0.603,0.787,0.695,0.635,0.611,0.732,0.684,0.989,"
    "0.685,0.611,0.685,0.390,0.337,0.390,0.838,0.500,0.500,0.613,0.635,0.550,0.635,0.615,"
    "0.352,0.635,0.634,0.278,0.278,0.579,0.278,0.974,0.634,0.612,0.635,0.635,0.411,0.521,"
    "0.392,0.634,0.592,0.818,0.592,0.592,0.525,0.636,0.337,0.636,0.838"
)
_W_BOLD = (
    "0.348,0.456,0.521,0.838,0.696,1.002,0.872,0.306,0.457,0.457,0.523,0.838,0.380,0.415,"
    "0.380,0.365,0.696,0.696,0.696,0.696,0.696,0.696,0.696,0.696,0.696,0.696,0.400,0.400,"
    "0.838,0.838,0.838,0.580,1.000,0.774,0.762,0.734,0.830,0.683,0.683,0.821,0.837,0.372,"
    "0.372,0.775,0.637,0.995,0.837,0.850,0.733,0.850,0.770,0.720,0.682,0.812,0.774,1.103,"
    "0.771,0.724,0.725,0.457,0.365,0.457,0.838,0.500,0.500,0.675,0.716,0.593,0.716,0.678,"
    "0.435,0.716,0.712,0.343,0.343,0.665,0.343,1.042,0.712,0.687,0.716,0.716,0.493,0.595,"
    "0.478,0.712,0.652,0.924,0.645,0.652,0.582,0.712,0.365,0.712,0.838"
)
_WIDTHS = {
    False: tuple(float(w) for w in _W_REGULAR.split(",")),
    True: tuple(float(w) for w in _W_BOLD.split(",")),
}
#: Non-ASCII characters the reports use (·, –, −, ×, ▲, ▼, …, ≈, ≥, ≤, →).
_SPECIAL = {"·": 0.318, "–": 0.5, "—": 1.0, "−": 0.838, "×": 0.838, "▲": 0.77, "▼": 0.77}
_SPECIAL |= {"\u00a0": 0.318, "…": 1.0, "≈": 0.838, "≥": 0.838, "≤": 0.838, "→": 0.838, "²": 0.4}


def text_width(text: str, size: float, bold: bool = False) -> float:
    """Estimated width in px of ``text`` at font size ``size`` (DejaVu Sans metrics)."""
    table = _WIDTHS[bold]
    em = 0.0
    for ch in text:
        code = ord(ch)
        if 32 <= code < 127:
            em += table[code - 32]
        else:
            em += _SPECIAL.get(ch, 1.0 if code >= 0x2E80 else 0.7)
    return em * size


def wrap(text: str, width: float, size: float, bold: bool = False) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` px. A word wider than
    ``width`` is broken after its hyphens; a word that still does not fit is kept whole
    (callers size their boxes from the lines returned). Nothing is dropped or cut."""
    pieces: list[tuple[str, bool]] = []  # (piece, joins the previous piece without a space)
    for word in (w for w in text.split(" ") if w):  # no-break spaces stay inside words
        parts = [word]
        if text_width(word, size, bold) > width and "-" in word[1:-1]:
            parts = [p + "-" for p in word.split("-")[:-1]] + [word.split("-")[-1]]
            parts = [p for p in parts if p]
        pieces += [(p, i > 0) for i, p in enumerate(parts)]
    if not pieces:
        return [""]
    lines: list[str] = []
    line = ""
    for piece, glued in pieces:
        candidate = line + piece if glued else (f"{line} {piece}" if line else piece)
        if line and text_width(candidate, size, bold) > width:
            lines.append(line)
            line = piece
        else:
            line = candidate
    lines.append(line)
    return lines


def lines_width(lines: Sequence[str], size: float, bold: bool = False) -> float:
    """Width of the widest of ``lines``."""
    return max((text_width(line, size, bold) for line in lines), default=0.0)


def cohort_colour(cohort_id: int) -> str:
    """Colour of a cohort id (0 = insufficient data = grey)."""
    if cohort_id <= 0:
        return GREY
    return PALETTE[(cohort_id - 1) % len(PALETTE)]


def esc(value: object) -> str:
    """HTML/XML-escape any value's text."""
    return html.escape(str(value), quote=True)


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)


def diverging(z: float, saturate_at: float = 2.0) -> str:
    """Colour of a z-score on :data:`DIVERGING_STOPS`, saturating at ``|z| = saturate_at``."""
    if not math.isfinite(z):
        return "#f3f4f6"
    t = max(-1.0, min(1.0, z / saturate_at))
    pos = (t + 1.0) * 2.0  # 0..4 over the five stops
    i = min(3, int(pos))
    a, b = _rgb(DIVERGING_STOPS[i]), _rgb(DIVERGING_STOPS[i + 1])
    f = pos - i
    rgb = tuple(round(x + (y - x) * f) for x, y in zip(a, b, strict=True))
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def ink_on(fill: str) -> str:
    """Black or white text, whichever contrasts more with ``fill`` (WCAG luminance)."""

    def lin(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(c) for c in _rgb(fill))
    lum = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return INK if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "#ffffff"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = start
    while v <= hi + 1e-9 * step:
        ticks.append(round(v, 12) + 0.0)
        v += step
    return ticks


def nice_max(hi: float, n: int = 5) -> float:
    """The smallest round tick at or above ``hi`` (the axis end for values in [0, hi])."""
    ticks = nice_ticks(0.0, hi, n)
    if len(ticks) < 2:
        return hi
    step = ticks[1] - ticks[0]
    return round(math.ceil(hi / step - 1e-9) * step, 12)


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks between ``lo`` and ``hi`` (positive); only powers of ten when crowded."""
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


class Svg:
    """Accumulates SVG elements; ``render()`` returns a responsive ``<svg class="chart">``.

    Axis titles go through :meth:`x_title` / :meth:`y_title` (class ``axis-title``), so a
    test can check that every chart has them.
    """

    def __init__(self, width: float, height: float, label: str) -> None:
        self.width = width
        self.height = height
        self.label = label
        self.parts: list[str] = []

    def add(self, raw: str) -> None:
        """Append raw SVG markup."""
        self.parts.append(raw)

    @staticmethod
    def _tip(tip: str | None) -> str:
        return f' data-tip="{esc(tip)}"' if tip else ""

    def rect(
        self,
        x: float,
        y: float,
        w: float,
        h: float,
        fill: str,
        tip: str | None = None,
        extra: str = "",
    ) -> None:
        """A rectangle (negative sizes are clamped to 0)."""
        self.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" '
            f'fill="{fill}"{self._tip(tip)}{extra}/>'
        )

    def line(
        self,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        stroke: str = GRID,
        width: float = 1.0,
        dash: str | None = None,
        extra: str = "",
    ) -> None:
        """A line segment."""
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
            f'stroke="{stroke}" stroke-width="{width}"{d}{extra}/>'
        )

    def circle(
        self,
        cx: float,
        cy: float,
        r: float,
        fill: str,
        tip: str | None = None,
        extra: str = "",
    ) -> None:
        """A circle."""
        self.parts.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}" fill="{fill}"'
            f"{self._tip(tip)}{extra}/>"
        )

    def text(
        self,
        x: float,
        y: float,
        content: str,
        size: float = 12,
        anchor: str = "start",
        fill: str = INK,
        weight: str | None = None,
        extra: str = "",
    ) -> None:
        """A text label (escaped)."""
        w = f' font-weight="{weight}"' if weight else ""
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'fill="{fill}"{w}{extra}>{esc(content)}</text>'
        )

    def lines(
        self,
        x: float,
        y: float,
        lines: Sequence[str],
        size: float = 12,
        anchor: str = "start",
        fill: str = INK,
        weight: str | None = None,
        leading: float = 1.25,
    ) -> None:
        """Several lines of text, the first baseline at ``y``, one ``<text>`` per line."""
        for i, content in enumerate(lines):
            self.text(x, y + i * size * leading, content, size, anchor, fill, weight)

    def x_title(self, x: float, y: float, content: str, size: float = 12.5) -> None:
        """The horizontal axis title, centred on ``x``."""
        self.text(x, y, content, size, "middle", MUTED, extra=' class="axis-title x"')

    def y_title(self, x: float, y: float, content: str, size: float = 12.5) -> None:
        """The vertical axis title, rotated, centred on ``y`` (``x`` = its baseline)."""
        self.text(
            x,
            y,
            content,
            size,
            "middle",
            MUTED,
            extra=f' class="axis-title y" transform="rotate(-90 {x:.1f} {y:.1f})"',
        )

    def polyline(self, points: list[tuple[float, float]], stroke: str, width: float = 2) -> None:
        """An open polyline."""
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        self.parts.append(
            f'<polyline points="{pts}" fill="none" stroke="{stroke}" stroke-width="{width}"/>'
        )

    def render(self) -> str:
        """The ``<svg>`` element (scales down to its container's width, never up)."""
        return (
            f'<svg class="chart" viewBox="0 0 {self.width:.0f} {self.height:.0f}" role="img" '
            f'aria-label="{esc(self.label)}" preserveAspectRatio="xMinYMin meet" '
            f'style="width:100%;max-width:{self.width:.0f}px;height:auto">'
            + "".join(self.parts)
            + "</svg>"
        )


__all__ = [
    "DIVERGING_STOPS",
    "GREY",
    "GRID",
    "INK",
    "MUTED",
    "PALETTE",
    "Svg",
    "cohort_colour",
    "diverging",
    "esc",
    "ink_on",
    "lines_width",
    "log_ticks",
    "nice_max",
    "nice_ticks",
    "text_width",
    "wrap",
]
