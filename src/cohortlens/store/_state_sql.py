"""Models, routing, rollout state and leases in SQL that DuckDB and PostgreSQL both accept.

A backend mixes :class:`SharedState` in and provides three hooks: ``_q`` (run one statement with
``?`` placeholders, return its rows), ``_transaction`` (a context manager around one
transaction) and ``_FOR_UPDATE`` (the row-lock clause: " FOR UPDATE" on PostgreSQL, empty on
DuckDB, whose single writer serializes transactions anyway). Routing changes lock the routing
row first, so two writers never interleave and statuses never deadlock.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from cohortlens.errors import InputError, StoreError
from cohortlens.store import _routing as rt
from cohortlens.store.base import ConflictError, RolloutEvent, Routing

_SET_ROUTING = ", ".join(f"{c.strip()} = ?" for c in rt.ROUTING_COLUMNS.split(","))


class SharedState:
    """The part of a store whose SQL is the same on every backend."""

    url: str
    _FOR_UPDATE: ClassVar[str] = ""

    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (``?`` placeholders); its rows, or [] when it returns none."""
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[None]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        raise NotImplementedError

    # -- cohort models ---------------------------------------------------------------------
    def save_model(
        self, artifact: dict[str, Any], *, feature_run_id: int | None, activate: bool
    ) -> int:
        """Store a cohort-model artifact ('candidate'); with ``activate`` it becomes the one
        active (stable) model, in the same transaction as the routing change."""
        text = json.dumps(artifact)
        now = datetime.now(UTC)
        with self._transaction():
            cur = self._locked_routing(now) if activate else None
            model_id = int(self._q("SELECT nextval('cohort_model_seq')")[0][0])
            self._q(
                "INSERT INTO cohort_models (model_id, created_at, feature_run_id, status, artifact) "
                "VALUES (?, ?, ?, 'candidate', ?)",
                [model_id, now, feature_run_id, text],
            )
            if cur is not None:
                plan = rt.plan_activate(
                    cur, model_id, now=now, actor="system", reason=f"model {model_id} saved active"
                )
                self._apply(plan)
        return model_id

    def active_model(self) -> tuple[int, dict[str, Any]] | None:
        """The active model's id and artifact, or None when no model was activated."""
        rows = self._q(
            "SELECT model_id, artifact FROM cohort_models WHERE status = 'active' "
            "ORDER BY model_id DESC LIMIT 1"
        )
        return (int(rows[0][0]), rt.loads(rows[0][1])) if rows else None

    def model(self, model_id: int) -> dict[str, Any]:
        """One model's artifact; StoreError when there is no such model."""
        rows = self._q("SELECT artifact FROM cohort_models WHERE model_id = ?", [int(model_id)])
        if not rows:
            raise StoreError(f"{self.url} has no cohort model {model_id}")
        artifact: dict[str, Any] = rt.loads(rows[0][0])
        return artifact

    def models(self) -> list[dict[str, Any]]:
        """Every stored model: id, time, feature run, status."""
        rows = self._q(
            "SELECT model_id, created_at, feature_run_id, status FROM cohort_models ORDER BY model_id"
        )
        return [
            {
                "model_id": int(r[0]),
                "created_at": rt.utc(r[1]),
                "feature_run_id": r[2],
                "status": r[3],
            }
            for r in rows
        ]

    def set_model_status(
        self, model_id: int, status: str, *, actor: str = "system", reason: str | None = None
    ) -> Routing:
        """Set a model's status ('active', 'candidate' or 'retired'); returns the routing.

        'active' retires the previous active model and makes this one the stable model;
        demoting the stable model leaves none; retiring the candidate clears it.
        """
        rt.status(status)
        rt.name(actor, "actor")
        rt.optional_text(reason, "reason")
        now = datetime.now(UTC)
        with self._transaction():
            cur = self._locked_routing(now)
            self._model_status(model_id)
            return self._apply(
                rt.plan_status(cur, int(model_id), status, now=now, actor=actor, reason=reason)
            )

    def _model_status(self, model_id: int) -> str:
        rows = self._q(
            f"SELECT status FROM cohort_models WHERE model_id = ?{self._FOR_UPDATE}",
            [int(model_id)],
        )
        if not rows:
            raise StoreError(f"{self.url} has no cohort model {model_id}")
        return str(rows[0][0])

    # -- routing ---------------------------------------------------------------------------
    def routing(self) -> Routing:
        """The current routing row, created on first use (fresh salt, release 0, revision 0)."""
        rows = self._q(f"SELECT {rt.ROUTING_COLUMNS} FROM model_routing WHERE id = 1")
        if rows:
            return rt.routing_from_row(rows[0])
        with self._transaction():
            return self._locked_routing(datetime.now(UTC))

    def routing_revision(self) -> int:
        """The routing revision: a one-row read that replicas poll."""
        rows = self._q("SELECT revision FROM model_routing WHERE id = 1")
        return int(rows[0][0]) if rows else 0

    def start_release(
        self,
        candidate_model_id: int,
        *,
        actor: str,
        reason: str | None = None,
        expected_revision: int | None = None,
        salt: str | None = None,
    ) -> Routing:
        """Make a stored model the candidate at weight 0, with a new salt and release id.

        The salt is drawn at random unless ``salt`` is given (16 lowercase hex characters,
        like a drawn one; InputError otherwise): simulations pass salts derived from their
        seed so that they are reproducible. StoreError when the model is unknown or is the
        stable model; a different previous candidate is retired.
        """
        self._args(actor, reason)
        release_salt = rt.new_salt() if salt is None else rt.check_salt(salt)
        now = datetime.now(UTC)
        with self._transaction():
            cur = self._locked_routing(now)
            rt.check_revision(cur.revision, expected_revision)
            current = self._model_status(candidate_model_id)
            plan = rt.plan_start_release(
                cur,
                int(candidate_model_id),
                current,
                salt=release_salt,
                now=now,
                actor=actor,
                reason=reason,
            )
            return self._apply(plan)

    def set_candidate_weight(
        self,
        weight: float,
        *,
        actor: str,
        reason: str | None = None,
        expected_revision: int | None = None,
    ) -> Routing:
        """Route fraction ``weight`` in [0, 1] of learners to the candidate.

        InputError for a weight outside [0, 1] or when there is no candidate; ConflictError
        when ``expected_revision`` is given and the routing moved on.
        """
        w = rt.weight(weight)
        self._args(actor, reason)
        now = datetime.now(UTC)
        with self._transaction():
            cur = self._locked_routing(now)
            rt.check_revision(cur.revision, expected_revision)
            return self._apply(rt.plan_weight(cur, w, now=now, actor=actor, reason=reason))

    def promote_candidate(
        self, *, actor: str, reason: str | None = None, expected_revision: int | None = None
    ) -> Routing:
        """The candidate becomes the active (stable) model, the old one is retired; salt kept."""
        self._args(actor, reason)
        now = datetime.now(UTC)
        with self._transaction():
            cur = self._locked_routing(now)
            rt.check_revision(cur.revision, expected_revision)
            return self._apply(rt.plan_promote(cur, now=now, actor=actor, reason=reason))

    def clear_candidate(
        self,
        *,
        actor: str,
        reason: str | None = None,
        retire: bool = True,
        expected_revision: int | None = None,
    ) -> Routing:
        """Weight 0 and no candidate (retired when ``retire``); a no-op without a candidate."""
        self._args(actor, reason)
        now = datetime.now(UTC)
        with self._transaction():
            cur = self._locked_routing(now)
            rt.check_revision(cur.revision, expected_revision)
            plan = rt.plan_clear(cur, retire=retire, now=now, actor=actor, reason=reason)
            return self._apply(plan)

    def set_overrides(
        self,
        learner_ids: list[str] | tuple[str, ...],
        *,
        actor: str,
        reason: str | None = None,
        expected_revision: int | None = None,
    ) -> Routing:
        """Route exactly ``learner_ids`` to the candidate whatever the weight (an empty list
        removes the override routes). InputError without a candidate; ConflictError when
        ``expected_revision`` is stale. A release start, promotion or clear removes them."""
        ids = rt.overrides(learner_ids)
        self._args(actor, reason)
        now = datetime.now(UTC)
        with self._transaction():
            cur = self._locked_routing(now)
            rt.check_revision(cur.revision, expected_revision)
            return self._apply(rt.plan_overrides(cur, ids, now=now, actor=actor, reason=reason))

    def routing_history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Routing changes (revision, at, actor, reason, routing), newest last."""
        sql = "SELECT revision, changed_at, actor, reason, routing FROM routing_log ORDER BY revision DESC"
        if limit is not None:
            if limit < 0:
                raise InputError(f"limit: expected a number >= 0, got {limit}")
            sql += f" LIMIT {int(limit)}"
        return [rt.log_entry(r) for r in reversed(self._q(sql))]

    @staticmethod
    def _args(actor: str, reason: str | None) -> None:
        rt.name(actor, "actor")
        rt.optional_text(reason, "reason")

    def _locked_routing(self, now: datetime) -> Routing:
        """Inside a transaction: the routing row, created if missing, locked until commit."""
        init = rt.initial_routing(None, now)
        self._q(
            f"INSERT INTO model_routing (id, {rt.ROUTING_COLUMNS}) VALUES "
            "(1, (SELECT max(model_id) FROM cohort_models WHERE status = 'active'), "
            "?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            rt.routing_values(init)[1:],
        )
        rows = self._q(
            f"SELECT {rt.ROUTING_COLUMNS} FROM model_routing WHERE id = 1{self._FOR_UPDATE}"
        )
        return rt.routing_from_row(rows[0])

    def _apply(self, plan: rt.Plan) -> Routing:
        """Write a plan: statuses, then the routing row and its log entry (revision + 1)."""
        if plan.activate is not None:
            self._q(
                "UPDATE cohort_models SET status = 'retired' "
                "WHERE status = 'active' AND model_id <> ?",
                [plan.activate],
            )
        for model_id, status in plan.statuses:
            self._q("UPDATE cohort_models SET status = ? WHERE model_id = ?", [status, model_id])
        if plan.changed:
            new = plan.routing
            self._q(f"UPDATE model_routing SET {_SET_ROUTING} WHERE id = 1", rt.routing_values(new))
            self._q(
                "INSERT INTO routing_log (revision, changed_at, actor, reason, routing) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    new.revision,
                    new.updated_at,
                    new.updated_by,
                    new.reason,
                    rt.dumps(new.to_dict(), "routing"),
                ],
            )
        return plan.routing

    # -- rollout state ---------------------------------------------------------------------
    def put_rollout_spec(self, name: str, spec: dict[str, Any]) -> None:
        """Create or replace a rollout's desired state (``spec_hash``: SHA-256 of its JSON)."""
        rt.name(name, "name")
        if not isinstance(spec, dict):
            raise InputError(f"spec: expected a JSON object, got {type(spec).__name__}")
        text = rt.dumps(spec, "spec")
        now = datetime.now(UTC)
        self._q(
            "INSERT INTO rollouts (name, spec, spec_hash, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, "
            "spec_hash = excluded.spec_hash, updated_at = excluded.updated_at",
            [name, text, rt.spec_hash(text), now, now],
        )

    def rollout_spec(self, name: str) -> dict[str, Any] | None:
        """A rollout's desired state, or None when it was never put."""
        rows = self._q("SELECT spec FROM rollouts WHERE name = ?", [name])
        return rt.loads(rows[0][0]) if rows else None

    def rollout_names(self) -> list[str]:
        """Every rollout with a spec, sorted by name."""
        return sorted(str(r[0]) for r in self._q("SELECT name FROM rollouts"))

    def rollout_status(self, name: str) -> tuple[int, dict[str, Any]] | None:
        """(revision, status) of a rollout, or None before its first :meth:`record_rollout`."""
        rows = self._q("SELECT revision, status FROM rollout_status WHERE name = ?", [name])
        return (int(rows[0][0]), rt.loads(rows[0][1])) if rows else None

    def record_rollout(
        self,
        name: str,
        status: dict[str, Any],
        events: list[tuple[str, str, dict[str, Any]]],
        *,
        expected_revision: int | None,
        at: datetime,
        counters: tuple[str, ...] | list[str] = (),
    ) -> int:
        """Write the observed status (revision + 1), append ``events`` and add 1 to each of
        the rollout's lifetime ``counters``, in ONE transaction.

        ``expected_revision`` is the revision the caller read (None: the rollout has no status
        yet); when it does not match, ConflictError and nothing is written.
        """
        rt.name(name, "name")
        if isinstance(counters, str):
            raise InputError(f"counters: expected a list of counter names, got {counters!r}")
        for i, counter in enumerate(counters):
            rt.name(counter, f"counters[{i}]")
        at = rt.aware(at, "at")
        status_json = rt.dumps(status, "status")
        encoded = []
        for i, event in enumerate(events):
            if not isinstance(event, tuple | list) or len(event) != 3:
                raise InputError(f"events[{i}]: expected (kind, reason, detail), got {event!r}")
            kind, reason, detail = event
            rt.name(kind, f"events[{i}].kind")
            if not isinstance(reason, str):
                raise InputError(f"events[{i}].reason: expected a string, got {reason!r}")
            if not isinstance(detail, dict):
                raise InputError(f"events[{i}].detail: expected a JSON object, got {detail!r}")
            encoded.append((kind, reason, rt.dumps(detail, f"events[{i}].detail")))
        with self._transaction():
            if expected_revision is None:
                rows = self._q(
                    "INSERT INTO rollout_status (name, revision, status, updated_at) "
                    "VALUES (?, 1, ?, ?) ON CONFLICT (name) DO NOTHING RETURNING revision",
                    [name, status_json, at],
                )
            else:
                rows = self._q(
                    "UPDATE rollout_status SET revision = revision + 1, status = ?, updated_at = ? "
                    "WHERE name = ? AND revision = ? RETURNING revision",
                    [status_json, at, name, int(expected_revision)],
                )
            if not rows:
                stored = self._q("SELECT revision FROM rollout_status WHERE name = ?", [name])
                found = "no status" if not stored else f"revision {stored[0][0]}"
                wanted = (
                    "no status" if expected_revision is None else f"revision {expected_revision}"
                )
                raise ConflictError(
                    f"rollout {name!r} has {found}, not the expected {wanted}: another writer "
                    "recorded it; reload and retry"
                )
            revision = int(rows[0][0])
            last = self._q(
                "SELECT coalesce(max(seq), 0) FROM rollout_events WHERE name = ?", [name]
            )
            seq = int(last[0][0])
            for kind, reason, detail_json in encoded:
                seq += 1
                self._q(
                    "INSERT INTO rollout_events (name, seq, recorded_at, kind, reason, detail) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [name, seq, at, kind, reason, detail_json],
                )
            for counter in counters:
                self._q(
                    "INSERT INTO rollout_counters (name, counter, value) VALUES (?, ?, 1) "
                    "ON CONFLICT (name, counter) DO UPDATE "
                    "SET value = rollout_counters.value + 1",
                    [name, counter],
                )
        return revision

    def rollout_counters(self) -> dict[str, dict[str, int]]:
        """Lifetime counters of every rollout: ``{name: {counter: value}}``."""
        out: dict[str, dict[str, int]] = {}
        for name, counter, value in self._q(
            "SELECT name, counter, value FROM rollout_counters ORDER BY name, counter"
        ):
            out.setdefault(str(name), {})[str(counter)] = int(value)
        return out

    def rollout_events(self, name: str, since_seq: int = 0) -> list[RolloutEvent]:
        """Events of rollout ``name`` with ``seq > since_seq``, in seq order."""
        rows = self._q(
            "SELECT name, seq, recorded_at, kind, reason, detail FROM rollout_events "
            "WHERE name = ? AND seq > ? ORDER BY seq",
            [name, int(since_seq)],
        )
        return [
            RolloutEvent(
                name=str(r[0]),
                seq=int(r[1]),
                at=rt.utc(r[2]),
                kind=str(r[3]),
                reason=str(r[4]),
                detail=rt.loads(r[5]),
            )
            for r in rows
        ]

    # -- leases ----------------------------------------------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl_s: float, now: datetime) -> bool:
        """Take lease ``name`` for ``holder`` until ``now + ttl_s``; True on success.

        Succeeds when the lease is free, expired (``expires_at <= now``) or already held by
        ``holder`` (then renewed). One atomic upsert: of two racing holders exactly one wins.
        """
        rt.name(name, "name")
        rt.name(holder, "holder")
        now = rt.aware(now, "now")
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not ttl_s > 0:
            raise InputError(f"ttl_s: expected a positive number of seconds, got {ttl_s!r}")
        try:
            expires = now + timedelta(seconds=float(ttl_s))
        except OverflowError:
            raise InputError(f"ttl_s: {ttl_s!r} seconds is too long") from None
        try:
            with self._transaction():
                rows = self._q(
                    "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                    "expires_at = excluded.expires_at "
                    "WHERE leases.holder = excluded.holder OR leases.expires_at <= ? "
                    "RETURNING holder",
                    [name, holder, expires, now],
                )
        except ConflictError:
            return False  # a concurrent writer changed the lease first: it holds it
        return bool(rows)

    def release_lease(self, name: str, holder: str) -> None:
        """Give up lease ``name``; nothing happens unless ``holder`` holds it."""
        self._q("DELETE FROM leases WHERE name = ? AND holder = ?", [name, holder])


def quarantine_query(
    columns: Sequence[str],
    limit: int | None,
    reason: str | None,
    source: str | None,
    placeholder: str = "?",
) -> tuple[str, list[Any]]:
    """The quarantine rows read by ``read_quarantine``, newest ingest first, plus a ``_total``
    column counting every row that matches the filters (in the same snapshot).

    ``source`` matches a stored source equal to it or ending in ``/`` + it (a file name).
    """
    where, params = [], []
    if reason is not None:
        where.append(f"reason = {placeholder}")
        params.append(reason)
    if source is not None:
        where.append(
            f"(source = {placeholder} OR "
            f"right(source, length({placeholder}) + 1) = '/' || {placeholder})"
        )
        params += [source, source, source]
    cond = f" WHERE {' AND '.join(where)}" if where else ""
    lim = f" LIMIT {max(int(limit), 1)}" if limit is not None else ""  # 1: the total survives
    cols = ", ".join(columns)
    query = (
        f"WITH matching AS (SELECT ingest_id, {cols} FROM quarantine{cond}) "
        f"SELECT {cols}, (SELECT count(*) FROM matching) AS _total FROM matching "
        f"ORDER BY ingest_id DESC, source, line{lim}"
    )
    return query, params
