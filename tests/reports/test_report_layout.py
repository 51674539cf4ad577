"""Both reports in headless Chromium at 1024, 1366 and 1920 px, on the demo data and OULAD.

Every text element is checked (tests/reports/layout.py): inside its SVG's viewBox or its
container, overlapping no other text, no ellipsis; the map's points strictly inside the plot
area; every chart with both axis titles; no horizontal scrolling. The drill-down tables are
opened first, so their text is checked too. Full-page screenshots go to
``build/report-screenshots/`` (kept by CI as artifacts).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.cohorts.headless import CHROMIUM, Browser
from tests.reports.conftest import Dataset
from tests.reports.layout import LAYOUT_CHECK, OPEN_ALL, describe

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is absent: install Debian's `chromium` package (make browser)",
)

SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "report-screenshots"
WIDTHS = (1024, 1366, 1920)
REPORTS = ("cohorts", "experiment", "segments")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser() as b:
        yield b


def _dataset(request: pytest.FixtureRequest, name: str) -> Dataset:
    data: Dataset = request.getfixturevalue(name)
    return data


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("report", REPORTS)
@pytest.mark.parametrize("dataset", ["demo", pytest.param("oulad", marks=pytest.mark.shared_data)])
def test_every_text_fits_and_nothing_overlaps(
    request: pytest.FixtureRequest,
    browser: Browser,
    report_dir: Path,
    dataset: str,
    report: str,
    width: int,
) -> None:
    data = _dataset(request, dataset)
    path = report_dir / f"{dataset}-{report}.html"
    if not path.exists():
        path.write_text(data.reports[report], encoding="utf-8")
    tab = browser.open(path.resolve().as_uri(), width, 900)
    try:
        rows = tab.eval(OPEN_ALL)
        result = tab.eval(LAYOUT_CHECK)
        png, _, _ = tab.screenshot()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / f"{dataset}-{report}-{width}.png").write_bytes(png)
        assert tab.console_errors() == []
        assert tab.requests() == [path.resolve().as_uri()]  # nothing fetched
    finally:
        tab.close()
    assert result["n_problems"] == 0, describe(result)
    assert result["charts"] >= (6 if report == "cohorts" else 1)
    assert result["texts"] > 200
    if report == "cohorts":
        assert result["points"] > 1000  # the map was drawn and checked
        assert rows > 0  # the drill-down tables were drawn and checked
