"""Model routing: which model version answers for a learner (pure, no I/O).

A learner goes to the candidate iff ``bucket_of(learner_id, salt) < round(weight * 10000)``
(:mod:`cohortlens.experiments.assignment`): the same learner sees the same version at a
given weight, the candidate's learners at weight w are a subset of those at any higher
weight, and a new release (new salt) draws a new split.
"""

from __future__ import annotations

from enum import StrEnum

from cohortlens.experiments.assignment import N_BUCKETS


class Role(StrEnum):
    """The part a model plays in routing (the ``model_role`` label of every metric)."""

    STABLE = "stable"
    CANDIDATE = "candidate"
    NONE = "none"


def candidate_threshold(weight: float) -> int:
    """Buckets below this go to the candidate: ``round(weight * 10000)``, in [0, 10000]."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"candidate weight == {weight}, must be in [0, 1]")
    return round(weight * N_BUCKETS)


def route(bucket: int, threshold: int, has_candidate: bool) -> Role:
    """The role a learner with ``bucket`` is routed to."""
    return Role.CANDIDATE if has_candidate and bucket < threshold else Role.STABLE
