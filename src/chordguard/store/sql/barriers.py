"""Barriers in SQL: PostgreSQL (one statement per part, row locks only) or SQLite (embedded).

Tables: ``chordguard_durable_barrier`` (one row per chord), ``chordguard_durable_part``
(one row per finished part, primary key (barrier, index): a duplicate is a no-op insert),
``chordguard_durable_header`` (header task ids, kept apart so counting never rewrites them),
``chordguard_durable_lock`` (reaper leases).

On PostgreSQL a completion is one ``WITH ins AS (INSERT ... ON CONFLICT DO NOTHING) UPDATE``
statement in autocommit: the barrier row's lock orders racing completions, and a duplicate
part updates nothing. Each thread keeps one connection detached from the pool, so a
completion costs exactly one round trip (no pool pre-ping).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, select, text

from ..records import (
    CLAIM_GRACE,
    IN_FLIGHT,
    Barrier,
    BarrierState,
    Completion,
    Outcome,
    from_row,
    to_row,
)
from .engine import engine as engine_for
from .engine import run
from .schema import barrier_headers as HEADER
from .schema import barrier_parts as PART
from .schema import barriers as BARRIER
from .schema import create_tables

T = TypeVar("T")
COLUMNS = ", ".join(c.name for c in BARRIER.columns)

_CLAIMS = "(state = 'waiting' AND ((:failed = 1 AND policy = 'fail') OR remaining <= 1))"
_FAILS = "(state = 'waiting' AND :failed = 1 AND policy = 'fail')"
_COUNT = f"""UPDATE chordguard_durable_barrier SET
  remaining = remaining - 1,
  failed = failed + :failed,
  updated_at = :now,
  state = CASE WHEN state <> 'waiting' THEN state WHEN {_FAILS} THEN 'failed'
               WHEN remaining <= 1 THEN 'dispatching' ELSE 'waiting' END,
  claim_token = CASE WHEN {_CLAIMS} THEN :token ELSE claim_token END,
  claimed_at = CASE WHEN {_CLAIMS} THEN :now ELSE claimed_at END,
  reason = CASE WHEN {_FAILS} THEN :reason ELSE reason END,
  finished_at = CASE WHEN {_FAILS} THEN :now ELSE finished_at END,
  due_at = CASE WHEN state <> 'waiting' THEN due_at WHEN {_FAILS} THEN NULL
                WHEN remaining <= 1 THEN :now + :grace
                ELSE {{least}}(deadline_at, :now + stall_seconds) END
