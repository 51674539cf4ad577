"""Cohort discovery on the second world (tests/simulate/second_world.py): latent-type recovery.

The threshold (``SECOND_WORLD_MIN_ARI``) was fixed before discovery was first run there.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.xfail(
    strict=True,
    reason="missed: ARI 0.34 at 30,000 learners, 0.32 here (docs/VALIDITY.md, Cohorts); "
    "threshold kept as fixed",
)
def test_cohorts_recover_the_second_worlds_types() -> None:
    from benchmarks.validity_cohorts import SECOND_WORLD_MIN_ARI, second_world

    res = second_world(3000, 11)
    assert res["ari_vs_types"] >= SECOND_WORLD_MIN_ARI
