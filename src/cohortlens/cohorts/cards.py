"""Cohort cards: a model's cohorts, quality and drift as JSON-ready data (CLI and service)."""

from __future__ import annotations

from typing import Any


def model_cards(model: Any, model_id: int) -> dict[str, Any]:
    """The cohort cards and quality of a fitted :class:`CohortModel`, as JSON-ready data."""
    return {
        "model_id": model_id,
        "feature_run": model.feature_run_,
        "n_cohorts": model.n_cohorts_,
        "cohorts": [a.to_dict() for _, a in sorted(model.archetypes_.items())],
        "quality": model.quality_.to_dict(),
        "drift": model.drift_.to_dict() if model.drift_ is not None else None,
    }
