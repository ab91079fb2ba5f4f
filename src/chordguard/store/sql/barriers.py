"""The SQL store's barriers: PostgreSQL (one statement per part, row locks only) or SQLite.

Tables (``schema``): ``chordguard_durable_barrier`` (one row per chord, with ``due_at``: when
the reaper must look at it, NULL once final), ``chordguard_durable_part`` (primary key
(barrier, index): a duplicate is a no-op insert), ``chordguard_durable_header``.

On PostgreSQL a completion is one ``WITH ins AS (INSERT ... ON CONFLICT DO NOTHING) UPDATE``
statement in autocommit on the thread's own connection (``engine.run``): the barrier row's
lock orders racing completions, a duplicate part updates nothing, and it costs exactly one
round trip; so is a new barrier with its header ids (``WITH created AS (INSERT ...) INSERT``).
On SQLite the inserts and the update share one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, literal, select, text

from ...errors import BarrierExists
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
from .schema import barrier_headers, barrier_parts, barriers

T = TypeVar("T")
COLUMNS = ", ".join(c.name for c in barriers.columns)

_CLAIMS = "(state = 'waiting' AND ((:failed = 1 AND policy = 'fail') OR remaining <= 1))"
_FAILS = "(state = 'waiting' AND :failed = 1 AND policy = 'fail')"
_COUNT = f"""UPDATE {barriers.name} SET
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
                WHEN remaining <= 1 THEN {{least}}(deadline_at, :now + :grace)
                ELSE {{least}}(deadline_at, :now + stall_seconds) END
