"""The HTML report: self-contained, shows every cohort, and opens cleanly in headless Chromium."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pytest
from tests.cohorts.conftest import FAST_SELECTION, SimData
from tests.cohorts.headless import CHROMIUM, colour_pixels, decode_png, load_page

from cohortlens.cohorts import CohortModel, render_report, write_report
from cohortlens.reports.fmt import fmt, tick
from cohortlens.reports.svg import cohort_colour, nice_ticks


@pytest.fixture(scope="module")
def with_drift(fitted: CohortModel, sim: SimData) -> CohortModel:
    """A second run on a subsample, matched to ``fitted`` (so the report has a drift section)."""
    import pyarrow as pa

    rows = np.sort(np.random.default_rng(2).choice(sim.features.num_rows, 8000, replace=False))
    return CohortModel(selection=FAST_SELECTION, random_state=3).fit(
        sim.features.take(pa.array(rows)), outcomes=sim.outcomes, previous=fitted
    )


def _cards(model: CohortModel) -> list[int]:
    return [c for c, a in model.archetypes_.items() if a.size > 0]


def test_report_is_self_contained(with_drift: CohortModel, sim: SimData) -> None:
    page = render_report(with_drift, sim.features, title="Cohorts <test>")
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>Cohorts &lt;test&gt;</title>" in page
    # nothing is fetched: no external scripts, styles, images or fonts
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "<link" not in page
    assert "@import" not in page
    for section in ("cohorts-at-a-glance", "learners-in-two-dimensions", "outcomes-by-cohort"):
        assert f'id="{section}"' in page
    assert 'id="drift-versus-the-previous-model"' in page
    assert 'id="how-well-the-cohorts-hold-together"' in page
    for cid in _cards(with_drift):
        assert f'data-cohort="{cid}"' in page
        assert html.escape(with_drift.names_[cid]) in page


def test_report_without_the_feature_table_says_why(fitted: CohortModel, tmp_path: Path) -> None:
    path = write_report(fitted, tmp_path / "r.html")
    page = path.read_text(encoding="utf-8")
    assert "rendered without the feature table" in page
    assert "No previous model" in page


def test_number_formatting() -> None:
    assert fmt(1234.5) == "1,234"
    assert fmt(0.01234) == "0.0123"
    assert fmt(float("nan")) == "–"
    assert tick(-0.05) == "−0.05"
    assert tick(20.0) == "20"
    assert nice_ticks(0, 1, 5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert cohort_colour(0) != cohort_colour(1)


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is absent: install Debian's `chromium` package to run the browser test",
)
def test_report_opens_in_headless_chromium(
    with_drift: CohortModel, sim: SimData, tmp_path: Path
) -> None:
    path = write_report(with_drift, tmp_path / "report.html", sim.features)
    script = """
      Array.from(document.querySelectorAll('article.card[data-cohort]')).map(function (e) {
        var b = e.getBoundingClientRect();
        return {id: +e.getAttribute('data-cohort'), name: e.querySelector('h3').textContent,
                w: b.width, h: b.height, top: b.top + window.scrollY,
                visible: getComputedStyle(e).visibility === 'visible'};
      })
    """
    page = load_page(path.resolve().as_uri(), script, width=1366, height=768)
    assert page.console_errors == []
    cards = {c["id"]: c for c in page.evaluated}
    assert set(cards) == set(_cards(with_drift))
    for cid, card in cards.items():
        assert card["name"] == with_drift.names_[cid]
        assert card["visible"]
        assert card["w"] > 200
        assert card["h"] > 100
        assert 0 <= card["top"] < page.height
    # the screenshot itself shows every cohort's colour (card stripes, bars, dots)
    image = decode_png(page.screenshot_png)
    assert image.shape[:2] == (page.height, page.width)
    assert page.width == 1366  # laid out for a laptop screen, no horizontal overflow
    for cid in cards:
        assert colour_pixels(image, cohort_colour(cid)) > 500, f"cohort {cid} not visible"


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent")
def test_the_browser_harness_catches_console_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><body><p>x</p><script>console.error('boom');"
        "undefinedFunction();</script></body></html>",
        encoding="utf-8",
    )
    page = load_page(bad.resolve().as_uri(), "document.querySelectorAll('p').length")
    assert page.evaluated == 1
    assert any("boom" in e for e in page.console_errors)
    assert any("undefinedFunction" in e or "Uncaught" in e for e in page.console_errors)


def test_drilldown_is_capped_so_the_report_size_does_not_grow_with_learners(
    fitted: CohortModel, sim: SimData
) -> None:
    """Six times the learners: the same embedded rows per cohort, nearly the same size."""
    import json

    import pyarrow as pa
    import pyarrow.compute as pc

    base = sim.features
    copies = [
        base.set_column(
            0, "learner_id", pc.binary_join_element_wise(f"c{i}-", base["learner_id"], "")
        )
        for i in range(6)
    ]
    big = pa.concat_tables(copies)
    small_page = render_report(fitted, base, drilldown_rows=400)
    big_page = render_report(fitted, big, drilldown_rows=400)
    for page, n in ((small_page, base.num_rows), (big_page, big.num_rows)):
        payloads = re.findall(r'class="dd-data">(.*?)</script>', page)
        rows = [len(json.loads(p)["rows"]) for p in payloads]
        assert len(rows) == len(_cards(fitted))
        assert max(rows) == 400  # capped
        assert "at most 400 learners per cohort" in page  # and the report says so
        assert f"{n:,}" in page  # the totals still count everyone
    assert len(big_page) < 1.05 * len(small_page)  # (the copies' ids are 3 characters longer)
