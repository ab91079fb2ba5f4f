"""Barriers in Redis: one hash per barrier, one hash of part envelopes, one Lua call per part.

Keys (``chordguard:durable:`` prefix): ``b:<id>`` the barrier hash, ``p:<id>`` index ->
envelope, ``h:<id>`` the header task ids (JSON), ``due:<app>`` a sorted set of in-flight
barrier ids scored by when the reaper must look at them, ``lock:<name>`` reaper leases.
"""

from __future__ import annotations

import json
from typing import Any

from ..records import (
    CLAIM_GRACE,
    IN_FLIGHT,
    KEEP_SECONDS,
    Barrier,
    BarrierState,
    Completion,
    Outcome,
    from_row,
    to_row,
)
from .store import client

PREFIX = "chordguard:durable:"

# KEYS: barrier, parts, due   ARGV: index, envelope, failed 0/1, now, token, id, grace, reason
_COMPLETE = """
local b = KEYS[1]
local f = redis.call('HMGET', b, 'state', 'policy', 'deadline_at', 'stall_seconds',
                     'total', 'by_reference')
local state = f[1]
if not state then return {'missing'} end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return {'duplicate'} end
if redis.call('HLEN', KEYS[2]) == 1 then
  redis.call('EXPIRE', KEYS[2], math.max(redis.call('TTL', b), 1))
end
local now = tonumber(ARGV[4])
local remaining = redis.call('HINCRBY', b, 'remaining', -1)
if ARGV[3] == '1' then redis.call('HINCRBY', b, 'failed', 1) end
if state ~= 'waiting' then
  redis.call('HSET', b, 'updated_at', ARGV[4])
  return {'late'}
end
if ARGV[3] == '1' and f[2] == 'fail' then
  redis.call('HSET', b, 'updated_at', ARGV[4], 'state', 'failed', 'claim_token', ARGV[5],
             'claimed_at', ARGV[4], 'finished_at', ARGV[4],
             'reason', ARGV[8])
  redis.call('ZREM', KEYS[3], ARGV[6])
  return {'fail', cjson.encode(redis.call('HGETALL', b))}
end
if remaining <= 0 then
  redis.call('HSET', b, 'updated_at', ARGV[4], 'state', 'dispatching', 'claim_token', ARGV[5],
             'claimed_at', ARGV[4])
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[7]), ARGV[6])
  local out = {'dispatch', cjson.encode(redis.call('HGETALL', b))}
  if f[6] == '0' then
    for i = 0, tonumber(f[5]) - 1 do
      out[#out + 1] = redis.call('HGET', KEYS[2], tostring(i)) or ''
    end
  end
  return out
end
redis.call('HSET', b, 'updated_at', ARGV[4])
redis.call('ZADD', KEYS[3], math.min(tonumber(f[3]), now + tonumber(f[4])), ARGV[6])
return {'counted'}
"""

# KEYS: barrier, due   ARGV: from-states (comma list), to-state, now, token, id, reason,
#                            outcome, due score ('' = remove from due), keep seconds,
#                            stale-claim-before ('' = any)
_TRANSITION = """
local b = KEYS[1]
local state = redis.call('HGET', b, 'state')
if not state then return false end
if not string.find(',' .. ARGV[1] .. ',', ',' .. state .. ',', 1, true) then return false end
if ARGV[10] ~= '' then
  local claimed = tonumber(redis.call('HGET', b, 'claimed_at') or '0')
  if claimed >= tonumber(ARGV[10]) then return false end
end
redis.call('HSET', b, 'state', ARGV[2], 'updated_at', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', b, 'claim_token', ARGV[4], 'claimed_at', ARGV[3]) end
if ARGV[6] ~= '' then redis.call('HSET', b, 'reason', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', b, 'outcome', ARGV[7]) end
if ARGV[8] == '' then
  redis.call('ZREM', KEYS[2], ARGV[5])
  redis.call('HSET', b, 'finished_at', ARGV[3])
  for _, key in ipairs({b, KEYS[3], KEYS[4]}) do redis.call('EXPIRE', key, ARGV[9]) end
else
  redis.call('ZADD', KEYS[2], ARGV[8], ARGV[5])
end
return cjson.encode(redis.call('HGETALL', b))
"""

# KEYS: barrier   ARGV: token, now
_MARK_DISPATCHED = """
if redis.call('HGET', KEYS[1], 'claim_token') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'dispatching' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'dispatched', 'updated_at', ARGV[2])
return 1
"""

# KEYS: lock   ARGV: holder, ttl ms
_LOCK = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) <= 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""

