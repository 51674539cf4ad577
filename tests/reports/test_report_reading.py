"""Reading the cohort report as its reader does, in headless Chromium.

* Each cohort's summary paragraph is checked against its card, and both against figures
  recomputed here from the model's archetypes (not through the summary code).
* The drill-down table sorts and filters in the browser: a real click on a header, typed
  filter text, then the rows on screen; "Download CSV" saves the rows shown.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.cohorts.headless import CHROMIUM, Browser
from tests.reports.conftest import DRILLDOWN_ROWS, Dataset

from cohortlens.cohorts import CohortModel

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent")

NB = "\u00a0"

READ = r"""
(function(){
  var out={summaries:{},cards:{}};
  document.querySelectorAll('p.cohort-summary').forEach(function(p){
    out.summaries[p.dataset.cohort]=p.textContent;});
  document.querySelectorAll('article.card').forEach(function(c){
    out.cards[c.dataset.cohort]={share:+c.dataset.share,size:+c.dataset.size,
      name:c.querySelector('h3').textContent,sizeText:c.querySelector('.size').textContent,
      outcomes:Array.prototype.map.call(c.querySelectorAll('[data-outcome]'),function(o){
        return {name:o.dataset.outcome,value:+o.dataset.value,lo:+o.dataset.lo,
                hi:+o.dataset.hi,avg:+o.dataset.avg,text:o.textContent};}),
      traits:Array.prototype.map.call(c.querySelectorAll('li[data-feature]'),function(l){
        return {feature:l.dataset.feature,value:l.querySelector('b').textContent};})};
  });
  return out;
})()
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser() as b:
        yield b


def _open(browser: Browser, html: str, path: Path, width: int = 1366) -> Any:
    path.write_text(html, encoding="utf-8")
    return browser.open(path.resolve().as_uri(), width, 900)


def _averages(model: CohortModel) -> dict[str, float]:
    """Each outcome over all learners who have it, from the archetypes."""
    sums: dict[str, list[float]] = {}
    for a in model.archetypes_.values():
        for name, est in a.outcomes.items():
            if est.n > 0 and math.isfinite(est.value):
                s = sums.setdefault(name, [0.0, 0.0])
                s[0] += est.value * est.n
                s[1] += est.n
    return {k: s / n for k, (s, n) in sums.items()}


def _close(shown: str, value: float, digits: int) -> bool:
    """``shown`` is ``value`` to ``digits`` significant digits (half a unit of the last)."""
    if value == 0:
        return float(shown) == 0
    unit = 10 ** (math.floor(math.log10(abs(value))) - digits + 1)
    return abs(float(shown) - value) <= unit / 2 + 1e-12


def _number(text: str) -> float:
    return float(text.replace(",", "").replace("−", "-").replace("+", "").split(NB)[0])


@pytest.mark.parametrize("dataset", ["demo", pytest.param("oulad", marks=pytest.mark.shared_data)])
def test_each_summary_says_what_its_card_shows(
    request: pytest.FixtureRequest, browser: Browser, tmp_path: Path, dataset: str
) -> None:
    data: Dataset = request.getfixturevalue(dataset)
    model = data.model
    tab = _open(browser, data.reports["cohorts"], tmp_path / "r.html")
    page = tab.eval(READ)
    tab.close()
    averages = _averages(model)
    assert set(page["summaries"]) == set(page["cards"])
    assert len(page["summaries"]) == sum(1 for a in model.archetypes_.values() if a.size > 0)
    for cid, text in page["summaries"].items():
        card, arche = page["cards"][cid], model.archetypes_[int(cid)]
        title = "Insufficient data" if cid == "0" else f"Cohort {cid}, {card['name']}"
        # share and size
        m = re.match(
            rf"{re.escape(title)}: (?P<share>[\d.]+){NB}% of learners \((?P<size>[\d,]+)\)", text
        )
        assert m, text
        assert card["size"] == arche.size
        assert card["share"] == pytest.approx(arche.share)
        assert m["size"] == f"{arche.size:,}"
        assert f"{arche.size:,} learners" in card["sizeText"]
        decimals = 0 if arche.share >= 0.095 else 1
        assert m["share"] == f"{100 * arche.share:.{decimals}f}"
        # the outcome furthest from its average, with its interval and the ratio
        rates = {
            name: est
            for name, est in arche.outcomes.items()
            if name in ("completed", "churned") and est.n > 0 and est.value > 0
        }
        if rates:
            expected = max(rates, key=lambda k: abs(math.log(rates[k].value / averages[k])))
            est, avg = rates[expected], averages[expected]
            m = re.search(
                rf"(?P<v>\d+){NB}% (?P<name>\w+) \(95{NB}% interval (?P<lo>\d+)–(?P<hi>\d+){NB}%\)"
                rf", (?P<ratio>[\d.]+)× the average of (?P<avg>\d+){NB}%",
                text,
            )
            assert m, text
            assert m["name"] == expected
            assert m["v"] == f"{100 * est.value:.0f}"
            assert (m["lo"], m["hi"]) == (f"{100 * est.ci_lower:.0f}", f"{100 * est.ci_upper:.0f}")
            assert m["avg"] == f"{100 * avg:.0f}"
            assert _close(m["ratio"], est.value / avg, 2)
            line = next(o for o in card["outcomes"] if o["name"] == expected)
            assert line["value"] == pytest.approx(est.value)
            assert line["avg"] == pytest.approx(avg)
            assert f"{m['v']}{NB}%" in line["text"]
            assert f"({m['lo']}–{m['hi']}{NB}%)" in line["text"]
            assert f"{m['ratio']}× average" in line["text"]
        # the two features that set the cohort apart, as on the card
        if cid == "0":
            continue
        ranked = sorted(
            (
                (abs(p.z), col)
                for col, p in arche.profile.items()
                if math.isfinite(p.z) and math.isfinite(p.centre) and p.coverage >= 0.5
            ),
            reverse=True,
        )
        notable = [col for z, col in ranked[:2] if z >= 0.5]
        assert [t["feature"] for t in card["traits"][: len(notable)]] == notable
        m = re.search(r"Compared with all learners they have (.+)\.$", text)
        if not notable:
            assert "close to the average learner" in text
            continue
        assert m, text
        pairs = re.findall(r"\(([^()]*?) against ([^()]*?)\)", m[1])
        assert len(pairs) == len(notable)
        for (mine, _), col, trait in zip(pairs, notable, card["traits"], strict=False):
            assert _number(mine) == _number(trait["value"])  # the same figure as the card
            centre = arche.profile[col].centre
            if "%" in mine:
                assert _number(mine) == round(100 * centre)
            else:
                assert _close(mine.split(NB)[0].replace(",", "").replace("−", "-"), centre, 3)


