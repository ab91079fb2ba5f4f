"""The store in Redis: keys as ``keys`` lays them out, every atomic write one Lua call
(``lua``): one call per journal write, one round trip per barrier completion.

Ended chords and finished barriers expire by themselves; leases expire with their TTL.
"""

from __future__ import annotations

import functools
import time

import redis

from ...model import FAILED_STATES
from .. import timeouts
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
    to_json,
)
from . import keys, lua
from .barriers import RedisBarriers, _text


@functools.cache
def client(url: str) -> redis.Redis:
    """The Redis client for ``url`` (one per process; redis-py's pool reconnects in a forked
    child by itself), with the process's store timeouts (``store.timeouts``)."""
    limits = timeouts.current()
    return redis.Redis.from_url(url, socket_connect_timeout=limits.connect,
                                socket_timeout=limits.operation, socket_keepalive=True,
                                health_check_interval=limits.health_check)


class RedisStore(RedisBarriers, Store):
    """The store in a Redis database (``redis://``, ``rediss://``, ``unix://``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.retention = DEFAULT_RETENTION
        self.client = client(url)
        script = self.client.register_script
        self._record, self._parts, self._finish = \
            script(lua.RECORD), script(lua.PARTS), script(lua.FINISH)
        self._swap, self._replace, self._settle = \
            script(lua.SWAP_LEASE), script(lua.REPLACE_BREAKER), script(lua.SETTLE)
        self._complete, self._transition, self._mark = \
            script(lua.COMPLETE), script(lua.TRANSITION), script(lua.MARK_DISPATCHED)

    def clock(self) -> float:
        seconds, micros = self.client.time()
        return seconds + micros / 1e6

    # journal
    def record_chord(self, record: ChordRecord) -> None:
        score = record.deadline_at if record.deadline_at is not None else keys.NO_DEADLINE
        self._record(keys=[keys.chord(record.id), keys.OPEN],
                     args=[to_json(record), record.state, record.polls, record.duplicates,
                           score, record.id, record.reason or "",
                           record.ended_at or time.time(), int(self.retention)])

    def record_parts(self, updates: list[PartUpdate]) -> None:
        if not updates:
            return
        by_chord: dict[str, dict[str, str]] = {}
        for u in updates:  # a part delivered twice keeps its first report
            by_chord.setdefault(u.chord_id, {}).setdefault(u.task_id, f"{u.state}|{u.at}")
        with self.client.pipeline(transaction=False) as pipe:
            for chord_id, finished in by_chord.items():
                flat = [item for pair in finished.items() for item in pair]
                self._parts(keys=[keys.parts(chord_id)], args=[int(self.retention), *flat],
                            client=pipe)
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
        found = [c for c in self._chords(ids) if c.open and (app is None or c.app == app)]
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
                polls=int(values.get("polls", 0)), duplicates=int(values.get("duplicates", 0))))
        return out

    def finish_chord(self, chord_id: str, state: str, reason: str) -> bool:
        assert state in TERMINAL, state
        return bool(self._finish(keys=[keys.chord(chord_id), keys.OPEN],
                                 args=[state, reason, time.time(), int(self.retention),
                                       chord_id]))

    def count(self, chord_id: str, name: str, n: int = 1) -> None:
        assert name in ("polls", "duplicates"), name
        key = keys.chord(chord_id)
        if self.client.exists(key):
            self.client.hincrby(key, name, n)

    # leases
    def swap_lease(self, name: str, expect: str | None | tuple[str | None, ...],
                   new: str | None, ttl: float) -> bool:
        expected = expect if isinstance(expect, tuple) else (expect,)
        return bool(self._swap(keys=[keys.lease(name)],
                               args=[new or "", max(1, int(ttl * 1000)),
                                     *(e or "" for e in expected)]))

    def lease_holder(self, name: str) -> str | None:
        value = self.client.get(keys.lease(name))
        return None if value is None else _text(value)

    # dead letters
    def add_dead_letter(self, letter: DeadLetter) -> None:
        if self.client.set(keys.dead_letter(letter.id), to_json(letter), nx=True):
            self.client.zadd(keys.DEAD_LETTERS, {letter.id: letter.created_at})

    def dead_letters(self, state: str | None = None, limit: int = 1000) -> list[DeadLetter]:
        ids = [i.decode() for i in self.client.zrevrange(keys.DEAD_LETTERS, 0, -1)]
        raw = self.client.mget([keys.dead_letter(i) for i in ids]) if ids else []
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
        return bool(self._settle(keys=[keys.dead_letter(letter.id), keys.DEAD_LETTERS],
                                 args=[to_json(letter), state]))

    # breakers
    def breaker(self, name: str) -> Breaker:
        raw = self.client.get(keys.breaker(name))
        return from_json(Breaker, raw) if raw is not None else Breaker(name)

    def breakers(self) -> list[Breaker]:
        names = sorted(n.decode() for n in self.client.smembers(keys.BREAKERS))
        return [self.breaker(name) for name in names]

    def replace_breaker(self, old: Breaker, new: Breaker) -> bool:
        self.client.sadd(keys.BREAKERS, new.name)
        return bool(self._replace(keys=[keys.breaker(new.name)],
                                  args=[old.version, to_json(new)]))

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
