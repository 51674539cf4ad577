"""Every command README.md and docs/CLI.md show runs as written, on the demo data.

The commands are the lines of the docs' fenced ``sh`` (``bash``, ``shell``) blocks, README.md
first, in document order, one test each, all in one working directory: the simulator output
the README makes, an ``export.csv`` of the layout the README maps, ``../shared/data`` (linked
when the shared datasets are on this machine) and the default store ``./cohortlens.duckdb``
that the commands build up. Each runs through ``bash`` exactly as written except:

* ``.venv/bin/cohortlens`` (``.venv/bin/python``) becomes this interpreter (``-m cohortlens``);
* ``make TARGET`` is checked with ``make -n TARGET`` in the repository (the real targets
  create a virtualenv and run this very suite);
* ``cohortlens serve`` gets a free ``--port``, is probed once (``/healthz`` then ``/readyz``)
  and stopped;
* commands reading ``../shared/data`` skip when the datasets are absent, and Spark commands
  when pyspark or Java is missing, saying why.

Anything else must exit 0: a wrong command added to the docs fails its test.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from cohortlens.simulate import SimulationParams, simulate

REPO = Path(__file__).resolve().parents[2]
#: The shared datasets beside the repository (as tests/conftest.py finds them).
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
DOCS = ("README.md", "docs/CLI.md")
SHELL_FENCES = frozenset({"sh", "bash", "shell"})
#: Seconds one documented command may take (the Spark one is the slowest).
COMMAND_TIMEOUT_S = 540
_VENV_TOOL = re.compile(r"(?<![\w./-])\.venv/bin/(cohortlens|python)\b")
_MAKE = re.compile(r"^make\s+([\w.-]+)")
_SERVE = re.compile(r"\bcohortlens serve\b")


@dataclass(frozen=True)
class DocCommand:
    """One command line of a doc: where it is and its text."""

    doc: str
    line: int
    text: str

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def doc_commands(markdown: str, doc: str) -> list[DocCommand]:
    """The command lines of ``markdown``'s shell fences (``\\`` continuations joined)."""
    found: list[DocCommand] = []
    fence: str | None = None
    pending, start = "", 0
    for number, raw in enumerate(markdown.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else (stripped[3:].strip().split() or [""])[0]
            continue
        if fence not in SHELL_FENCES:
            continue
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if not pending:
            start = number
        pending += stripped
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip() + " "
            continue
        found.append(DocCommand(doc, start, pending))
        pending = ""
    return found


def all_doc_commands() -> list[DocCommand]:
    commands: list[DocCommand] = []
    for doc in DOCS:
        commands += doc_commands((REPO / doc).read_text(encoding="utf-8"), doc)
    return commands


COMMANDS = all_doc_commands()


def as_run(text: str) -> str:
    """The command with ``.venv/bin/cohortlens`` / ``python`` replaced by this interpreter."""
    python = shlex.quote(sys.executable)
    return _VENV_TOOL.sub(
        lambda m: f"{python} -m cohortlens" if m.group(1) == "cohortlens" else python, text
    )


def command_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "COHORTLENS_DB"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env["COLUMNS"] = "120"
    return env


@dataclass(frozen=True)
class Outcome:
    status: str  # "ok", "failed" or "skipped"
    message: str = ""


def _spark_missing() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark (the spark extra) is not installed"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "Spark needs Java, and none is installed"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _report(cmd: DocCommand, ran: str, code: int | None, out: str, err: str) -> str:
    return (
        f"{cmd.id}: `{cmd.text}` exited {code}\n(ran: {ran})\n"
        f"--- stdout (end)\n{out[-2000:]}\n--- stderr (end)\n{err[-3000:]}"
    )


def _serve(cmd: DocCommand, ran: str, workdir: Path) -> Outcome:
    """Start the service as documented (on a free port), probe it once, stop it."""
    port = _free_port()
    ran = f"{ran} --port {port}"
    proc = subprocess.Popen(
        ["bash", "-c", ran],
        cwd=workdir,
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                out, err = proc.communicate()
                return Outcome("failed", _report(cmd, ran, proc.returncode, out, err))
            try:
                if httpx.get(f"{base}/healthz", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                return Outcome("failed", f"{cmd.id}: the service did not answer within 180 s")
            time.sleep(0.5)
        ready = httpx.get(f"{base}/readyz", timeout=10.0)
        if ready.status_code != 200:
            return Outcome("failed", f"{cmd.id}: /readyz answered {ready.status_code}")
        return Outcome("ok")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def execute(cmd: DocCommand, workdir: Path) -> Outcome:
    """Run one documented command in ``workdir`` (see the module docstring for the rules)."""
    make = _MAKE.match(cmd.text)
    if make:
        if shutil.which("make") is None:
            return Outcome("skipped", "make is not installed")
        r = subprocess.run(
            ["make", "-n", "-C", str(REPO), make.group(1)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if r.returncode != 0:
            return Outcome(
                "failed", _report(cmd, f"make -n {make.group(1)}", r.returncode, "", r.stderr)
            )
        return Outcome("ok")
    if "../shared/data/" in cmd.text:
        name = cmd.text.split("../shared/data/", 1)[1].split()[0].strip("/")
        if not (SHARED_DATA / name).exists():
            return Outcome("skipped", f"{SHARED_DATA / name} is absent (shared datasets)")
    if "--engine spark" in cmd.text:
        missing = _spark_missing()
        if missing is not None:
            return Outcome("skipped", missing)
    ran = as_run(cmd.text)
    if _SERVE.search(cmd.text):
        return _serve(cmd, ran, workdir)
    try:
        r = subprocess.run(
            ["bash", "-c", ran],
            cwd=workdir,
            env=command_env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=COMMAND_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        return Outcome("failed", f"{cmd.id}: `{cmd.text}` ran over {COMMAND_TIMEOUT_S} s ({exc})")
    if r.returncode != 0:
        return Outcome("failed", _report(cmd, ran, r.returncode, r.stdout, r.stderr))
    return Outcome("ok")


def export_csv(path: Path) -> None:
    """A platform export in a foreign layout (user_id, timestamp, ...) with a few bad rows."""
    events = simulate(SimulationParams(n_learners=200, n_weeks=6, seed=11)).events
    table = pa.table(
        {
            "user_id": pc.binary_join_element_wise("x-", events["learner_id"], ""),
            "timestamp": pc.strftime(events["ts"], "%Y-%m-%dT%H:%M:%SZ"),
            "item_id": events["item_id"],
            "domain": events["domain"],
            "outcome": events["outcome"],
        }
    )
    pacsv.write_csv(table, path)
    with path.open("a", encoding="utf-8") as fh:  # rows for `cohortlens quarantine` to show
        fh.write("x-bad1,03/01/2024 10:00,item-1,math,1.0\n")
        fh.write("x-bad2,yesterday,item-2,math,0.0\n")
        fh.write(",2024-03-01T10:00:00Z,item-3,math,1.0\n")


class Session:
    """The documented commands run in order in one working directory, each at most once."""

    def __init__(self, root: Path) -> None:
        self.workdir = root / "work"
        self.workdir.mkdir()
        if SHARED_DATA.exists():  # the docs reach it as ../shared/data
            (root / "shared").mkdir()
            (root / "shared" / "data").symlink_to(SHARED_DATA, target_is_directory=True)
        export_csv(self.workdir / "export.csv")
        self.outcomes: dict[int, Outcome] = {}

    def outcome(self, index: int) -> Outcome:
        for i in range(index + 1):  # earlier commands first: they make this one's inputs
            if i not in self.outcomes:
                self.outcomes[i] = execute(COMMANDS[i], self.workdir)
        return self.outcomes[index]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    return Session(tmp_path_factory.mktemp("docs"))


@pytest.mark.parametrize("index", range(len(COMMANDS)), ids=[c.id for c in COMMANDS])
def test_documented_command_runs(session: Session, index: int) -> None:
    got = session.outcome(index)
    if got.status == "skipped":
        pytest.skip(f"{COMMANDS[index].id}: {got.message}")
    assert got.status == "ok", got.message


def test_both_docs_show_commands() -> None:
    per_doc = {doc: [c for c in COMMANDS if c.doc == doc] for doc in DOCS}
    assert len(per_doc["README.md"]) >= 10
    assert len(per_doc["docs/CLI.md"]) >= 3
    texts = " ".join(c.text for c in COMMANDS)
    for command in ("models", "quarantine --reason", "rollout init > rollout.yaml", "serve"):
        assert command in texts


def test_extraction_reads_shell_fences_only() -> None:
    markdown = (
        "text `cohortlens not-run`\n"
        "```sh\n"
        "# a comment\n"
        ".venv/bin/cohortlens simulate \\\n"
        "    --learners 10   # trailing comment\n"
        "\n"
        "make demo\n"
        "```\n"
        "```json\n"
        '{"not": "a command"}\n'
        "```\n"
        "```\n"
        "cohortlens not-run-either\n"
        "```\n"
        "```bash\n"
        "X=1 .venv/bin/cohortlens models\n"
        "```\n"
    )
    got = doc_commands(markdown, "x.md")
    assert [(c.line, c.text) for c in got] == [
        (4, ".venv/bin/cohortlens simulate --learners 10   # trailing comment"),
        (7, "make demo"),
        (16, "X=1 .venv/bin/cohortlens models"),
    ]
    assert as_run(got[2].text) == f"X=1 {shlex.quote(sys.executable)} -m cohortlens models"


def test_a_wrong_command_fails(tmp_path: Path) -> None:
    """What the runner does with a documented command that does not work."""
    wrong = [
        DocCommand("x.md", 1, ".venv/bin/cohortlens rollout init --no-such-option"),
        DocCommand("x.md", 2, ".venv/bin/cohortlens quarantine --db missing.duckdb"),
        DocCommand("x.md", 3, "make no-such-target"),
    ]
    for cmd in wrong:
        got = execute(cmd, tmp_path)
        assert got.status == "failed", cmd
        assert cmd.id in got.message
    assert execute(DocCommand("x.md", 4, ".venv/bin/cohortlens --help"), tmp_path).status == "ok"
