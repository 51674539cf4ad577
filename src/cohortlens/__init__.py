"""cohortlens: learner cohorts from learning-platform event logs.

Subpackages follow the data flow: ``events`` (read + validate) -> ``features`` (engines) ->
``cohorts`` (k-means, archetypes) -> ``store`` (DuckDB/PostgreSQL) -> ``serve`` (HTTP), with
``experiments`` (A/B analysis) and ``rollout`` (progressive delivery) beside them, and
``simulate`` (a learner simulator with ground truth) for validation and demos.
"""

from typing import TYPE_CHECKING, Any

from cohortlens._version import __version__

if TYPE_CHECKING:
    from cohortlens.cohorts import CohortModel
    from cohortlens.events import EVENT_SCHEMA, OUTCOME_SCHEMA, ReadOptions, ingest, validate_batch
    from cohortlens.store import DuckDBStore, open_store

#: Public name -> module; imported on first use, so ``cohortlens`` (and every CLI command)
#: starts without loading scikit-learn, SciPy or numba until a stage needs them.
_LAZY = {
    "CohortModel": "cohortlens.cohorts",
    "EVENT_SCHEMA": "cohortlens.events",
    "OUTCOME_SCHEMA": "cohortlens.events",
    "ReadOptions": "cohortlens.events",
    "ingest": "cohortlens.events",
    "validate_batch": "cohortlens.events",
    "DuckDBStore": "cohortlens.store",
    "open_store": "cohortlens.store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cohortlens' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "EVENT_SCHEMA",
    "OUTCOME_SCHEMA",
    "CohortModel",
    "DuckDBStore",
    "ReadOptions",
    "__version__",
    "ingest",
    "open_store",
    "validate_batch",
]
