"""The store in Redis — one server, a Redis Cluster or a Sentinel's master (``connect``):
keys as ``keys`` lays them out, every atomic write one Lua call on one slot (``lua``): one
call per journal write (and one index update), one round trip per barrier completion.

Ended chords and finished barriers expire by themselves; leases expire with their TTL.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any

from ...model import FAILED_STATES
from ..protocols import COUNTERS, DEFAULT_RETENTION, Store
from ..records import (
    DLQ_DEAD,
    OPEN,
    TERMINAL,
    Breaker,
    ChordRecord,
    DeadLetter,
    PartUpdate,
    from_json,
    to_json,
)
from . import connect, keys, lua
from .barriers import RedisBarriers, _text


class RedisStore(RedisBarriers, Store):
    """The store in Redis (``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``,
    ``sentinel://``: see ``connect``)."""

    def __init__(self, url: str) -> None:
        connect.check(url)
        self.url = url
        self.retention = DEFAULT_RETENTION
        self._scripts: dict[str, Any] = {}

    @functools.cached_property
    def client(self) -> Any:
        """The client, made on first use (a cluster client asks for the slot map then)."""
        return connect.client(self.url)

    def _eval(self, script: str, keys_: list[str], args: list[Any]) -> Any:
        """Run one script of ``lua`` (by its SHA once loaded) on the slot of ``keys_``."""
        runner = self._scripts.get(script)
        if runner is None:
            runner = self._scripts.setdefault(script, self.client.register_script(script))
        return runner(keys=keys_, args=args)

    def clock(self) -> float:
        seconds, micros = self.client.time()
        return seconds + micros / 1e6

    # journal
    def record_chord(self, record: ChordRecord) -> None:
        state = self._eval(lua.RECORD, [keys.chord(record.id)],
                           [to_json(record), record.state, record.polls, record.duplicates,
                            record.reason or "", record.ended_at or time.time(),
                            int(self.retention)])
        if _text(state) == OPEN:  # then the index (recording again repairs a lost entry)
            score = record.deadline_at if record.deadline_at is not None else keys.NO_DEADLINE
            self.client.zadd(keys.OPEN, {record.id: score}, nx=True)

    def record_parts(self, updates: list[PartUpdate]) -> None:
        if not updates:
            return
        by_chord: dict[str, dict[str, str]] = {}
        for u in updates:  # a part delivered twice keeps its first report
            by_chord.setdefault(u.chord_id, {}).setdefault(u.task_id, f"{u.state}|{u.at}")
        with self.client.pipeline(transaction=False) as pipe:
            for chord_id, finished in by_chord.items():
                for task_id, report in finished.items():
                    pipe.hsetnx(keys.parts(chord_id), task_id, report)
                pipe.expire(keys.parts(chord_id), int(self.retention))
            pipe.execute()

    def chord(self, chord_id: str) -> ChordRecord | None:
        found = self._chords([chord_id])
        return found[0] if found else None

    def parts(self, chord_id: str) -> dict[str, str]:
        raw = self.client.hgetall(keys.parts(chord_id))
        return {k.decode(): v.decode().split("|")[0] for k, v in raw.items()}

    def open_chords(self, app: str | None = None, due_before: float | None = None,
                    limit: int = 10000) -> list[ChordRecord]:
        top = f"({due_before}" if due_before is not None else "+inf"
        ids = [i.decode() for i in self.client.zrangebyscore(keys.OPEN, "-inf", top)]
        chords = self._chords(ids)
        stale = set(ids) - {c.id for c in chords if c.open}  # ended, or expired since
        if stale:
            self.client.zrem(keys.OPEN, *stale)
        found = [c for c in chords if c.open and (app is None or c.app == app)]
        return sorted(found, key=lambda c: c.created_at)[:limit]

    def _chords(self, ids: list[str]) -> list[ChordRecord]:
        with self.client.pipeline(transaction=False) as pipe:
            for chord_id in ids:
                pipe.hgetall(keys.chord(chord_id))
                pipe.hgetall(keys.parts(chord_id))
            raw = pipe.execute()
        out = []
        for chord_id, fields, finished in zip(ids, raw[::2], raw[1::2], strict=True):
            if not fields or b"data" not in fields:
                continue
            values = {k.decode(): v.decode() for k, v in fields.items()}
            states = [v.decode().split("|") for v in finished.values()]
            out.append(from_json(
                ChordRecord, values["data"], id=chord_id, state=values.get("state", OPEN),
                reason=values.get("reason") or None,
                ended_at=float(values["ended_at"]) if values.get("ended_at") else None,
                last_progress_at=max((float(at) for _, at in states), default=None),
                done=len(states), failed=sum(1 for s, _ in states if s in FAILED_STATES),
                **{name: int(values.get(name, 0)) for name in COUNTERS}))
        return out

    def finish_chord(self, chord_id: str, state: str, reason: str) -> bool:
        assert state in TERMINAL, state
        ended = bool(self._eval(lua.FINISH, [keys.chord(chord_id)],
                                [state, reason, time.time(), int(self.retention)]))
        if ended:
            self.client.zrem(keys.OPEN, chord_id)
        return ended

    def count(self, chord_id: str, name: str, n: int = 1) -> None:
        assert name in COUNTERS, name
        key = keys.chord(chord_id)
        if self.client.exists(key):
            self.client.hincrby(key, name, n)

    # leases
    def swap_lease(self, name: str, expect: str | None | tuple[str | None, ...],
                   new: str | None, ttl: float) -> bool:
        expected = expect if isinstance(expect, tuple) else (expect,)
        return bool(self._eval(lua.SWAP_LEASE, [keys.lease(name)],
                               [new or "", max(1, int(ttl * 1000)),
                                *(e or "" for e in expected)]))

    def claim_all(self, holders: Mapping[str, str]) -> None:
        ttl = max(1, int(self.retention * 1000))
        with self.client.pipeline(transaction=False) as pipe:  # its keys are on many slots
            for name, holder in holders.items():
                pipe.set(keys.lease(name), holder, nx=True, px=ttl)
            pipe.execute()

    def lease_holder(self, name: str) -> str | None:
        value = self.client.get(keys.lease(name))
        return None if value is None else _text(value)

    # dead letters
    def add_dead_letter(self, letter: DeadLetter) -> None:
        if self.client.set(keys.dead_letter(letter.id), to_json(letter), nx=True):
            self.client.zadd(keys.DEAD_LETTERS, {letter.id: letter.created_at})

    def dead_letters(self, state: str | None = None, limit: int = 1000) -> list[DeadLetter]:
        ids = [i.decode() for i in self.client.zrevrange(keys.DEAD_LETTERS, 0, -1)]
        with self.client.pipeline(transaction=False) as pipe:  # its keys are on many slots
            for letter_id in ids:
                pipe.get(keys.dead_letter(letter_id))
            raw = pipe.execute()
        letters = [from_json(DeadLetter, r) for r in raw if r is not None]
        return [d for d in letters if state is None or d.state == state][:limit]

    def dead_letter(self, letter_id: str) -> DeadLetter | None:
        raw = self.client.get(keys.dead_letter(letter_id))
        if raw is not None:
            return from_json(DeadLetter, raw)
        matches = [i for i in self.client.zrange(keys.DEAD_LETTERS, 0, -1)
                   if i.decode().startswith(letter_id)]
        if len(matches) != 1:
            return None
        raw = self.client.get(keys.dead_letter(matches[0].decode()))
        return from_json(DeadLetter, raw) if raw is not None else None

    def settle_dead_letter(self, letter_id: str, state: str, note: str) -> bool:
        letter = self.dead_letter(letter_id)
        if letter is None or letter.state != DLQ_DEAD:
            return False
        letter.state, letter.note, letter.updated_at = state, note, time.time()
        return bool(self._eval(lua.SETTLE, [keys.dead_letter(letter.id)], [to_json(letter)]))

    # breakers
    def breaker(self, name: str) -> Breaker:
        raw = self.client.get(keys.breaker(name))
        return from_json(Breaker, raw) if raw is not None else Breaker(name)

    def breakers(self) -> list[Breaker]:
        names = sorted(n.decode() for n in self.client.smembers(keys.BREAKERS))
        return [self.breaker(name) for name in names]

    def replace_breaker(self, old: Breaker, new: Breaker) -> bool:
        self.client.sadd(keys.BREAKERS, new.name)
        return bool(self._eval(lua.REPLACE_BREAKER, [keys.breaker(new.name)],
                               [old.version, to_json(new)]))

    # retention
    def purge(self, now_: float | None = None) -> int:
        """Ended chords and leases expire by themselves; settled dead letters past retention
        go."""
        cutoff = (now_ or time.time()) - self.retention
        removed = 0
        for letter in self.dead_letters():
            if letter.state != DLQ_DEAD and (letter.updated_at or letter.created_at) < cutoff:
                self.client.delete(keys.dead_letter(letter.id))
                self.client.zrem(keys.DEAD_LETTERS, letter.id)
                removed += 1
        return removed
