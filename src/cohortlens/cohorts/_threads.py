"""Thread policy of the k-means fits.

scikit-learn's Lloyd loop uses OpenMP over all cores. On small matrices (the k sweep's
samples, the bootstrap refits) the parallel gain is small and, on a busy 2-core machine,
spinning OpenMP threads can make a fit ten times slower than one thread. Fits on fewer than
``PARALLEL_MIN_ROWS`` rows therefore run single-threaded.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from threadpoolctl import threadpool_limits

#: Matrices with fewer rows than this are clustered on one thread.
PARALLEL_MIN_ROWS = 100_000


def kmeans_threads(n_rows: int) -> AbstractContextManager[Any]:
    """Context in which a k-means fit on ``n_rows`` rows should run."""
    if n_rows < PARALLEL_MIN_ROWS:
        return threadpool_limits(limits=1, user_api="openmp")
    return nullcontext()
