"""The ``cohortlens`` command line: a thin layer over the library.

Before anything imports NumPy, the CLI turns off NumPy's transparent-hugepage advice (NumPy reads
``NUMPY_MADVISE_HUGEPAGE`` once, at import). On VMs whose kernel defragments synchronously for
such advice (``/sys/kernel/mm/transparent_hugepage/defrag`` = ``madvise``), faulting in the
feature pipeline's large fresh arrays stalled on compaction: the same 50M-event run took
1.9–3.5 s with it and 2.2–2.5 s without (docs/FEATURES.md). A value set by the user wins.
"""

import os

os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