WHERE id = :id{{only_fresh}}
RETURNING {COLUMNS}"""
_INSERT = f"INSERT INTO {barrier_parts.name} (barrier_id, idx, failed, envelope) " \
          "VALUES (:id, :idx, :failed, :envelope) ON CONFLICT DO NOTHING"
# the claiming completion also reads every part (its own from the parameters: the insert is
# not visible within its statement); a part committed after the statement's snapshot is missed,
# and then the envelopes are read once more (``_claimed_envelopes``)
_PG_ENVELOPES = (
    "CASE WHEN upd.claim_token = :token AND upd.state = 'dispatching' AND upd.by_reference = 0 "
    "THEN (SELECT json_agg(json_build_array(p.idx, p.envelope)) FROM ("
    f"SELECT idx, envelope FROM {barrier_parts.name} WHERE barrier_id = :id AND idx <> :idx "
    "UNION ALL SELECT CAST(:idx AS integer), CAST(:envelope AS text)) AS p) END AS envelopes")
_PG_COMPLETE = text(
    f"WITH ins AS ({_INSERT} RETURNING 1), upd AS ("
    + _COUNT.format(least="LEAST", only_fresh=" AND EXISTS (SELECT 1 FROM ins)")
    + f") SELECT (SELECT count(*) FROM ins) AS fresh, {COLUMNS}, {_PG_ENVELOPES} "
    "FROM (SELECT 1) AS one LEFT JOIN upd ON true")
_SQLITE_INSERT = text(_INSERT)
_SQLITE_COUNT = text(_COUNT.format(least="MIN", only_fresh=""))


class SqlBarriers:
    """The ``Barriers`` half of ``SqlStore`` (which supplies ``engine``, ``postgres``,
    ``_run`` and ``_transaction``)."""

    engine: Engine
    postgres: bool
    _run: Callable[..., Any]
    _transaction: Callable[..., Any]
    _insert: Callable[..., Any]

    def create_barrier(self, barrier: Barrier) -> None:
        row = to_row(barrier)
        header = {"barrier_id": barrier.id, "ids": row.pop("header_ids")}
        row["due_at"] = barrier.due_at()
        if self.postgres:  # both rows in one statement, one round trip
            created = self._insert(barriers).values(row).on_conflict_do_nothing() \
                .returning(barriers.c.id).cte("created")
            query = barrier_headers.insert().from_select(
                ["barrier_id", "ids"],
                select(created.c.id, literal(header["ids"], barrier_headers.c.ids.type)),
            ).returning(barrier_headers.c.barrier_id)
            if self._run(lambda conn: conn.execute(query).first()) is None \
                    and not self._created_by(barrier):
                raise BarrierExists(barrier.id)
            return

        def insert(conn: Connection) -> None:
            if not conn.execute(self._insert(barriers).on_conflict_do_nothing()
                                .returning(barriers.c.id), row).first():
                raise BarrierExists(barrier.id)  # rolls the transaction back
            conn.execute(barrier_headers.insert(), header)

        self._transaction(insert)  # both rows or none

    def _created_by(self, barrier: Barrier) -> bool:
        """Whether the barrier already there is this very one (a retried statement whose
        first attempt committed and lost its reply)."""
        found = self.barrier(barrier.id)
        return found is not None and (found.callback_id, found.created_at) == \
            (barrier.callback_id, barrier.created_at)

    def complete_part(self, barrier_id: str, index: int, envelope: str, failed: bool,
                      now: float, token: str, app: str = "", grace: float = CLAIM_GRACE,
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
        barrier = from_row(Barrier, row)
        if barrier.claim_token != token:
            return Completion(Outcome.COUNTED if barrier.state is BarrierState.WAITING
                              else Outcome.LATE)
        if barrier.state is BarrierState.FAILED:
            return Completion(Outcome.FAIL, barrier)
        envelopes = None if barrier.by_reference else \
            self._claimed_envelopes(barrier, row.get("envelopes"))
        return Completion(Outcome.DISPATCH, barrier, envelopes)

    def _claimed_envelopes(self, barrier: Barrier, read: list | None) -> list[str | None]:
        """Every part's envelope: as the claiming statement read them, when it saw them all."""
        found = {int(idx): envelope for idx, envelope in read or []}
        if len(found) == barrier.total and all(i in found for i in range(barrier.total)):
            return [found[i] for i in range(barrier.total)]
        return self.envelopes(barrier.id, 0, barrier.total)

    def grow_barrier(self, barrier_id: str) -> int | None:
        query = barriers.update().where(
            barriers.c.id == barrier_id, barriers.c.state == BarrierState.WAITING.value,
        ).values(total=barriers.c.total + 1, remaining=barriers.c.remaining + 1
                 ).returning(barriers.c.total)
        total = self._run(lambda conn: conn.execute(query).scalar())
        return None if total is None else int(total) - 1

    def envelopes(self, barrier_id: str, start: int, stop: int) -> list[str | None]:
        if stop <= start:
            return []
        part = barrier_parts.c
        query = select(part.idx, part.envelope).where(
            part.barrier_id == barrier_id, part.idx >= start, part.idx < stop)
        found = dict(self._run(lambda conn: conn.execute(query).all()))
        return [found.get(i) for i in range(start, stop)]

    def move_barrier(self, barrier_id: str, sources: tuple[BarrierState, ...],
                     target: BarrierState, now: float, token: str | None = None,
                     reason: str | None = None, outcome: str | None = None,
                     due: float | None = None, stale_before: float | None = None,
                     app: str | None = None) -> Barrier | None:
        where = [barriers.c.id == barrier_id, barriers.c.state.in_([s.value for s in sources])]
        if stale_before is not None:
            where.append(barriers.c.claimed_at < stale_before)
        values: dict[str, Any] = {k: v for k, v in (("reason", reason), ("outcome", outcome))
                                  if v is not None}
        values.update(state=target.value, updated_at=now)
        if token is not None:
            values.update(claim_token=token, claimed_at=now)
        if target in IN_FLIGHT:
            values["due_at"] = now if due is None else due
        else:
            values.update(due_at=None, finished_at=now)
        query = barriers.update().where(*where).values(**values).returning(*barriers.columns)
        row = self._run(lambda conn: conn.execute(query).mappings().first())
        return None if row is None else from_row(Barrier, row)

    def mark_dispatched(self, barrier_id: str, token: str, now: float) -> bool:
        query = barriers.update().where(
            barriers.c.id == barrier_id, barriers.c.claim_token == token,
            barriers.c.state == BarrierState.DISPATCHING.value,
        ).values(state=BarrierState.DISPATCHED.value, updated_at=now, due_at=barriers.c.deadline_at)
        return bool(self._run(lambda conn: conn.execute(query).rowcount))

    def barrier(self, barrier_id: str, with_header_ids: bool = False) -> Barrier | None:
        def read(conn: Connection) -> tuple[Any, Any]:
            row = conn.execute(barriers.select().where(barriers.c.id == barrier_id)) \
                .mappings().first()
            ids = conn.execute(select(barrier_headers.c.ids)
                               .where(barrier_headers.c.barrier_id == barrier_id)).scalar() \
                if row is not None and with_header_ids else None
            return row, ids

        row, ids = self._run(read)
        if row is None:
            return None
        return from_row(Barrier, row, **({"header_ids": ids} if ids else {}))

    def barriers_in_flight(self, app: str) -> list[Barrier]:
        return self._barriers(barriers.select().where(barriers.c.app == app,
                                                      barriers.c.due_at.is_not(None)))

    def due_barriers(self, app: str, now: float, limit: int = 500) -> list[Barrier]:
        return self._barriers(barriers.select().where(barriers.c.app == app,
                                                      barriers.c.due_at <= now)
                              .order_by(barriers.c.due_at).limit(limit))

    def _barriers(self, query: Any) -> list[Barrier]:
        rows = self._run(lambda conn: conn.execute(query).mappings().all())
        return [from_row(Barrier, row) for row in rows]

    def purge_barriers(self, app: str, before: float) -> int:
        ended = select(barriers.c.id).where(barriers.c.app == app,
                                            barriers.c.finished_at < before)

        def delete(conn: Connection) -> int:
            conn.execute(barrier_parts.delete().where(barrier_parts.c.barrier_id.in_(ended)))
            conn.execute(barrier_headers.delete().where(barrier_headers.c.barrier_id.in_(ended)))
            return conn.execute(barriers.delete().where(barriers.c.id.in_(ended))).rowcount

        return self._transaction(delete)  # all three or none
