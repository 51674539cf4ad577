"""Fixtures of the feature tests."""

from __future__ import annotations

import pytest
from tests.features.featsynth import Synth, make_events


@pytest.fixture(scope="session")
def synth() -> Synth:
    """A 200-learner ground-truth dataset shared by the tests."""
    return make_events()
