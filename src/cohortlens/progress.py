"""How the long-running library functions tell a caller how far they are.

``simulate``, ``write_simulation``, ``ingest``, ``build_features`` and ``CohortModel.fit`` take
an optional ``on_progress`` callback. They call it with the name of the step under way, how
many units of it are done, how many there are in all (``None`` while unknown) and the unit
(``"rows"``, ``"weeks"``, ``"partitions"`` ...). Totals are exact counts known before the work
(Parquet footers, line counts, parameters), never guesses. A new step name starts a new step;
``done == total`` ends it. The CLI draws these as progress bars on a terminal (docs/CLI.md).
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """The progress callback: ``done`` of ``total`` ``unit``s of ``step`` are finished.

    It may be called from a worker thread; it should return quickly.
    """

    def __call__(self, step: str, done: int, total: int | None, unit: str) -> None: ...


def tell(on_progress: Progress | None, step: str, done: int, total: int | None, unit: str) -> None:
    """Call ``on_progress`` when there is one (the library's call sites stay one line)."""
    if on_progress is not None:
        on_progress(step, done, total, unit)


__all__ = ["Progress", "tell"]
