"""The store as long-running processes hold it: one unit of work at a time.

The service and the rollout controller run for days beside short commands (``ingest``,
``features``, ``discover``...). DuckDB locks its file for as long as a connection is open, so
those processes must not keep one: :class:`TurnTakingStore` opens the file for each unit of
work (one method call, or a :meth:`~TurnTakingStore.session` block) and closes it after, so
every other process gets its turn. Reads open the file read-only, which other readers may
share. PostgreSQL needs none of this: :class:`SerializedStore` keeps its one connection and
only serializes the threads of the process. Both offer the same two things: the
:class:`~cohortlens.store.base.Store` methods, and ``session()``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from cohortlens.errors import StoreError

#: Store methods that only read; a turn-taking store runs them on a read-only connection.
READ_METHODS = frozenset(
    {
        "schema_version",
        "count_events",
        "max_learner_events",
        "read_outcomes",
        "read_quarantine",
        "ingest_log",
        "read_features",
        "feature_runs",
        "active_model",
        "model",
        "models",
        "read_assignments",
        "routing_revision",
        "routing_history",
        "rollout_spec",
        "rollout_names",
        "rollout_status",
        "rollout_events",
        "rollout_counters",
        "read_exposures",
        "experiment_outcomes",
        "spool_applied",
        "max_ingest_id",
        "unassigned_learners",
        "learner_events",
    }
)
#: Methods that return a lazy stream; a turn-taking store reads it whole inside the session.
_STREAM_METHODS = frozenset({"read_events", "events_reader"})


class SessionStore(Protocol):
    """A store shared by the threads of a long-running process (see the module docstring)."""

    url: str

    def session(
        self, *, read_only: bool = False, wait_s: float | None = None
    ) -> Any:  # a context manager yielding a Store
        """One unit of work on the store; nested sessions reuse the outer one."""

    def change_token(self) -> tuple[int, ...] | None:
        """Changes whenever the store may have changed; None when that cannot be told."""

    def close(self) -> None:
        """Release whatever the process holds."""


class TurnTakingStore:
    """A DuckDB file opened only for the length of each unit of work.

    Every :class:`~cohortlens.store.base.Store` method is available and runs as its own unit
    of work; ``with store.session() as s:`` groups several calls into one. A session waits up
    to ``wait_s`` (the default of this object, or the session's own) for other processes to
    release the file, then raises :class:`~cohortlens.store.base.StoreBusyError`. Sessions of
    one process are serialized (DuckDB also refuses one process two different open modes).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        wait_s: float | None = None,
        on_wait: Callable[[str], None] | None = None,
        create: bool = True,
    ) -> None:
        """Open ``path`` once now (migrating it; creating it unless ``create=False``), then
        close it."""
        self.url = str(path)
        self._create = create
        self.wait_s = wait_s
        self._on_wait = on_wait
        self._lock = threading.RLock()
        self._open: Any = None
        self._open_read_only = False
        self._migrated = False
        with self.session():
            pass

    @contextmanager
    def session(self, *, read_only: bool = False, wait_s: float | None = None) -> Iterator[Any]:
        """Hold the file for one unit of work; the yielded object is a ``DuckDBStore``."""
        from cohortlens.store.duckdb import DuckDBStore

        with self._lock:
            if self._open is not None:
                if self._open_read_only and not read_only:
                    raise StoreError("a write inside a read-only store session (a bug)")
                yield self._open
                return
            store = DuckDBStore(
                self.url,
                read_only=read_only,
                create=self._create,
                wait_s=self.wait_s if wait_s is None else wait_s,
                on_wait=self._on_wait,
                migrate=not self._migrated,
            )
            self._migrated = self._migrated or not read_only
            self._open, self._open_read_only = store, read_only
            try:
                yield store
            finally:
                self._open = None
                store.close()

    def __getattr__(self, name: str) -> Any:
        from cohortlens.store.duckdb import DuckDBStore

        if name.startswith("_") or not callable(getattr(DuckDBStore, name, None)):
            raise AttributeError(name)
        if name == "ingest_session":
            return self._ingest_session
        read_only = name in READ_METHODS

        def call(*args: Any, **kwargs: Any) -> Any:
            with self.session(read_only=read_only or name in _STREAM_METHODS) as store:
                result = getattr(store, name)(*args, **kwargs)
                if name in _STREAM_METHODS:  # the file closes with the session: read it now
                    batches = list(result)
                    return iter(batches) if name == "read_events" else _reader(batches)
                return result

        call.__name__ = name
        return call

    @contextmanager
    def _ingest_session(self) -> Iterator[Any]:
        with self.session() as store, store.ingest_session() as ingest:
            yield ingest

    def change_token(self) -> tuple[int, ...] | None:
        """A value that changes whenever any process writes the file (its and its WAL's
        modification time and size): a poll that sees the same token has nothing to read."""
        token: list[int] = []
        for path in (Path(self.url), Path(self.url + ".wal")):
            try:
                st = path.stat()
            except FileNotFoundError:
                token += [0, 0]
            else:
                token += [st.st_mtime_ns, st.st_size]
        return tuple(token)

    @property
    def connection(self) -> Any:
        """Refused: a turn-taking store holds no connection between units of work."""
        raise StoreError(
            f"{self.url}: no connection is held between units of work; use store.session()"
        )

    def close(self) -> None:
        """Nothing is held between units of work."""

    def __enter__(self) -> TurnTakingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerializedStore:
    """One persistent store (PostgreSQL, or DuckDB ``:memory:``) shared by a process's threads."""

    def __init__(self, store: Any) -> None:
        self.inner = store
        self.url = str(store.url)
        self._lock = threading.RLock()

    @contextmanager
    def session(self, *, read_only: bool = False, wait_s: float | None = None) -> Iterator[Any]:
        """Hold the process's store lock for one unit of work."""
        del read_only, wait_s  # one connection serves both; no file lock to wait for
        with self._lock:
            yield self.inner

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(self.inner, name)
        if not callable(attr) or name in _STREAM_METHODS or name == "ingest_session":
            return attr  # streams use their own connection (PostgreSQL) or the caller's turn

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return call

    def change_token(self) -> None:
        """None: no cheap way to tell; every poll reads."""
        return None

    def close(self) -> None:
        """Close the store."""
        self.inner.close()

    def __enter__(self) -> SerializedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def as_session_store(store: Any) -> Any:
    """``store`` with a ``session()``: itself when it has one, else a :class:`SerializedStore`."""
    return store if hasattr(type(store), "session") else SerializedStore(store)


def _reader(batches: list[pa.RecordBatch]) -> pa.RecordBatchReader:
    from cohortlens.events.schema import EVENT_SCHEMA

    return pa.RecordBatchReader.from_batches(EVENT_SCHEMA, iter(batches))
