"""Shared fixtures and the location of the shared datasets."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]
#: Real public datasets beside the project (absent on a user's machine: tests skip).
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, skipping the test with a reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared datasets are not on this machine)")
    return path


# Hypothesis: no wall-clock deadline. On a loaded machine a first call (imports, numba
# compilation, a cold cache) can take far longer than Hypothesis's default 200 ms without
# anything being wrong; speed is measured in benchmarks/, not asserted in tests.
settings.register_profile("cohortlens", deadline=None)
settings.load_profile("cohortlens")
