"""The experiment report: a refusal on unusable input, a readable results table, axis titles."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from cohortlens.experiments import (
    AnalysisConfig,
    ExperimentStats,
    MetricKind,
    MetricSpec,
    SufficientStats,
    analyze,
)
from cohortlens.experiments.errors import ReportStatus
from cohortlens.experiments.report import render_html
from cohortlens.experiments.results import ExperimentReport
from cohortlens.experiments.srm import check_srm

SPECS = [MetricSpec("completed", MetricKind.BINARY), MetricSpec("revenue", MetricKind.MEAN)]


def _binary(n: int, successes: int) -> SufficientStats:
    return SufficientStats(n=n, sum_y=float(successes), sum_yy=float(successes))


def _mean(n: int, mean: float, sd: float) -> SufficientStats:
    return SufficientStats(n=n, sum_y=n * mean, sum_yy=(n - 1) * sd**2 + n * mean**2)


def _stats(units: dict[str, int]) -> ExperimentStats:
    rates = {"control": 0.300, "a": 0.312, "b": 0.296}
    means = {"control": 31.8, "a": 33.1, "b": 31.7}
    return ExperimentStats(
        units=units,
        metrics={
            "completed": {v: _binary(n, round(n * rates[v])) for v, n in units.items()},
            "revenue": {v: _mean(n, means[v], 45.0) for v, n in units.items()},
        },
    )


class _Text(HTMLParser):
    """Visible text (outside <script> and <style>) and the banners' classes."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.banners: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        cls = dict(attrs).get("class") or ""
        if "banner" in cls.split():
            self.banners.append(cls)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


def _read(html: str) -> _Text:
    parser = _Text()
    parser.feed(html)
    return parser


def test_a_single_arm_is_refused_never_a_green_banner() -> None:
    report = ExperimentReport(
        status=ReportStatus.OK,
        control="control",
        variants=("control",),
        units={"control": 5000},
        alpha=0.05,
        correction="holm",
        srm=check_srm({"control": 5000}),
        effects=(),
    )
    page = _read(render_html(report))
    assert page.banners == ["banner refuse"]
    text = " ".join(page.text)
    assert "at least two arms" in text
    assert "control (5,000)" in text
    assert "Trust checks passed" not in text
    assert "results" not in render_html(report).split("banner refuse", 1)[1].split("<table", 1)[0]


def test_a_broken_split_withholds_conclusions() -> None:
    report = analyze(SPECS, _stats({"control": 50_000, "a": 46_000}))
    assert report.status is ReportStatus.SRM_MISMATCH
    page = _read(render_html(report))
    assert page.banners == ["banner bad"]
    assert "Conclusions withheld" in " ".join(page.text)


def test_results_one_row_per_metric_and_arm_numbers_to_their_precision() -> None:
    report = analyze(
        SPECS, _stats({"control": 250_000, "a": 250_000, "b": 250_000}), AnalysisConfig()
    )
    html = render_html(report, units={"revenue": "EUR"})
    page = _read(html)
    assert page.banners == ["banner ok"]
    text = " ".join(page.text)
    body = html.split("class='wide results'", 1)[1].split("</table>", 1)[0]
    assert body.count("<tr>") == 1 + len(SPECS) * 2  # header + metrics × arms
    assert "250,000" in text
    assert "250,000.0" not in text
    assert not re.search(r"\d[eE][-+]?\d", text)  # no exponents ("1.1e-07")
    assert "< 0.001" in text  # the p-value of a 1.2-point change in 500,000 learners
    # every interval sits in a no-wrap span: on one line
    intervals = re.findall(r"<span class='iv'>\(([^<]*)\)</span>", body)
    assert len(intervals) == 2 * len(SPECS) * 2
    assert all(" to " in iv or "–" in iv for iv in intervals)
    # the change in completion, in percentage points, to the standard error's precision
    e = report.effect("completed", "a")
    assert f"{100 * e.effect_size:+.2f}\u00a0pp" in body
    assert "EUR" in text  # the unit of a mean metric


def test_every_chart_has_both_axis_titles() -> None:
    periods = [_stats({"control": 20_000, "a": 20_000}) for _ in range(4)]
    periods = [
        ExperimentStats(p.units, p.metrics, label=f"day {i + 1}") for i, p in enumerate(periods)
    ]
    from cohortlens.experiments.sequential import SequentialParams

    report = analyze(SPECS, periods, AnalysisConfig(sequential=SequentialParams(tuning_n=80_000)))
    html = render_html(report)
    charts = html.count('<svg class="chart"')
    assert charts == 1 + len(report.effects)  # the forest plot and one chart per comparison
    for svg in html.split('<svg class="chart"')[1:]:
        svg = svg.split("</svg>", 1)[0]
        assert 'class="axis-title x"' in svg
        assert 'class="axis-title y"' in svg
