"""The suite itself: no wall-clock deadlines, no skipping over a broken import of our own code.

A test that fails because a loaded machine was slow, or that turns ``import cohortlens.x``
failing into a skip, hides the thing it should report (issue 13, item 10).
"""

from __future__ import annotations

import ast
from pathlib import Path

from hypothesis import settings

TESTS = Path(__file__).resolve().parent
OUR_PACKAGE = "cohortlens"


def _test_sources() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def deadline_problems(source: str, where: str) -> list[str]:
    """``deadline=`` given anything but ``None`` (in ``settings(...)``, a profile, anywhere)."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        for kw in node.keywords:
            if kw.arg != "deadline":
                continue
            if not (isinstance(kw.value, ast.Constant) and kw.value.value is None):
                problems.append(
                    f"{where}:{node.lineno}: {_call_name(node)}(deadline={ast.unparse(kw.value)})"
                    " -- use deadline=None (the suite must pass on a loaded machine)"
                )
    return problems


def importorskip_problems(source: str, where: str) -> list[str]:
    """``pytest.importorskip`` of cohortlens's own modules (a broken import must fail)."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and _call_name(node) == "importorskip"):
            continue
        arg = node.args[0] if node.args else None
        name = arg.value if isinstance(arg, ast.Constant) else None
        if not isinstance(name, str) or name == OUR_PACKAGE or name.startswith(OUR_PACKAGE + "."):
            problems.append(
                f"{where}:{node.lineno}: importorskip({ast.unparse(arg) if arg else ''}) -- "
                "import our own modules directly; skip only on optional third-party packages"
            )
    return problems


def test_hypothesis_has_no_deadline_by_default() -> None:
    """tests/conftest.py loads a profile with ``deadline=None``."""
    assert settings.default.deadline is None


def test_no_test_sets_a_wall_clock_deadline() -> None:
    problems = [
        p
        for f in _test_sources()
        for p in deadline_problems(f.read_text(), str(f.relative_to(TESTS)))
    ]
    assert problems == []


def test_no_test_importorskips_our_own_modules() -> None:
    problems = [
        p
        for f in _test_sources()
        for p in importorskip_problems(f.read_text(), str(f.relative_to(TESTS)))
    ]
    assert problems == []


def test_the_checks_catch_what_they_forbid() -> None:
    """The two scanners find the patterns they exist for (and leave the allowed ones)."""
    bad = (
        "import pytest\nfrom hypothesis import settings\n"
        "@settings(max_examples=5, deadline=500)\ndef t(): pass\n"
        "settings.register_profile('x', deadline=timedelta(seconds=1))\n"
        "m = pytest.importorskip('cohortlens.serve.routing')\n"
        "n = pytest.importorskip(name)\n"
    )
    assert len(deadline_problems(bad, "bad.py")) == 2
    assert len(importorskip_problems(bad, "bad.py")) == 2
    good = (
        "import pytest\nfrom hypothesis import settings\n"
        "@settings(max_examples=5, deadline=None)\ndef t(): pass\n"
        "psycopg = pytest.importorskip('psycopg', reason='optional')\n"
        "time_left = deadline - now\n"
    )
    assert deadline_problems(good, "good.py") == []
    assert importorskip_problems(good, "good.py") == []
