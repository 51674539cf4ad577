"""Model routing: which model version answers for a learner (pure, no I/O).

The rule itself lives in :mod:`cohortlens.rollout.routing`, shared with the rollout
controller and its simulation so that the two can never disagree: a learner goes to the
candidate iff it is an override learner or ``bucket_of(learner_id, salt) < round(weight *
10000)``. The same learner sees the same version at a given weight, the candidate's learners
at weight w are a subset of those at any higher weight, and a new release (new salt) draws a
new split.
"""

from __future__ import annotations

from cohortlens.rollout.routing import Role, candidate_threshold, route

__all__ = ["Role", "candidate_threshold", "route"]
