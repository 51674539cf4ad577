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


# -- the shape of src/cohortlens: subpackages import each other without cycles, and never
# -- another package's private modules or names (docs/DESIGN.md, "Import rules").

SRC = TESTS.parent / "src" / OUR_PACKAGE
#: The node of ``cohortlens/__init__.py`` in the import graph.
ROOT = OUR_PACKAGE


def _module_name(path: Path, src: Path) -> tuple[str, bool]:
    """``cohortlens.events.ingest`` for ``src/cohortlens/events/ingest.py`` (and whether a package)."""
    parts = path.relative_to(src.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _unit(module: str) -> str:
    """The node ``module`` belongs to: its subpackage or top-level module, or :data:`ROOT`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def _is_submodule(module: str, src: Path) -> bool:
    rel = Path(*module.split(".")[1:])
    return (src / rel).is_dir() or (src / rel).with_suffix(".py").is_file()


def imports_of(path: Path, src: Path) -> list[tuple[int, str]]:
    """Every ``cohortlens`` module or name ``path`` imports (top level, in functions and under
    ``TYPE_CHECKING`` alike), with its line: ``cohortlens.store.base.Routing`` for
    ``from cohortlens.store.base import Routing``; relative imports resolved."""
    module, is_package = _module_name(path, src)
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
    return [(line, name) for line, name in found if name.split(".")[0] == OUR_PACKAGE]


def import_graph(src: Path) -> tuple[dict[str, set[str]], list[str]]:
    """The edges between subpackages (and top-level modules) of ``src``, and every import of
    another package's private module or name (a part after the package starting with one
    underscore), as ``file:line: name`` strings."""
    edges: dict[str, set[str]] = {}
    private: list[str] = []
    for path in sorted(src.rglob("*.py")):
        module, _ = _module_name(path, src)
        here = _unit(module)
        edges.setdefault(here, set())
        for line, name in imports_of(path, src):
            parts = name.split(".")
            # ``from cohortlens import X`` (X not a module) is the package's own __init__
            own_init = len(parts) == 2 and not _is_submodule(name, src)
            target = ROOT if own_init else parts[1]
            if target == here:
                continue
            edges[here].add(target)
            if any(p.startswith("_") and not p.startswith("__") for p in parts[2:]):
                where = path.relative_to(src.parent)
                private.append(f"{where}:{line}: {name} (private to {OUR_PACKAGE}.{target})")
    return edges, private


def import_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected group of more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    cycles = []
    for group in groups:  # walk inside the group from its first node back to it
        members, start = set(group), group[0]
        path, seen = [start], {start}
        while True:
            nxt = sorted(edges[path[-1]] & members)
            back = start in nxt and len(path) > 1
            if back:
                break
            step = next((n for n in nxt if n not in seen), None)
            if step is None:  # only the way back is left
                break
            path.append(step)
            seen.add(step)
        cycles.append([*path, start])
    return cycles


def test_subpackages_import_each_other_without_cycles() -> None:
    edges, _ = import_graph(SRC)
    assert {"events", "store", "features", "cli"} <= edges.keys()  # the scan saw the code
    assert "events" in edges["store"]  # the store fills the ingest protocol events owns
    assert import_cycles(edges) == []


def test_no_package_imports_another_packages_private_modules() -> None:
    _, private = import_graph(SRC)
    assert private == []


def test_the_shape_checks_catch_what_they_forbid(tmp_path: Path) -> None:
    """A cycle through three packages (one import inside a function), and private imports
    of three spellings; a package's own private modules and ``_version`` stay allowed."""
    src = tmp_path / OUR_PACKAGE
    files = {
        "__init__.py": "from cohortlens._version import __version__\n",
        "_version.py": "__version__ = '0'\n",
        "a/__init__.py": "from cohortlens.a._impl import f\n",
        "a/_impl.py": "from cohortlens.b.mod import g\n\ndef f(): pass\n",
        "b/__init__.py": "",
        "b/mod.py": "def g():\n    from cohortlens.c import h\n",
        "b/_priv.py": "X = 1\n",
        "c/__init__.py": "from .x import h\n",
        "c/x.py": "import cohortlens.a\nfrom cohortlens.b import _priv\n\ndef h(): pass\n",
        "d/__init__.py": "from cohortlens.b._priv import X\nfrom cohortlens.c.x import _h\n",
        "e/__init__.py": "from cohortlens import __version__\nfrom cohortlens.d import Y\n",
    }
    for name, text in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    edges, private = import_graph(src)
    assert edges["e"] == {ROOT, "d"}
    assert import_cycles(edges) == [["a", "b", "c", "a"]]
    assert sorted(p.split(": ")[1].split(" ")[0] for p in private) == [
        "cohortlens.b._priv",
        "cohortlens.b._priv.X",
        "cohortlens.c.x._h",
    ]
    (src / "c/x.py").write_text("def h(): pass\n")
    edges, _ = import_graph(src)
    assert import_cycles(edges) == []


# -- make bench runs every benchmark suite, python -m benchmarks.validity every validity suite

BENCHMARKS = TESTS.parent / "benchmarks"


def _suites(module: str) -> set[str]:
    """The module names in the ``SUITES`` dict of ``benchmarks/<module>.py``."""
    tree = ast.parse((BENCHMARKS / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign | ast.Assign) and isinstance(node.value, ast.Dict):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "SUITES" for t in targets):
                return {v.value for v in node.value.values if isinstance(v, ast.Constant)}
    raise AssertionError(f"benchmarks/{module}.py has no SUITES")


def test_make_bench_runs_every_benchmark_suite() -> None:
    files = {f"benchmarks.{p.stem}" for p in BENCHMARKS.glob("bench_*.py")}
    assert "benchmarks.bench_readers" in files
    assert _suites("run") == files


def test_the_validity_command_runs_every_validity_suite() -> None:
    files = {f"benchmarks.{p.stem}" for p in BENCHMARKS.glob("validity_*.py")}
    assert _suites("validity") == files