WHERE id = :id{{only_fresh}}
RETURNING {COLUMNS}"""
_INSERT = "INSERT INTO chordguard_durable_part (barrier_id, idx, failed, envelope) " \
          "VALUES (:id, :idx, :failed, :envelope) ON CONFLICT DO NOTHING"
_PG_COMPLETE = text(
    f"WITH ins AS ({_INSERT} RETURNING 1), upd AS ("
    + _COUNT.format(least="LEAST", only_fresh=" AND EXISTS (SELECT 1 FROM ins)")
    + f") SELECT (SELECT count(*) FROM ins) AS fresh, {COLUMNS} "
    "FROM (SELECT 1) AS one LEFT JOIN upd ON true")
_SQLITE_INSERT = text(_INSERT)
_SQLITE_COUNT = text(_COUNT.format(least="MIN", only_fresh=""))
_LOCK = text("INSERT INTO chordguard_durable_lock (name, holder, expires_at) "
             "VALUES (:name, :holder, :expires) ON CONFLICT (name) DO UPDATE "
             "SET holder = :holder, expires_at = :expires "
             "WHERE chordguard_durable_lock.holder = :holder "
             "OR chordguard_durable_lock.expires_at < :now RETURNING holder")


class SqlBarriers:
    """``BarrierStore`` on PostgreSQL or SQLite."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = engine_for(url)
        self.postgres = self.engine.dialect.name == "postgresql"
        create_tables(self.engine)

    def _run(self, fn: Callable[[Connection], T]) -> T:
        return run(self.engine, fn)

    def create(self, barrier: Barrier) -> None:
        row = _row(barrier)

        def insert(conn: Connection) -> None:
            conn.execute(BARRIER.insert(), row)
            conn.execute(HEADER.insert(), {"barrier_id": barrier.id,
                                           "ids": json.dumps(barrier.header_ids)})

        if self.postgres:  # both rows or none
            with self.engine.begin() as conn:
                insert(conn)
        else:
            self._run(insert)

    def complete(self, barrier_id: str, index: int, envelope: str, failed: bool, now: float,
                 token: str, app: str = "", grace: float = CLAIM_GRACE,
                 reason: str = "") -> Completion:
        params = {"id": barrier_id, "idx": index, "failed": int(failed), "envelope": envelope,
                  "now": now, "token": token, "grace": grace,
                  "reason": reason or f"header part {index} failed"}

        def count(conn: Connection) -> tuple[bool, Any]:
            if self.postgres:
                row = conn.execute(_PG_COMPLETE, params).mappings().one()
                return bool(row["fresh"]), row if row["id"] is not None else None
            if not conn.execute(_SQLITE_INSERT, params).rowcount:
                return False, None
            return True, conn.execute(_SQLITE_COUNT, params).mappings().first()

        fresh, row = self._run(count)
        if not fresh:
            return Completion(Outcome.DUPLICATE)
        if row is None:
            return Completion(Outcome.MISSING)
        barrier = _barrier(row)
        if barrier.claim_token != token:
            return Completion(Outcome.COUNTED if barrier.state is BarrierState.WAITING
                              else Outcome.LATE)
        if barrier.state is BarrierState.FAILED:
            return Completion(Outcome.FAIL, barrier)
        envelopes = None if barrier.by_reference else \
            self.envelopes(barrier_id, 0, barrier.total)
        return Completion(Outcome.DISPATCH, barrier, envelopes)

    def envelopes(self, barrier_id: str, start: int, stop: int) -> list[str | None]:
        if stop <= start:
            return []
        query = PART.select().with_only_columns(PART.c.idx, PART.c.envelope).where(
            PART.c.barrier_id == barrier_id, PART.c.idx >= start, PART.c.idx < stop)
        found = dict(self._run(lambda conn: conn.execute(query).all()))
        return [found.get(i) for i in range(start, stop)]

    def _move(self, barrier_id: str, sources: tuple[BarrierState, ...], target: BarrierState,
              now: float, token: str | None = None, stale_before: float | None = None,
              **values: Any) -> Barrier | None:
        where = [BARRIER.c.id == barrier_id, BARRIER.c.state.in_([s.value for s in sources])]
        if stale_before is not None:
            where.append(BARRIER.c.claimed_at < stale_before)
        values.update(state=target.value, updated_at=now)
        if token is not None:
            values.update(claim_token=token, claimed_at=now)
        if target in IN_FLIGHT:
            values.setdefault("due_at", now)
        else:
            values.update(due_at=None, finished_at=now)
        query = BARRIER.update().where(*where).values(**values).returning(*BARRIER.columns)
        row = self._run(lambda conn: conn.execute(query).mappings().first())
        return None if row is None else _barrier(row)

    def mark_dispatched(self, barrier_id: str, token: str, now: float) -> bool:
        query = BARRIER.update().where(
            BARRIER.c.id == barrier_id, BARRIER.c.claim_token == token,
            BARRIER.c.state == BarrierState.DISPATCHING.value,
        ).values(state=BarrierState.DISPATCHED.value, updated_at=now)
        return bool(self._run(lambda conn: conn.execute(query).rowcount))

    def finish(self, barrier_id: str, state: BarrierState, now: float, outcome: str | None = None,
               reason: str | None = None, app: str | None = None) -> bool:
        values = {k: v for k, v in (("outcome", outcome), ("reason", reason)) if v is not None}
        return self._move(barrier_id, (BarrierState.DISPATCHED, BarrierState.DISPATCHING), state,
                          now, **values) is not None

    def fail(self, barrier_id: str, reason: str, now: float, token: str) -> Barrier | None:
        return self._move(barrier_id, IN_FLIGHT, BarrierState.FAILED, now, token=token,
                          reason=reason)

    def reclaim(self, barrier_id: str, now: float, token: str,
                grace: float = CLAIM_GRACE) -> Barrier | None:
        return self._move(barrier_id, (BarrierState.DISPATCHING,), BarrierState.DISPATCHING,
                          now, token=token, stale_before=now - grace, due_at=now + grace)

    def get(self, barrier_id: str, with_header_ids: bool = False) -> Barrier | None:
        def read(conn: Connection) -> tuple[Any, Any]:
            row = conn.execute(BARRIER.select().where(BARRIER.c.id == barrier_id)).mappings() \
                .first()
            ids = conn.execute(HEADER.select().where(HEADER.c.barrier_id == barrier_id)) \
                .mappings().first() if row is not None and with_header_ids else None
            return row, ids

        row, ids = self._run(read)
        if row is None:
            return None
        barrier = _barrier(row)
        barrier.header_ids = json.loads(ids["ids"]) if ids else []
        return barrier

    def in_flight(self, app: str) -> list[Barrier]:
        query = BARRIER.select().where(BARRIER.c.app == app, BARRIER.c.due_at.is_not(None))
        return [_barrier(r) for r in self._run(lambda conn: conn.execute(query).mappings().all())]

    def due(self, app: str, now: float, limit: int = 500) -> list[Barrier]:
        query = BARRIER.select().where(BARRIER.c.app == app, BARRIER.c.due_at <= now) \
            .order_by(BARRIER.c.due_at).limit(limit)
        return [_barrier(r) for r in self._run(lambda conn: conn.execute(query).mappings().all())]

    def purge(self, app: str, before: float) -> int:
        ended = select(BARRIER.c.id).where(BARRIER.c.app == app,
                                           BARRIER.c.finished_at < before)

        def delete(conn: Connection) -> int:
            conn.execute(PART.delete().where(PART.c.barrier_id.in_(ended)))
            conn.execute(HEADER.delete().where(HEADER.c.barrier_id.in_(ended)))
            return conn.execute(BARRIER.delete().where(BARRIER.c.id.in_(ended))).rowcount

        if self.postgres:  # all three or none
            with self.engine.begin() as conn:
                return delete(conn)
        return self._run(delete)

    def lock(self, name: str, holder: str, ttl: float, now: float) -> bool:
        params = {"name": name, "holder": holder, "expires": now + ttl, "now": now}
        return self._run(lambda conn: conn.execute(_LOCK, params).first()) is not None


def _row(barrier: Barrier) -> dict[str, Any]:
    row = to_row(barrier)
    del row["header_ids"]  # kept apart, so counting never rewrites them
    return {**row, "due_at": barrier.due_at()}


def _barrier(row: Any) -> Barrier:
    return from_row(Barrier, row)
