"""schemathesis against the live server's OpenAPI document: no 5xx, no schema violation.

Bounded: a fixed seed, at most 15 examples per operation and 90 s in all; every check
schemathesis has (status codes, content types, response schemas, negative and positive
data, auth, undeclared methods).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.serve._server import ADMIN_TOKEN, running_server
from tests.serve.conftest import Built, fresh_copy


def test_schemathesis_finds_nothing(built: Built, tmp_path: Path) -> None:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("schemathesis is not installed (the dev extra)")
    db = fresh_copy(built, tmp_path)
    (tmp_path / "e.yaml").write_text("experiments:\n  - {name: exp, variants: {a: 1, b: 1}}\n")
    with running_server(str(db), tmp_path, "--experiments", str(tmp_path / "e.yaml")) as srv:
        r = subprocess.run(
            [
                exe,
                "run",
                f"{srv.url}/openapi.json",
                "--checks",
                "all",
                "-H",
                f"Authorization: Bearer {ADMIN_TOKEN}",
                "--max-examples",
                "15",
                "--max-time",
                "90",
                "--workers",
                "1",
                "--seed",
                "20261128",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
            cwd=tmp_path,
        )
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "Traceback" not in srv.log()
