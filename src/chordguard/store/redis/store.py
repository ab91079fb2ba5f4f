"""The store in Redis: one hash per chord, sorted sets of open chords (by deadline) and
dead letters.

Keys start with ``chordguard:``. Ended chords expire after the retention period.
"""

from __future__ import annotations

import functools

import redis

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
    to_json,
)

PREFIX = "chordguard:"
CONNECT_TIMEOUT = 3
NO_DEADLINE = 1e18

# KEYS: chord hash, open zset; ARGV: data json, state, polls, duplicates, score, id
_RECORD = """
if redis.call('HSETNX', KEYS[1], 'data', ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'polls', ARGV[3], 'duplicates', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
return 1
"""
# KEYS: parts hash; ARGV: ttl, then task id, "state|at" pairs (first report kept)
_PARTS = """
for i = 2, #ARGV, 2 do redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""
# KEYS: chord hash, open zset; ARGV: state, reason, ended_at, retention, id
_FINISH = """
if redis.call('HGET', KEYS[1], 'state') ~= 'open' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'reason', ARGV[2], 'ended_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[5])
return 1
"""
# KEYS: lease; ARGV: expect, new, ttl ms
_SWAP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
# KEYS: breaker; ARGV: expected version, new json
_REPLACE = """
local cur = redis.call('GET', KEYS[1])
local version = 0
if cur then version = cjson.decode(cur)['version'] end
if tostring(version) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""
# KEYS: letter, dlq zset; ARGV: new json, state
_SETTLE = """
local cur = redis.call('GET', KEYS[1])
if not cur or cjson.decode(cur)['state'] ~= 'dead' then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


@functools.cache
def client(url: str) -> redis.Redis:
    """The Redis client for ``url`` (one per process; redis-py's pool reconnects in a forked
    child by itself)."""
    return redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT,
                                socket_timeout=10, health_check_interval=30)


class RedisStore(Store):
    """The store in a Redis database (``redis://``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: redis.Redis = client(url)
        self._record = self.client.register_script(_RECORD)
        self._parts = self.client.register_script(_PARTS)
        self._finish = self.client.register_script(_FINISH)
        self._swap = self.client.register_script(_SWAP)
        self._replace = self.client.register_script(_REPLACE)
        self._settle = self.client.register_script(_SETTLE)

    @staticmethod
    def _key(*parts: str) -> str:
        return PREFIX + ":".join(parts)

    # journal
    def record_chord(self, record: ChordRecord) -> None:
        key = self._key("chord", record.id)
        static = to_json(record)  # what changes later lives in the hash's own fields
        if record.state == OPEN:
            score = record.deadline_at if record.deadline_at is not None else NO_DEADLINE
            self._record(keys=[key, self._key("open")],
                         args=[static, record.state, record.polls, record.duplicates, score,
                               record.id])
            return
        if self.client.hsetnx(key, "data", static):
            self.client.hset(key, mapping={"state": record.state, "polls": record.polls,
                                           "duplicates": record.duplicates,
                                           "reason": record.reason or "",
                                           "ended_at": record.ended_at or now()})
            self.client.expire(key, int(self.retention))

    def record_parts(self, updates: list[PartUpdate]) -> None:
        if not updates:
            return
        by_chord: dict[str, dict[str, str]] = {}
        for u in updates:  # a part delivered twice keeps its first report
            by_chord.setdefault(u.chord_id, {}).setdefault(u.task_id, f"{u.state}|{u.at}")
        with self.client.pipeline(transaction=False) as pipe:
            for chord_id, finished in by_chord.items():
                flat = [item for pair in finished.items() for item in pair]
                self._parts(keys=[self._key("parts", chord_id)],
                            args=[int(self.retention), *flat], client=pipe)
            pipe.execute()

    def chord(self, chord_id: str) -> ChordRecord | None:
        found = self._chords([chord_id])
        return found[0] if found else None

    def parts(self, chord_id: str) -> dict[str, str]:
        raw = self.client.hgetall(self._key("parts", chord_id))
        return {k.decode(): v.decode().split("|")[0] for k, v in raw.items()}

    def open_chords(self, app: str | None = None, due_before: float | None = None,
                    limit: int = 10000) -> list[ChordRecord]:
        top = f"({due_before}" if due_before is not None else "+inf"
        ids = [i.decode() for i in self.client.zrangebyscore(self._key("open"), "-inf", top)]
        found = [c for c in self._chords(ids) if c.open and (app is None or c.app == app)]
        return sorted(found, key=lambda c: c.created_at)[:limit]

    def _chords(self, ids: list[str]) -> list[ChordRecord]:
        with self.client.pipeline(transaction=False) as pipe:
            for chord_id in ids:
                pipe.hgetall(self._key("chord", chord_id))
                pipe.hgetall(self._key("parts", chord_id))
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
        return bool(self._finish(keys=[self._key("chord", chord_id), self._key("open")],
                                 args=[state, reason, now(), int(self.retention), chord_id]))

    def count(self, chord_id: str, name: str, n: int = 1) -> None:
        assert name in ("polls", "duplicates"), name
        key = self._key("chord", chord_id)
        if self.client.exists(key):
            self.client.hincrby(key, name, n)

    # leases
    def swap_lease(self, chord_id: str, expect: str | None, new: str, ttl: float) -> bool:
        key = self._key("lease", chord_id)
        if expect is None:
            return bool(self.client.set(key, new, px=int(ttl * 1000), nx=True))
        return bool(self._swap(keys=[key], args=[expect, new, int(ttl * 1000)]))

    def lease(self, chord_id: str) -> str | None:
        value = self.client.get(self._key("lease", chord_id))
        return value.decode() if value is not None else None

    # run-once claims
    def claim(self, key: str, holder: str) -> str | None:
        full = self._key("claim", key)
        if self.client.set(full, holder, nx=True, ex=int(self.retention)):
            return None
        current = self.client.get(full)
        return current.decode() if current is not None else "?"

    # dead letters
    def add_dead_letter(self, letter: DeadLetter) -> None:
        if self.client.set(self._key("dlq", letter.id), to_json(letter), nx=True):
            self.client.zadd(self._key("dlq"), {letter.id: letter.created_at})

    def dead_letters(self, state: str | None = None, limit: int = 1000) -> list[DeadLetter]:
        ids = [i.decode() for i in self.client.zrevrange(self._key("dlq"), 0, -1)]
        raw = self.client.mget([self._key("dlq", i) for i in ids]) if ids else []
        letters = [from_json(DeadLetter, r) for r in raw if r is not None]
        return [d for d in letters if state is None or d.state == state][:limit]

    def dead_letter(self, letter_id: str) -> DeadLetter | None:
        raw = self.client.get(self._key("dlq", letter_id))
        if raw is not None:
            return from_json(DeadLetter, raw)
        matches = [i for i in self.client.zrange(self._key("dlq"), 0, -1)
                   if i.decode().startswith(letter_id)]
        if len(matches) != 1:
            return None
        raw = self.client.get(self._key("dlq", matches[0].decode()))
        return from_json(DeadLetter, raw) if raw is not None else None

    def settle_dead_letter(self, letter_id: str, state: str, note: str) -> bool:
        letter = self.dead_letter(letter_id)
        if letter is None or letter.state != DLQ_DEAD:
            return False
        letter.state, letter.note, letter.updated_at = state, note, now()
        return bool(self._settle(keys=[self._key("dlq", letter.id), self._key("dlq")],
                                 args=[to_json(letter), state]))

    # breakers
    def breaker(self, name: str) -> Breaker:
        raw = self.client.get(self._key("breaker", name))
        return from_json(Breaker, raw) if raw is not None else Breaker(name)

    def breakers(self) -> list[Breaker]:
        names = sorted(n.decode() for n in self.client.smembers(self._key("breakers")))
        return [self.breaker(name) for name in names]

    def _replace_breaker(self, old: Breaker, new: Breaker) -> bool:
        self.client.sadd(self._key("breakers"), new.name)
        return bool(self._replace(keys=[self._key("breaker", new.name)],
                                  args=[old.version, to_json(new)]))

    # retention
    def purge(self, now_: float | None = None) -> int:
        """Ended chords expire by themselves; settled dead letters past retention go."""
        cutoff = (now_ or now()) - self.retention
        removed = 0
        for letter in self.dead_letters():
            if letter.state != DLQ_DEAD and (letter.updated_at or letter.created_at) < cutoff:
                self.client.delete(self._key("dlq", letter.id))
                self.client.zrem(self._key("dlq"), letter.id)
                removed += 1
        return removed