def test_drilldown_sorts_filters_and_downloads(
    demo: Dataset, browser: Browser, tmp_path: Path
) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.allow_downloads(downloads)
    tab = _open(browser, demo.reports["cohorts"], tmp_path / "r.html")
    try:
        box = 'details.dd[data-cohort="1"]'
        tab.click(f"{box} > summary")  # a real click opens the cohort
        tab.wait_until(f"document.querySelector('{box} tbody tr')")
        data = tab.eval(f"JSON.parse(document.querySelector('{box} script.dd-data').textContent)")
        cols = [c["key"] for c in data["columns"]]
        assert len(data["rows"]) == DRILLDOWN_ROWS  # capped: typical learners + a sample
        feature = 1  # the cohort's most distinctive feature

        def shown() -> list[list[str]]:
            rows: list[list[str]] = tab.eval(
                f"Array.prototype.map.call(document.querySelectorAll('{box} tbody tr'),"
                "function(r){return Array.prototype.map.call(r.cells,function(c){"
                "return c.textContent;});})"
            )
            return rows

        assert len(shown()) == DRILLDOWN_ROWS
        tab.click(f'{box} th[data-col="{feature}"]')
        values = [_number(r[feature]) for r in shown()]
        assert values == sorted(values)
        assert (
            tab.eval(
                f"document.querySelector('{box} th[data-col=\"{feature}\"]')"
                ".getAttribute('aria-sort')"
            )
            == "ascending"
        )
        tab.click(f'{box} th[data-col="{feature}"]')  # again: the other way
        values = [_number(r[feature]) for r in shown()]
        assert values == sorted(values, reverse=True)
        # type a filter: learner ids are "u<number>"; no other cell contains a "u"
        ids = [str(r[0]) for r in data["rows"]]
        needle = ids[7][:3]
        tab.type(f"{box} input.dd-filter", needle)
        rows = shown()
        expected = {i for i in ids if needle in i.lower()}
        assert {r[0] for r in rows} == expected
        assert 0 < len(rows) < len(ids)
        values = [_number(r[feature]) for r in rows]
        assert values == sorted(values, reverse=True)  # still sorted
        count = tab.eval(f"document.querySelector('{box} .dd-count').textContent")
        assert count == f"{len(rows)} of {DRILLDOWN_ROWS} rows"
        # download the rows shown
        tab.click(f"{box} button.dd-csv")
        deadline = time.monotonic() + 30
        while not list(downloads.glob("*.csv")) and time.monotonic() < deadline:
            time.sleep(0.1)
        files = list(downloads.glob("*.csv"))
        assert [f.name for f in files] == ["cohort-1-learners.csv"]
        with files[0].open(newline="", encoding="utf-8") as f:
            table = list(csv.reader(f))
        assert table[0] == cols
        assert [r[0] for r in table[1:]] == [r[0] for r in rows]  # same rows, same order
        raw = {str(r[0]): r for r in data["rows"]}
        for line in table[1:]:
            assert float(line[feature]) == pytest.approx(raw[line[0]][feature])  # full precision
        assert tab.console_errors() == []
    finally:
        tab.close()
    assert json.dumps(cols)  # the CSV header is the columns' machine names


@pytest.mark.parametrize("report", ["cohorts", "experiment"])
def test_print_styles_drop_the_tools_and_keep_the_width(
    demo: Dataset, browser: Browser, tmp_path: Path, report: str
) -> None:
    tab = _open(browser, demo.reports[report], tmp_path / "r.html", width=1024)
    try:
        tab.eval("document.querySelectorAll('details').forEach(function(d){d.open=true;})")
        tab.wait_until(
            "!document.querySelector('details.dd') || document.querySelector('tbody tr')"
        )
        tab.emulate_media("print")
        found = tab.eval(
            "(function(){var s=function(q){var e=document.querySelector(q);"
            "return e?getComputedStyle(e).display:'absent';};"
            "return {tools:s('.dd-tools'),tip:s('#tip'),bg:getComputedStyle(document.body)"
            ".backgroundColor,wide:document.documentElement.scrollWidth>window.innerWidth,"
            "scroll:(function(){var e=document.querySelector('.dd-scroll');"
            "return e?getComputedStyle(e).overflowY:'absent';})()};})()"
        )
    finally:
        tab.close()
    assert found["tip"] == "none"
    assert found["bg"] == "rgb(255, 255, 255)"  # no page tint on paper
    assert not found["wide"]
    if report == "cohorts":
        assert found["tools"] == "none"  # no filter box or button on paper
        assert found["scroll"] == "visible"  # opened tables print in full