class RedisBarriers:
    """``BarrierStore`` on Redis."""

    def __init__(self, url: str, keep: float = KEEP_SECONDS) -> None:
        self.url, self.keep = url, keep
        self.redis = client(url)
        self._complete = self.redis.register_script(_COMPLETE)
        self._transition = self.redis.register_script(_TRANSITION)
        self._mark = self.redis.register_script(_MARK_DISPATCHED)
        self._lock = self.redis.register_script(_LOCK)

    def _keys(self, barrier_id: str) -> tuple[str, str, str]:
        return (f"{PREFIX}b:{barrier_id}", f"{PREFIX}p:{barrier_id}", f"{PREFIX}h:{barrier_id}")

    def _due(self, app: str) -> str:
        return f"{PREFIX}due:{app}"

    def create(self, barrier: Barrier) -> None:
        b, _, h = self._keys(barrier.id)
        ttl = max(1, int(barrier.deadline_at - barrier.created_at + self.keep))
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(b, mapping=_fields(barrier))
        pipe.set(h, json.dumps(barrier.header_ids), ex=ttl)
        pipe.expire(b, ttl)
        pipe.zadd(self._due(barrier.app), {barrier.id: barrier.due_at()})
        pipe.execute()

    def complete(self, barrier_id: str, index: int, envelope: str, failed: bool, now: float,
                 token: str, app: str = "", grace: float = CLAIM_GRACE,
                 reason: str = "") -> Completion:
        b, p, _ = self._keys(barrier_id)
        reply = self._complete(keys=[b, p, self._due(app)],
                               args=[index, envelope, int(failed), repr(now), token, barrier_id,
                                     grace, reason or f"header part {index} failed"])
        outcome = Outcome(_text(reply[0]))
        if outcome not in (Outcome.DISPATCH, Outcome.FAIL):
            return Completion(outcome)
        barrier = _barrier(barrier_id, _pairs(reply[1]))
        envelopes = [_text(e) or None for e in reply[2:]] if outcome is Outcome.DISPATCH \
            and not barrier.by_reference else None
        return Completion(outcome, barrier, envelopes)

    def envelopes(self, barrier_id: str, start: int, stop: int) -> list[str | None]:
        if stop <= start:
            return []
        values = self.redis.hmget(self._keys(barrier_id)[1], [str(i) for i in range(start, stop)])
        return [None if v is None else _text(v) for v in values]

    def mark_dispatched(self, barrier_id: str, token: str, now: float) -> bool:
        return bool(self._mark(keys=[self._keys(barrier_id)[0]], args=[token, repr(now)]))

    def _move(self, barrier_id: str, app: str | None, sources: tuple[BarrierState, ...],
              target: BarrierState, now: float, token: str = "", reason: str | None = None,
              outcome: str | None = None, due: float | None = None,
              stale_before: float | None = None) -> Barrier | None:
        b, p, h = self._keys(barrier_id)
        if app is None:
            app = _text(self.redis.hget(b, "app") or b"")
        after = self._transition(
            keys=[b, self._due(app), p, h],
            args=[",".join(s.value for s in sources), target.value, repr(now), token, barrier_id,
                  reason or "", outcome or "", "" if due is None else repr(due), int(self.keep),
                  "" if stale_before is None else repr(stale_before)])
        return None if after is None else _barrier(barrier_id, _pairs(after))

    def finish(self, barrier_id: str, state: BarrierState, now: float, outcome: str | None = None,
               reason: str | None = None, app: str | None = None) -> bool:
        return self._move(barrier_id, app, (BarrierState.DISPATCHED, BarrierState.DISPATCHING),
                          state, now, reason=reason, outcome=outcome) is not None

    def fail(self, barrier_id: str, reason: str, now: float, token: str) -> Barrier | None:
        return self._move(barrier_id, None, IN_FLIGHT, BarrierState.FAILED, now, token=token,
                          reason=reason)

    def reclaim(self, barrier_id: str, now: float, token: str,
                grace: float = CLAIM_GRACE) -> Barrier | None:
        return self._move(barrier_id, None, (BarrierState.DISPATCHING,),
                          BarrierState.DISPATCHING, now, token=token, due=now + grace,
                          stale_before=now - grace)

    def get(self, barrier_id: str, with_header_ids: bool = False) -> Barrier | None:
        b, _, h = self._keys(barrier_id)
        data = self.redis.hgetall(b)
        if not data:
            return None
        barrier = _barrier(barrier_id, {_text(k): _text(v) for k, v in data.items()})
        if with_header_ids:
            raw = self.redis.get(h)
            barrier.header_ids = json.loads(raw) if raw else []
        return barrier

    def in_flight(self, app: str) -> list[Barrier]:
        return self._many(self.redis.zrange(self._due(app), 0, -1))

    def due(self, app: str, now: float, limit: int = 500) -> list[Barrier]:
        return self._many(self.redis.zrangebyscore(self._due(app), "-inf", now, 0, limit))

    def _many(self, ids: list[Any]) -> list[Barrier]:
        ids = [_text(i) for i in ids]
        pipe = self.redis.pipeline(transaction=False)
        for barrier_id in ids:
            pipe.hgetall(self._keys(barrier_id)[0])
        found = []
        for barrier_id, data in zip(ids, pipe.execute(), strict=True):
            if data:
                found.append(_barrier(barrier_id, {_text(k): _text(v) for k, v in data.items()}))
        return found

    def purge(self, app: str, before: float) -> int:
        return 0  # finished barriers' keys expire ``keep`` seconds after they end

    def lock(self, name: str, holder: str, ttl: float, now: float) -> bool:
        return bool(self._lock(keys=[f"{PREFIX}lock:{name}"], args=[holder, int(ttl * 1000)]))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(encoded: Any) -> dict[str, str]:
    flat = json.loads(_text(encoded))
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _fields(barrier: Barrier) -> dict[str, Any]:
    row = to_row(barrier)
    del row["header_ids"]  # kept apart under h:<id>
    return {k: v for k, v in row.items() if v is not None}


def _barrier(barrier_id: str, f: dict[str, str]) -> Barrier:
    return from_row(Barrier, f, id=barrier_id)
