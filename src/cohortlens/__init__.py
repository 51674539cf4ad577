"""cohortlens: learner cohorts from learning-platform event logs.

Subpackages follow the data flow: ``events`` (read + validate) -> ``features`` (engines) ->
``cohorts`` (k-means, archetypes) -> ``store`` (DuckDB/PostgreSQL) -> ``serve`` (HTTP), with
``experiments`` (A/B analysis) and ``rollout`` (progressive delivery) beside them, and
``simulate`` (a learner simulator with ground truth) for validation and demos.
"""

from cohortlens._version import __version__
from cohortlens.cohorts import CohortModel
from cohortlens.events import EVENT_SCHEMA, OUTCOME_SCHEMA, ReadOptions, ingest, validate_batch
from cohortlens.store import DuckDBStore, open_store

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
