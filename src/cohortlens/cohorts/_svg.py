"""A tiny inline-SVG builder for the HTML report (no dependencies, no network)."""

from __future__ import annotations

import html
import math

#: Categorical palette (Tableau 10 + 3), indexed by stable cohort id so colours survive
#: re-runs; the insufficient-data cohort is grey.
PALETTE: tuple[str, ...] = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#b07aa1",
    "#76b7b2",
    "#edc948",
    "#9c755f",
    "#ff9da7",
    "#2f4b7c",
    "#a05195",
    "#665191",
    "#6b8e23",
)
GREY = "#a8a29e"
INK = "#1f2933"
MUTED = "#6b7280"
GRID = "#e5e7eb"


def cohort_colour(cohort_id: int) -> str:
    """Colour of a cohort id (0 = insufficient data = grey)."""
    if cohort_id <= 0:
        return GREY
    return PALETTE[(cohort_id - 1) % len(PALETTE)]


def esc(value: object) -> str:
    """HTML/XML-escape any value's text."""
    return html.escape(str(value), quote=True)


def fmt(value: float, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, thousands separators, '–' for NaN."""
    if value is None or not math.isfinite(value):
        return "–"
    if value == 0:
        return "0"
    mag = math.floor(math.log10(abs(value)))
    if mag >= digits - 1:
        return f"{value:,.0f}"
    decimals = max(0, digits - 1 - mag)
    return f"{value:,.{decimals}f}"


def tick(value: float) -> str:
    """A tick label: up to 3 significant digits, trailing zeros dropped."""
    text = fmt(value)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def pct(value: float, decimals: int = 0) -> str:
    """A share as a percentage ('–' for NaN)."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{100 * value:.{decimals}f} %"


def diverging(z: float) -> str:
    """Blue (low) - white - orange (high) colour for a z-score, saturating at |z| = 2."""
    if not math.isfinite(z):
        return "#f3f4f6"
    t = max(-1.0, min(1.0, z / 2.0))
    lo, hi, mid = (33, 102, 172), (214, 96, 77), (247, 247, 247)
    end = hi if t > 0 else lo
    a = abs(t)
    rgb = tuple(round(m + (e - m) * a) for m, e in zip(mid, end, strict=True))
    return "#{:02x}{:02x}{:02x}".format(*rgb)


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
        ticks.append(round(v, 12))
        v += step
    return ticks


class Svg:
    """Accumulates SVG elements; ``render()`` returns a responsive ``<svg>`` element."""

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
    ) -> None:
        """A line segment."""
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
            f'stroke="{stroke}" stroke-width="{width}"{d}/>'
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

    def polyline(self, points: list[tuple[float, float]], stroke: str, width: float = 2) -> None:
        """An open polyline."""
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        self.parts.append(
            f'<polyline points="{pts}" fill="none" stroke="{stroke}" stroke-width="{width}"/>'
        )

    def render(self) -> str:
        """The ``<svg>`` element (scales to its container's width)."""
        return (
            f'<svg viewBox="0 0 {self.width:.0f} {self.height:.0f}" role="img" '
            f'aria-label="{esc(self.label)}" preserveAspectRatio="xMinYMin meet" '
            f'style="width:100%;max-width:{self.width:.0f}px;height:auto">'
            + "".join(self.parts)
            + "</svg>"
        )
