"""Readiness probes: is the candidate loaded and healthy everywhere before it gets traffic?

I/O at the edge; the gate itself (and the progress deadline) is in the pure controller.

* :class:`StoreArtifactProbe`: the candidate's artifact loads as a cohort model and it has
  stored assignments (with ``router: store``, the store the replicas load from);
* :class:`ReplicaProbe`: every replica the metrics provider reads reports the candidate
  loaded (``cohortlens_model_info{model_role="candidate",model_version=...} 1``: a replica
  publishes it only after it built the candidate's served state);
* :class:`AllProbes`: ready only when every probe says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from cohortlens.rollout.controller import Readiness


class ReadinessProbe(Protocol):
    """One way of telling whether the candidate is ready."""

    def check(self, model_id: int) -> Readiness:
        """Probe now (never raises: a failure is a not-ready answer naming its cause)."""


class StoreArtifactProbe:
    """The candidate's stored artifact loads and it has assignments."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def check(self, model_id: int) -> Readiness:
        """Load the artifact the way the service does; count its assignments."""
        from cohortlens.cohorts import CohortModel

        where = f"store {getattr(self.store, 'url', '')}".strip()
        try:
            artifact = self.store.model(model_id)
        except Exception as exc:
            return Readiness(False, f"{where}: {exc}", {"store": "missing"})
        try:
            CohortModel.from_dict(artifact)
        except Exception as exc:
            return Readiness(
                False,
                f"{where}: the artifact of model {model_id} does not load "
                f"({type(exc).__name__}: {exc})",
                {"store": "unloadable"},
            )
        try:
            n = int(self.store.read_assignments(model_id).num_rows)
        except Exception as exc:
            return Readiness(False, f"{where}: assignments unreadable: {exc}", {"store": "error"})
        if n == 0:
            return Readiness(
                False, f"{where}: model {model_id} has no stored assignments", {"store": "empty"}
            )
        return Readiness(True, f"artifact loads, {n} assignments", {"assignments": n})


class ReplicaProbe:
    """Every replica serves the candidate (through the metrics provider)."""

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics

    def check(self, model_id: int) -> Readiness:
        """Ask each replica; ready when all of them (at least one) serve the candidate."""
        del model_id  # the provider is built for this rollout's candidate
        try:
            answers = self.metrics.candidate_replicas()
        except Exception as exc:
            return Readiness(False, f"replicas: {type(exc).__name__}: {exc}", {})
        if not answers:
            return Readiness(False, "replicas: none found", {"replicas": {}})
        missing = [
            f"{r}: {a}" if isinstance(a, str) else f"{r}: candidate not loaded"
            for r, a in answers.items()
            if a is not True
        ]
        detail = {"replicas": {r: a for r, a in answers.items()}}
        if missing:
            return Readiness(
                False,
                f"{len(answers) - len(missing)} of {len(answers)} replicas serve the candidate; "
                + "; ".join(missing),
                detail,
            )
        return Readiness(True, f"all {len(answers)} replica(s) serve the candidate", detail)


class AllProbes:
    """Ready when every probe is ready (none: ready at once)."""

    def __init__(self, probes: Sequence[ReadinessProbe]) -> None:
        self.probes = tuple(probes)

    def check(self, model_id: int) -> Readiness:
        """Run every probe; the message lists what is missing, or what was checked."""
        answers = [p.check(model_id) for p in self.probes]
        detail: dict[str, Any] = {}
        for a in answers:
            detail |= a.detail
        waiting = [a.message for a in answers if not a.ready]
        if waiting:
            return Readiness(False, "; ".join(waiting), detail)
        return Readiness(True, "; ".join(a.message for a in answers) or "no probes", detail)


__all__ = ["AllProbes", "ReadinessProbe", "ReplicaProbe", "StoreArtifactProbe"]
