"""The service's on-disk spool: writes that wait for their turn on the store.

Two kinds of *segment* wait here until the store is free:

- ``events``: a batch posted to ``/v1/events``, one Arrow IPC file written to a temporary name,
  fsynced and renamed before the request is answered;
- ``exposures``: experiment exposure records. Each record is appended to this process's open
  *journal* (one ``write`` to the page cache, before the variant is handed out, so a killed
  process loses none); every flush seals the journal into a segment and opens a new one.

A segment is applied in one store transaction that also records its name in
``spool_applied``; the file is deleted after the commit. A segment the store records already
(the process died between commit and delete) is deleted without being applied again. So no
handed-out record is lost and none is applied twice (docs/DESIGN.md, "Sharing the embedded
store"). Journals left open by a process that is gone are sealed by the next one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa

log = logging.getLogger("cohortlens.serve")

#: Segment kinds and their file suffixes.
SUFFIXES = {"events": ".events.arrow", "exposures": ".exposures.jsonl"}
_OPEN = ".exposures.open"
_counter = itertools.count()


class SpoolFullError(RuntimeError):
    """The spool holds ``max_bytes`` already: the store has been busy for too long."""


@dataclass(frozen=True)
class Segment:
    """One spooled batch: its file and kind; its name is the ledger key."""

    path: Path
    kind: str

    @property
    def name(self) -> str:
        return self.path.name.removesuffix(SUFFIXES[self.kind])


class Spool:
    """A directory of segments (applied oldest first) and this process's exposure journal."""

    def __init__(self, directory: str | Path, *, max_bytes: int = 1 << 30) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("*.tmp"):  # a write that never finished: not acked
            stale.unlink(missing_ok=True)
        self._seal_orphans()
        self._lock = threading.Lock()
        self._journal_path = self._new_name(_OPEN)
        self._journal = os.open(self._journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._journal_records = 0

    # -- writing ----------------------------------------------------------------------------
    def _new_name(self, suffix: str) -> Path:
        return self.directory / f"{time.time_ns():020d}-{os.getpid()}-{next(_counter):06d}{suffix}"

    def size_bytes(self) -> int:
        """Bytes the pending segments and open journals take."""
        total = 0
        for path in self.directory.iterdir():
            if path.is_file():
                with contextlib.suppress(FileNotFoundError):  # applied meanwhile
                    total += path.stat().st_size
        return total

    def full(self) -> bool:
        """Whether the spool has reached ``max_bytes``."""
        return self.size_bytes() >= self.max_bytes

    def put_events(self, table: pa.Table, meta: dict[str, str]) -> Segment:
        """Write posted events as a durable segment (it survives a crash once this returns)."""
        if self.full():
            raise SpoolFullError(
                f"the spool {self.directory} holds {self.max_bytes:,} bytes already; "
                "the store has been held by another process for too long"
            )
        final = self._new_name(SUFFIXES["events"])
        tmp = final.with_suffix(".tmp")
        schema = table.schema.with_metadata(
            {f"cohortlens.spool.{k}".encode(): v.encode() for k, v in meta.items()}
        )
        with open(tmp, "wb") as fh:
            with pa.ipc.new_file(fh, schema) as writer:
                writer.write_table(table.replace_schema_metadata(schema.metadata))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.directory)
        return Segment(final, "events")

    def record_exposure(
        self, learner_id: str, experiment: str, variant: str, bucket: int, at: datetime
    ) -> None:
        """Append one exposure to the journal (in the page cache when this returns)."""
        line = json.dumps(
            [learner_id, experiment, variant, bucket, at.isoformat()], separators=(",", ":")
        ).encode()
        with self._lock:
            os.write(self._journal, line + b"\n")
            self._journal_records += 1

    def seal(self) -> Segment | None:
        """Close the journal as a segment (fsynced) and open a new one; None when empty."""
        with self._lock:
            if self._journal_records == 0:
                return None
            old_fd, old_path = self._journal, self._journal_path
            self._journal_path = self._new_name(_OPEN)
            self._journal = os.open(
                self._journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
            )
            self._journal_records = 0
        os.fsync(old_fd)
        os.close(old_fd)
        return self._sealed(old_path)

    def _sealed(self, journal: Path) -> Segment:
        final = journal.with_name(journal.name.removesuffix(_OPEN) + SUFFIXES["exposures"])
        os.replace(journal, final)
        _fsync_dir(self.directory)
        return Segment(final, "exposures")

    def _seal_orphans(self) -> None:
        """Seal journals whose process is gone (killed before it could)."""
        for journal in self.directory.glob(f"*{_OPEN}"):
            pid = int(journal.name.split("-")[1])
            if pid != os.getpid() and _alive(pid):
                continue
            if journal.stat().st_size == 0:
                journal.unlink(missing_ok=True)
            else:
                self._sealed(journal)

    def close(self) -> None:
        """Close the journal (sealed when it holds records, removed when empty)."""
        self.seal()
        with self._lock:
            os.close(self._journal)
            self._journal_path.unlink(missing_ok=True)

    # -- applying ---------------------------------------------------------------------------
    def pending(self) -> list[Segment]:
        """Sealed segments not applied yet, oldest first."""
        found = []
        for path in sorted(self.directory.iterdir()):
            for kind, suffix in SUFFIXES.items():
                if path.name.endswith(suffix):
                    found.append(Segment(path, kind))
        return found

    def read(self, segment: Segment) -> tuple[pa.Table, dict[str, str]] | None:
        """A segment's rows and metadata; None for an unreadable file, set aside in ``bad/``
        (kept for a human, never deleted)."""
        try:
            if segment.kind == "exposures":
                return _read_journal(segment.path), {}
            with pa.memory_map(str(segment.path)) as source:
                table = pa.ipc.open_file(source).read_all()
        except (OSError, ValueError, pa.ArrowInvalid) as exc:
            bad = self.directory / "bad"
            bad.mkdir(exist_ok=True)
            os.replace(segment.path, bad / segment.path.name)
            log.error("spool segment %s is unreadable (%s); moved to %s", segment.name, exc, bad)
            return None
        meta = {
            k.decode().removeprefix("cohortlens.spool."): v.decode()
            for k, v in (table.schema.metadata or {}).items()
            if k.startswith(b"cohortlens.spool.")
        }
        return table.replace_schema_metadata(None), meta

    def remove(self, segment: Segment) -> None:
        """Delete an applied segment."""
        segment.path.unlink(missing_ok=True)


def _read_journal(path: Path) -> pa.Table:
    """Exposure records of a sealed journal (``EXPOSURE_SCHEMA``)."""
    from cohortlens.experiments.assignment import EXPOSURE_SCHEMA, HASH_VERSION

    lines = path.read_bytes().splitlines()
    if lines and not lines[-1].endswith(b"]"):  # torn by a power loss, never acknowledged
        log.warning("%s: dropping a torn last record", path.name)
        lines = lines[:-1]
    rows = [json.loads(line) for line in lines if line]
    n = len(rows)
    cols = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
    return pa.table(
        {
            "learner_id": pa.array(cols[0], pa.string()),
            "experiment": pa.array(cols[1], pa.string()),
            "variant": pa.array(cols[2], pa.string()),
            "layer": pa.nulls(n, pa.string()),
            "bucket": pa.array(cols[3], pa.int32()),
            "hash_version": pa.array([HASH_VERSION] * n, pa.string()),
            "exposed_at": pa.array(
                [datetime.fromisoformat(t) for t in cols[4]], pa.timestamp("us", tz="UTC")
            ),
        },
        schema=EXPOSURE_SCHEMA,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
