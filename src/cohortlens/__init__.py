"""cohortlens: learner cohorts from learning-platform event logs.

Subpackages follow the data flow: ``events`` (read + validate) -> ``features`` (engines) ->
``cohorts`` (k-means, archetypes) -> ``store`` (DuckDB/PostgreSQL) -> ``serve`` (HTTP), with
``experiments`` (A/B analysis) and ``rollout`` (progressive delivery) beside them, and
``simulate`` (a learner simulator with ground truth) for validation and demos.
"""

from typing import TYPE_CHECKING

from cohortlens._lazy import lazy_getattr
from cohortlens._version import __version__

if TYPE_CHECKING:
    from cohortlens.cohorts import CohortModel
    from cohortlens.events import EVENT_SCHEMA, OUTCOME_SCHEMA, ReadOptions, ingest, validate_batch
    from cohortlens.store import DuckDBStore, open_store

#: Public name -> module; imported on first use, so ``cohortlens`` (and every CLI command)
#: starts without loading scikit-learn, SciPy or numba until a stage needs them.
_LAZY = {
    "CohortModel": "cohorts",
    "EVENT_SCHEMA": "events",
    "OUTCOME_SCHEMA": "events",
    "ReadOptions": "events",
    "ingest": "events",
    "validate_batch": "events",
    "DuckDBStore": "store",
    "open_store": "store",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


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
