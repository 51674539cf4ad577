"""Run the real ``cohortlens`` command in a child process, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
    columns: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m cohortlens ARGS`` with this interpreter; output captured as text.

    The child gets this environment without ``COHORTLENS_*`` variables (a developer's own
    ``$COHORTLENS_DB`` must not leak into a test), plus ``env``; ``columns`` widens rich's
    tables so that a row stays on one line.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COHORTLENS_")}
    if columns is not None:
        environ["COLUMNS"] = str(columns)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cohortlens", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        cwd=cwd,
        env=environ,
    )
