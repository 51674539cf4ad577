"""Exception hierarchy: user-facing errors carry a message meant to be printed as is."""

from __future__ import annotations


class CohortlensError(Exception):
    """Base class of every error cohortlens raises on purpose."""

    exit_code = 1


class InputError(CohortlensError, ValueError):
    """A whole input (file, request, argument) is unusable; the CLI exits with code 2."""

    exit_code = 2


class MissingColumnsError(InputError):
    """A source lacks columns the canonical schema requires."""

    def __init__(
        self, source: str, missing: list[str], available: list[str], *, hint: str | None = None
    ) -> None:
        self.source = source
        self.missing = missing
        self.available = available
        super().__init__(
            f"{source}: missing required column(s) {', '.join(missing)}; "
            f"found {', '.join(available) or 'none'}. "
            + (
                hint
                or "Map foreign names with --map CANONICAL=SOURCE (e.g. --map learner_id=user_id)."
            )
        )


class UnreadableSourceError(InputError):
    """A source cannot be opened or decoded at all."""

    def __init__(self, source: str, why: str) -> None:
        self.source = source
        super().__init__(f"{source}: cannot read: {why}")


class StoreError(CohortlensError):
    """The store is unreachable, or its schema is newer than this release understands."""

    exit_code = 3


class SpillSpaceError(StoreError):
    """Spill files could not be written (a full or unwritable temporary directory); exit 3.

    Raised before anything is committed: the store is left as it was.
    """

    def __init__(self, path: str, why: str) -> None:
        self.path = path
        super().__init__(
            f"cannot write spill files in {path}: {why}; nothing was saved. Free space there, "
            "or point --temp-dir at a larger disk"
        )
