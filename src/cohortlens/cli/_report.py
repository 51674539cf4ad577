"""What a command tells the HTML reports about itself: the command line that made them."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def command_line() -> str | None:
    """The running command as typed (``cohortlens discover --report r.html``), or ``None``
    when cohortlens was not started from a shell (e.g. a test calling the app in-process)."""
    if not sys.argv:
        return None
    prog = Path(sys.argv[0])
    started = prog.name == "cohortlens" or (
        prog.name == "__main__.py" and prog.parent.name == "cohortlens"
    )
    return shlex.join(["cohortlens", *sys.argv[1:]]) if started else None
