"""The store on SQLAlchemy 2: a SQLite file by default, PostgreSQL for clusters.

Tables (``schema``) are created on first use. The journal, dead letters and breakers go
through the engine's pool (any thread of any process may publish a chord); the hot paths
of workers — barrier completions and leases — run on the thread's own connection
(``engine.run``: one round trip a statement on PostgreSQL).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Table, and_, case, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ...model import FAILED_STATES
from ..protocols import DEFAULT_RETENTION, Store
from ..records import (
    DLQ_DEAD,
    OPEN,
    TERMINAL,
    Breaker,
    ChordRecord,
    DeadLetter,
    PartUpdate,
    from_json,
    from_row,
    to_json,
    to_row,
)
from .barriers import SqlBarriers
from .engine import engine as engine_for
from .engine import run
from .schema import breakers, create_tables, dead_letters, journal, leases, parts

T = TypeVar("T")
IN_CHUNK = 500


class SqlStore(SqlBarriers, Store):
    """The store in a SQL database reached through SQLAlchemy (SQLite or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.retention = DEFAULT_RETENTION
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            engine = engine_for(self.url)
            create_tables(engine)  # before any thread may use the engine
            self._engine = engine
        return self._engine

    @property
    def postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def clock(self) -> float:
        if not self.postgres:
            return time.time()  # SQLite: one host, its clock
        return float(self._run(lambda conn: conn.execute(
            select(func.extract("epoch", func.clock_timestamp()))).scalar_one()))

    def _run(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` as one unit on the thread's own connection (see ``engine.run``)."""
        return run(self.engine, fn)

    def _transaction(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` in one transaction on a pooled connection."""
        with self.engine.begin() as conn:
            return fn(conn)

    def _insert(self, table: Table) -> Any:
        return (postgresql.insert if self.postgres else sqlite.insert)(table)

    def _insert_new(self, table: Table, values: dict[str, Any] | list[dict[str, Any]]) -> int:
        """Insert the rows whose key is new; return how many were inserted."""
        key = list(table.primary_key.columns)[0]
        query = self._insert(table).on_conflict_do_nothing().returning(key)
        return self._transaction(lambda conn: len(conn.execute(query, values).all()))

    # journal
    def record_chord(self, record: ChordRecord) -> None:
        row = to_row(record)
        self._insert_new(journal, {c.name: row[c.name] for c in journal.columns})

    def record_parts(self, updates: list[PartUpdate]) -> None:
        if updates:
            self._insert_new(parts, [to_row(u) for u in updates])

    def chord(self, chord_id: str) -> ChordRecord | None:
        found = self._chords(journal.c.id == chord_id, limit=1)
        return found[0] if found else None

    def parts(self, chord_id: str) -> dict[str, str]:
        query = select(parts.c.task_id, parts.c.state).where(parts.c.chord_id == chord_id)
        return dict(self._transaction(lambda conn: conn.execute(query).all()))

    def open_chords(self, app: str | None = None, due_before: float | None = None,
                    limit: int = 10000) -> list[ChordRecord]:
        where = [journal.c.state == OPEN]
        if app is not None:
            where.append(journal.c.app == app)
        if due_before is not None:
            where.append(journal.c.deadline_at < due_before)
        return self._chords(and_(*where), limit)

    def _chords(self, where: Any, limit: int) -> list[ChordRecord]:
        query = select(journal).where(where).order_by(journal.c.created_at).limit(limit)

        def read(conn: Connection) -> tuple[Any, dict[str, tuple[int, int, float]]]:
            rows = conn.execute(query).mappings().all()
            progress: dict[str, tuple[int, int, float]] = {}
            ids = [r["id"] for r in rows]
            for start in range(0, len(ids), IN_CHUNK):
                counts = (select(parts.c.chord_id, func.count(),
                                 func.sum(case((parts.c.state.in_(sorted(FAILED_STATES)), 1),
                                               else_=0)), func.max(parts.c.at))
                          .where(parts.c.chord_id.in_(ids[start:start + IN_CHUNK]))
                          .group_by(parts.c.chord_id))
                progress.update({cid: (done, failed, last)
                                 for cid, done, failed, last in conn.execute(counts)})
            return rows, progress

        rows, progress = self._transaction(read)
        out = []
        for r in rows:
            done, failed, last = progress.get(r["id"], (0, 0, None))
            out.append(from_row(ChordRecord, r, last_progress_at=last, done=done or 0,
                                failed=failed or 0))
        return out

    def finish_chord(self, chord_id: str, state: str, reason: str) -> bool:
        assert state in TERMINAL, state
        query = update(journal).where(journal.c.id == chord_id, journal.c.state == OPEN) \
            .values(state=state, reason=reason, ended_at=time.time())
        return self._transaction(lambda conn: conn.execute(query).rowcount) == 1

    def count(self, chord_id: str, name: str, n: int = 1) -> None:
        column = {"polls": journal.c.polls, "duplicates": journal.c.duplicates,
                  "callback_duplicates": journal.c.callback_duplicates}[name]
        query = update(journal).where(journal.c.id == chord_id).values({column: column + n})
        self._transaction(lambda conn: conn.execute(query))

    # leases
    def swap_lease(self, name: str, expect: str | None | tuple[str | None, ...],
                   new: str | None, ttl: float) -> bool:
        expected = expect if isinstance(expect, tuple) else (expect,)
        holders = [e for e in expected if e is not None]
        at = time.time()
        live = leases.c.expires_at >= at
        if new is None:  # release
            query: Any = delete(leases).where(leases.c.name == name,
                                              leases.c.holder.in_(holders), live)
        elif None in expected:  # take (or renew): a new row, or over an expired one
            query = self._insert(leases).values(name=name, holder=new, expires_at=at + ttl)
            query = query.on_conflict_do_update(
                index_elements=[leases.c.name], set_={"holder": new, "expires_at": at + ttl},
                where=or_(leases.c.expires_at < at, leases.c.holder.in_(holders)))
        else:  # hand over (or renew)
            query = update(leases).where(leases.c.name == name, leases.c.holder.in_(holders),
                                         live).values(holder=new, expires_at=at + ttl)
        query = query.returning(leases.c.name)  # (rowcount is not reliable for upserts)
        return self._run(lambda conn: conn.execute(query).first()) is not None

    def claim_all(self, holders: Mapping[str, str]) -> None:
        if not holders:
            return
        at = time.time()
        query = self._insert(leases)
        query = query.on_conflict_do_update(  # over an expired claim, as swap_lease takes it
            index_elements=[leases.c.name], set_={"holder": query.excluded.holder,
                                                  "expires_at": query.excluded.expires_at},
            where=leases.c.expires_at < at)
        rows = [{"name": name, "holder": holder, "expires_at": at + self.retention}
                for name, holder in holders.items()]
        self._transaction(lambda conn: conn.execute(query, rows))

    def lease_holder(self, name: str) -> str | None:
        query = select(leases.c.holder).where(leases.c.name == name,
                                              leases.c.expires_at >= time.time())
        return self._run(lambda conn: conn.execute(query).scalar())

    # dead letters
    def add_dead_letter(self, letter: DeadLetter) -> None:
        self._insert_new(dead_letters, {"id": letter.id, "data": to_json(letter),
                                        "state": letter.state, "created_at": letter.created_at,
                                        "updated_at": letter.updated_at})

    def dead_letters(self, state: str | None = None, limit: int = 1000) -> list[DeadLetter]:
        query = select(dead_letters.c.data).order_by(dead_letters.c.created_at.desc()).limit(limit)
        if state is not None:
            query = query.where(dead_letters.c.state == state)
        found = self._transaction(lambda conn: conn.execute(query).scalars().all())
        return [from_json(DeadLetter, data) for data in found]

    def dead_letter(self, letter_id: str) -> DeadLetter | None:
        query = select(dead_letters.c.id, dead_letters.c.data).where(or_(
            dead_letters.c.id == letter_id,
            dead_letters.c.id.startswith(letter_id, autoescape=True))).limit(2)
        rows = self._transaction(lambda conn: conn.execute(query).all())
        exact = [data for found, data in rows if found == letter_id]
        chosen = exact or ([rows[0].data] if len(rows) == 1 else [])
        return from_json(DeadLetter, chosen[0]) if chosen else None

    def settle_dead_letter(self, letter_id: str, state: str, note: str) -> bool:
        letter = self.dead_letter(letter_id)
        if letter is None or letter.state != DLQ_DEAD:
            return False
        letter.state, letter.note, letter.updated_at = state, note, time.time()
        query = update(dead_letters).where(dead_letters.c.id == letter.id,
                                           dead_letters.c.state == DLQ_DEAD) \
            .values(state=state, data=to_json(letter), updated_at=letter.updated_at)
        return self._transaction(lambda conn: conn.execute(query).rowcount) == 1

    # breakers
    def breaker(self, name: str) -> Breaker:
        query = select(breakers.c.data).where(breakers.c.name == name)
        data = self._transaction(lambda conn: conn.execute(query).scalar())
        return Breaker(name) if data is None else from_json(Breaker, data)

    def breakers(self) -> list[Breaker]:
        query = select(breakers.c.data).order_by(breakers.c.name)
        found = self._transaction(lambda conn: conn.execute(query).scalars().all())
        return [from_json(Breaker, data) for data in found]

    def replace_breaker(self, old: Breaker, new: Breaker) -> bool:
        if old.version == 0:
            return self._insert_new(breakers, {"name": new.name, "data": to_json(new),
                                               "version": new.version}) == 1
        query = update(breakers).where(breakers.c.name == new.name,
                                       breakers.c.version == old.version) \
            .values(data=to_json(new), version=new.version)
        return self._transaction(lambda conn: conn.execute(query).rowcount) == 1

    # retention
    def purge(self, now_: float | None = None) -> int:
        cutoff = (now_ or time.time()) - self.retention

        def delete_old(conn: Connection) -> int:
            ended = select(journal.c.id).where(journal.c.state != OPEN,
                                               journal.c.ended_at < cutoff)
            conn.execute(delete(parts).where(parts.c.chord_id.in_(ended)))
            conn.execute(delete(leases).where(leases.c.expires_at < cutoff))
            conn.execute(delete(dead_letters).where(dead_letters.c.state != DLQ_DEAD,
                                                    dead_letters.c.updated_at < cutoff))
            return conn.execute(delete(journal).where(journal.c.state != OPEN,
                                                      journal.c.ended_at < cutoff)).rowcount

        return self._transaction(delete_old)
