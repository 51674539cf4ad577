"""Benchmarks: each module measures cohortlens beside a peer implementation in the same run.

NumPy's transparent-hugepage advice is off here as in the ``cohortlens`` CLI (see
``cohortlens.cli``), so library calls measured in process run as the CLI runs them.
"""

import os

os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
