"""The store on SQLAlchemy 2: a SQLite file by default, PostgreSQL for clusters.

Tables (``chordguard_*``) are created on first use. JSON columns are TEXT holding JSON.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Table, and_, case, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from ...model import FAILED_STATES
from ..base import Store, now
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
from .engine import engine as engine_for
from .schema import breakers, claims, create_tables, dead_letters, journal, leases, parts

IN_CHUNK = 500


class SqlStore(Store):
    """The store in a SQL database reached through SQLAlchemy."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            engine = engine_for(self.url)
            create_tables(engine)  # before any thread may use the engine
            self._engine = engine
        return self._engine

    def _insert_ignore(self, table: Table):
        """INSERT that does nothing when the primary key exists."""
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        if dialect == "sqlite":
            return sqlite.insert(table).on_conflict_do_nothing()
        return table.insert()  # other dialects: IntegrityError is caught by the caller

    def _insert_new(self, table: Table, values: dict[str, Any] | list[dict[str, Any]]) -> int:
        """Insert the rows whose key is new; return how many were inserted."""
        key = list(table.primary_key.columns)[0]
        try:
            with self.engine.begin() as conn:
                return len(conn.execute(self._insert_ignore(table).returning(key),
                                        values).all())
        except IntegrityError:
            return 0

    # journal
    def record_chord(self, record: ChordRecord) -> None:
        row = to_row(record)
        self._insert_new(journal, {c.name: row[c.name] for c in journal.columns})

    def record_parts(self, updates: list[PartUpdate]) -> None:
        if updates:
            self._insert_new(parts, [{"chord_id": u.chord_id, "task_id": u.task_id,
                                      "state": u.state, "at": u.at} for u in updates])

    def chord(self, chord_id: str) -> ChordRecord | None:
        found = self._chords(journal.c.id == chord_id, limit=1)
        return found[0] if found else None

    def parts(self, chord_id: str) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(parts.c.task_id, parts.c.state)
                                .where(parts.c.chord_id == chord_id))
            return {task_id: state for task_id, state in rows}

    def open_chords(self, app: str | None = None, due_before: float | None = None,
                    limit: int = 10000) -> list[ChordRecord]:
        where = [journal.c.state == OPEN]
        if app is not None:
            where.append(journal.c.app == app)
        if due_before is not None:
            where.append(journal.c.deadline_at < due_before)
        return self._chords(and_(*where), limit)

    def _chords(self, where, limit: int) -> list[ChordRecord]:
        query = select(journal).where(where).order_by(journal.c.created_at).limit(limit)
        with self.engine.connect() as conn:
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
        out = []
        for r in rows:
            done, failed, last = progress.get(r["id"], (0, 0, None))
            out.append(from_row(ChordRecord, r, last_progress_at=last, done=done or 0,
                                failed=failed or 0))
        return out

    def finish_chord(self, chord_id: str, state: str, reason: str) -> bool:
        assert state in TERMINAL, state
        with self.engine.begin() as conn:
            result = conn.execute(update(journal)
                                  .where(journal.c.id == chord_id, journal.c.state == OPEN)
                                  .values(state=state, reason=reason, ended_at=now()))
            return result.rowcount == 1

    def count(self, chord_id: str, name: str, n: int = 1) -> None:
        column = {"polls": journal.c.polls, "duplicates": journal.c.duplicates}[name]
        with self.engine.begin() as conn:
            conn.execute(update(journal).where(journal.c.id == chord_id)
                         .values({column: column + n}))

    # leases
    def swap_lease(self, chord_id: str, expect: str | None, new: str, ttl: float) -> bool:
        expires = now() + ttl
        if expect is None:
            with self.engine.begin() as conn:  # a lease left from long ago may be taken
                conn.execute(delete(leases).where(leases.c.chord_id == chord_id,
                                                  leases.c.expires_at < now()))
            return self._insert_new(leases, {"chord_id": chord_id, "token": new,
                                             "expires_at": expires}) == 1
        with self.engine.begin() as conn:
            result = conn.execute(update(leases)
                                  .where(leases.c.chord_id == chord_id, leases.c.token == expect)
                                  .values(token=new, expires_at=expires))
            return result.rowcount == 1

    def lease(self, chord_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(leases.c.token).where(leases.c.chord_id == chord_id,
                                                             leases.c.expires_at >= now())
                                ).scalar()

    # run-once claims
    def claim(self, key: str, holder: str) -> str | None:
        if self._insert_new(claims, {"key": key, "holder": holder, "at": now()}) == 1:
            return None
        with self.engine.connect() as conn:
            return conn.execute(select(claims.c.holder).where(claims.c.key == key)).scalar() \
                or "?"

    # dead letters
    def add_dead_letter(self, letter: DeadLetter) -> None:
        self._insert_new(dead_letters, {"id": letter.id, "data": to_json(letter),
                                        "state": letter.state, "created_at": letter.created_at,
                                        "updated_at": letter.updated_at})

    def dead_letters(self, state: str | None = None, limit: int = 1000) -> list[DeadLetter]:
        query = select(dead_letters.c.data).order_by(dead_letters.c.created_at.desc()).limit(limit)
        if state is not None:
            query = query.where(dead_letters.c.state == state)
        with self.engine.connect() as conn:
            return [from_json(DeadLetter, data) for data in conn.execute(query).scalars()]

    def dead_letter(self, letter_id: str) -> DeadLetter | None:
        with self.engine.connect() as conn:
            rows = conn.execute(select(dead_letters.c.data).where(or_(
                dead_letters.c.id == letter_id,
                dead_letters.c.id.startswith(letter_id, autoescape=True))).limit(2)
            ).scalars().all()
        exact = [r for r in rows if from_json(DeadLetter, r).id == letter_id]
        chosen = exact or (rows if len(rows) == 1 else [])
        return from_json(DeadLetter, chosen[0]) if chosen else None

    def settle_dead_letter(self, letter_id: str, state: str, note: str) -> bool:
        letter = self.dead_letter(letter_id)
        if letter is None or letter.state != DLQ_DEAD:
            return False
        letter.state, letter.note, letter.updated_at = state, note, now()
        with self.engine.begin() as conn:
            result = conn.execute(update(dead_letters)
                                  .where(dead_letters.c.id == letter.id,
                                         dead_letters.c.state == DLQ_DEAD)
                                  .values(state=state, data=to_json(letter),
                                          updated_at=letter.updated_at))
            return result.rowcount == 1

    # breakers
    def breaker(self, name: str) -> Breaker:
        with self.engine.connect() as conn:
            row = conn.execute(select(breakers.c.data, breakers.c.version)
                               .where(breakers.c.name == name)).first()
        return Breaker(name) if row is None else from_json(Breaker, row.data, version=row.version)

    def breakers(self) -> list[Breaker]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(breakers.c.data, breakers.c.version)
                                .order_by(breakers.c.name)).all()
        return [from_json(Breaker, row.data, version=row.version) for row in rows]

    def _replace_breaker(self, old: Breaker, new: Breaker) -> bool:
        if old.version == 0:
            return self._insert_new(breakers, {"name": new.name, "data": to_json(new),
                                               "version": new.version}) == 1
        with self.engine.begin() as conn:
            result = conn.execute(update(breakers)
                                  .where(breakers.c.name == new.name,
                                         breakers.c.version == old.version)
                                  .values(data=to_json(new), version=new.version))
            return result.rowcount == 1

    # retention
    def purge(self, now_: float | None = None) -> int:
        cutoff = (now_ or now()) - self.retention
        with self.engine.begin() as conn:
            ended = select(journal.c.id).where(journal.c.state != OPEN,
                                               journal.c.ended_at < cutoff)
            conn.execute(delete(parts).where(parts.c.chord_id.in_(ended)))
            conn.execute(delete(leases).where(leases.c.expires_at < cutoff))
            conn.execute(delete(claims).where(claims.c.at < cutoff))
            conn.execute(delete(dead_letters).where(dead_letters.c.state != DLQ_DEAD,
                                                    dead_letters.c.updated_at < cutoff))
            return conn.execute(delete(journal).where(journal.c.state != OPEN,
                                                      journal.c.ended_at < cutoff)).rowcount
