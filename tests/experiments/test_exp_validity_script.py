"""benchmarks/validity_experiments.py exits non-zero when a figure misses its bar (issue 14 §5)."""

from __future__ import annotations

from typing import Any

import pytest
from benchmarks import validity_experiments as v


def _fake(passed: bool) -> Any:
    def run(**_: Any) -> dict[str, Any]:
        return {"pass": passed}

    return run


def test_missed_lists_checks_without_a_true_pass() -> None:
    results = {"a": {"pass": True}, "b": {"pass": False}, "c": {}, "d": {"pass": 1}}
    assert v.missed(results) == ["b", "c", "d"]


def test_main_exits_1_when_a_figure_misses_its_bar(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(v, "CHECKS", {"good": (_fake(True), {}, {}), "bad": (_fake(False), {}, {})})
    with pytest.raises(SystemExit) as exc:
        v.main([])
    assert exc.value.code == 1
    assert "MISSED THE BAR: bad" in capsys.readouterr().err
    v.main(["--only", "good"])  # every bar met: returns normally (exit status 0)


def test_fdr_bar_is_a_one_sided_binomial_test() -> None:
    assert v.fdr_bar(50, 1000)["pass"]  # exactly alpha
    assert v.fdr_bar(62, 1000)["pass"]  # within sampling error of 0.05
    bar = v.fdr_bar(80, 1000)  # 8 %: significantly above 0.05
    assert not bar["pass"]
    assert bar["max_count_passing"] < 80
    assert bar["ci95"][0] > 0.05
