"""Numbers as a reader sees them: significant digits, percentages, intervals, p-values.

Rules (docs/REPORTS.md): negative numbers use the minus sign (U+2212); an interval is
written on one line, ``83–87 %`` when both ends are non-negative, ``−2.0 to +3.1`` otherwise;
an estimate is shown to the precision its standard error supports (two significant digits
of the standard error); a p-value below 0.001 is written ``< 0.001``; undefined is ``–``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

DASH = "–"
MINUS = "−"
#: No-break space: keeps a number and its unit (``27 %``) on one line.
NBSP = "\u00a0"
#: What an undefined number is shown as.
UNDEFINED = "–"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _minus(text: str) -> str:
    return MINUS + text[1:] if text.startswith("-") else text


def fmt(value: float | None, digits: int = 3) -> str:
    """``digits`` significant digits (at least all integer digits), thousands separators."""
    if value is None or not math.isfinite(value):
        return UNDEFINED
    if value == 0:
        return "0"
    mag = math.floor(math.log10(abs(value)))
    if mag >= digits - 1:
        return _minus(f"{value:,.0f}")
    decimals = max(0, digits - 1 - mag)
    return _minus(f"{value:,.{decimals}f}")


def tick(value: float) -> str:
    """A tick label: up to 3 significant digits, trailing zeros dropped."""
    text = fmt(value)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in (f"{MINUS}0", "") else text


def pct(value: float | None, decimals: int = 0) -> str:
    """A share as a percentage (``27 %``)."""
    if value is None or not math.isfinite(value):
        return UNDEFINED
    text = f"{100 * value:.{decimals}f}"
    if float(text) == 0:
        text = text.lstrip("-")
    return _minus(text) + NBSP + "%"


def signed_pct(value: float | None, decimals: int = 1) -> str:
    """A relative change with its sign (``+5.1 %``, ``−2.0 %``)."""
    if value is None or not math.isfinite(value):
        return UNDEFINED
    text = f"{100 * value:+.{decimals}f}"
    if float(text) == 0:
        text = text[1:]
    return _minus(text) + NBSP + "%"


def share(value: float | None) -> str:
    """A share of learners: whole percent from 10 % up, one decimal below (``1.2 %``)."""
    if value is None or not math.isfinite(value):
        return UNDEFINED
    return pct(value, 0 if abs(value) >= 0.095 else 1)


def plural(n: int, word: str) -> str:
    """``1 event``, ``3 events`` (English plural by ``s``)."""
    return f"{count(n)} {word if n == 1 else word + 's'}"


def count(n: int) -> str:
    """An integer count with thousands separators."""
    return f"{n:,}"


def times(ratio: float | None) -> str:
    """A ratio to a reference (``2.1×``), two significant digits."""
    if ratio is None or not math.isfinite(ratio):
        return UNDEFINED
    return f"{fmt(ratio, 2)}×"


def decimals_for(se: float | None, *, fallback: int = 3) -> int:
    """Decimals that show two significant digits of a standard error ``se``."""
    if se is None or not math.isfinite(se) or se <= 0:
        return fallback
    return max(0, 1 - math.floor(math.log10(se)))


def estimate(value: float | None, decimals: int, *, signed: bool = False) -> str:
    """``value`` with ``decimals`` decimals and thousands separators (signed on request)."""
    if value is None or not math.isfinite(value):
        return UNDEFINED
    text = f"{value:+,.{decimals}f}" if signed else f"{value:,.{decimals}f}"
    if float(text.replace(",", "")) == 0:
        text = text.lstrip("+-")
    return _minus(text)


def interval(
    lower: float | None,
    upper: float | None,
    formatter: Callable[[float], str],
    *,
    unit: str = "",
) -> str:
    """``lower``–``upper`` on one line; ``to`` instead of the dash when an end is negative.

    ``unit`` (e.g. ``NBSP + "%"``) is stripped from the lower end and written once at the end.
    """
    if not (_finite(lower) and _finite(upper)):
        return UNDEFINED
    assert lower is not None
    assert upper is not None
    lo, hi = formatter(lower), formatter(upper)
    if unit and lo.endswith(unit) and hi.endswith(unit):
        lo = lo[: -len(unit)]
    else:
        unit = ""
    sep = " to " if (lower < 0 or upper < 0 or lo.startswith("+")) else DASH
    return f"{lo}{sep}{hi}"


def pct_interval(lower: float | None, upper: float | None, decimals: int = 0) -> str:
    """A share interval, ``83–87 %``."""
    return interval(lower, upper, lambda v: pct(v, decimals), unit=NBSP + "%")


def p_value(p: float | None) -> str:
    """A p-value for readers: three decimals, ``< 0.001`` below that."""
    if p is None or not math.isfinite(p):
        return UNDEFINED
    if p < 0.001:
        return "< 0.001"
    if p > 0.999:
        return "> 0.999"
    return f"{p:.3f}"


__all__ = [
    "DASH",
    "MINUS",
    "NBSP",
    "UNDEFINED",
    "count",
    "decimals_for",
    "estimate",
    "fmt",
    "interval",
    "p_value",
    "pct",
    "pct_interval",
    "plural",
    "share",
    "signed_pct",
    "tick",
    "times",
]
