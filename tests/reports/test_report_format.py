"""The shared report pieces: number formats, measured and wrapped text, colours, the table."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cohortlens.reports.fmt import (
    NBSP,
    decimals_for,
    estimate,
    fmt,
    interval,
    p_value,
    pct,
    pct_interval,
    plural,
    share,
    signed_pct,
    times,
)
from cohortlens.reports.page import ReportMeta, header
from cohortlens.reports.svg import (
    DIVERGING_STOPS,
    PALETTE,
    diverging,
    ink_on,
    nice_max,
    text_width,
    wrap,
)
from cohortlens.reports.table import Column, data_table, decimals_for_values


def test_numbers_read_as_written_for_people() -> None:
    assert pct(0.2712) == f"27{NBSP}%"
    assert pct(-0.0004, 1) == f"0.0{NBSP}%"  # no "−0.0 %"
    assert share(0.27) == f"27{NBSP}%"
    assert share(0.012) == f"1.2{NBSP}%"  # small shares keep a decimal
    assert signed_pct(0.0512) == f"+5.1{NBSP}%"
    assert signed_pct(-0.02) == f"−2.0{NBSP}%"  # the minus sign, not a hyphen
    assert times(2.0862) == "2.1×"
    assert fmt(-0.05) == "−0.0500"  # three significant digits
    assert plural(1, "event") == "1 event"
    assert plural(3, "event") == "3 events"


def test_intervals_stay_on_one_line_with_the_unit_once() -> None:
    assert pct_interval(0.83, 0.87) == f"83–87{NBSP}%"
    iv = interval(-0.0071, 0.0142, lambda v: estimate(100 * v, 2, signed=True))
    assert iv == "−0.71 to +1.42"  # "to", not a dash, when an end is negative
    assert "\n" not in iv
    assert interval(math.nan, 1.0, str) == "–"


def test_precision_follows_the_standard_error() -> None:
    assert decimals_for(0.0123) == 3  # two significant digits of the standard error
    assert decimals_for(1.7) == 1
    assert decimals_for(230.0) == 0
    assert estimate(26.5912, decimals_for(0.21)) == "26.59"
    assert estimate(250_000.0, decimals_for(310.0)) == "250,000"


def test_p_values_never_break_into_exponents() -> None:
    assert p_value(1.1e-7) == "< 0.001"
    assert p_value(0.0123) == "0.012"
    assert p_value(0.99999) == "> 0.999"
    assert p_value(math.nan) == "–"


@given(st.text(alphabet="abcdefghij -·", min_size=0, max_size=80), st.floats(20, 400))
def test_wrap_keeps_every_word_and_fits_when_it_can(text: str, width: float) -> None:
    lines = wrap(text, width, 13)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")  # nothing dropped or cut
    for line in lines:
        if " " in line:  # a line of several words is never wider than asked
            assert text_width(line, 13) <= width + 1e-9


def test_text_width_uses_font_metrics() -> None:
    assert text_width("iiii", 10) < text_width("MMMM", 10)
    assert text_width("abc", 26) == pytest.approx(2 * text_width("abc", 13))
    assert text_width("abc", 13, bold=True) > text_width("abc", 13)


def test_long_names_wrap_onto_a_second_line() -> None:
    name = "4 · intensive focused learners with weak retention"
    lines = wrap(name, 260, 13)
    assert len(lines) == 2
    assert " ".join(lines) == name


def test_colours_match_their_captions() -> None:
    assert diverging(-10) == DIVERGING_STOPS[0]  # "blue = lower"
    assert diverging(10) == DIVERGING_STOPS[-1]  # "orange = higher"
    assert diverging(0) == DIVERGING_STOPS[2]  # white = the same
    r, g, b = (int(DIVERGING_STOPS[-1][i : i + 2], 16) for i in (1, 3, 5))
    assert r > g > b  # orange: red over green over blue
    r, g, b = (int(DIVERGING_STOPS[0][i : i + 2], 16) for i in (1, 3, 5))
    assert b > g > r  # blue
    assert ink_on("#ffffff") != "#ffffff"
    assert ink_on("#2166ac") == "#ffffff"
    # Okabe & Ito's colour-blind-safe set leads the cohort palette
    assert PALETTE[:6] == ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00")


def test_axis_ends_are_round() -> None:
    assert nice_max(0.291) == pytest.approx(0.3)
    assert nice_max(0.2) == pytest.approx(0.2)
    assert nice_max(47.0) == pytest.approx(60.0)  # ticks 0, 20, 40, 60


def test_table_embeds_rows_safely_and_picks_decimals() -> None:
    html = data_table(
        table_id="t",
        columns=[Column("learner_id", "learner", "text"), Column("x", "x", "num", 2)],
        rows=[["</script><b>", 1.5], ["u2", math.nan]],
        file_name="t.csv",
    )
    payload = re.search(r'class="dd-data">(.*?)</script>', html)
    assert payload is not None
    data = json.loads(payload.group(1))
    assert data["rows"] == [["</script><b>", 1.5], ["u2", None]]  # NaN travels as null
    assert html.count("</script>") == 1  # the id cannot close the script early
    assert decimals_for_values([3.0, 7.0, 12.0]) == 0  # counts have no decimals
    assert decimals_for_values([0.0123, 0.02]) == 4
    assert decimals_for_values([12.5, 30.2]) == 1


def test_header_names_the_data_range_and_the_command() -> None:
    text = header(
        "T",
        ReportMeta(
            command="cohortlens discover --report r.html",
            data_range=("2025-01-06", "2025-07-06"),
            data_basis="first and last event",
        ),
    )
    assert "2025-01-06 to 2025-07-06 (first and last event)" in text
    assert "<code>cohortlens discover --report r.html</code>" in text
    assert "not recorded" in header("T", ReportMeta())
