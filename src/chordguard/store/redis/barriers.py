"""The Redis store's barriers: one hash per barrier, one hash of part envelopes, one Lua
call per part (``lua.COMPLETE``), keys as ``keys`` lays them out."""

from __future__ import annotations

import json
from typing import Any

import redis

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
from . import keys


class RedisBarriers:
    """The ``Barriers`` half of ``RedisStore`` (which supplies ``client`` and the scripts)."""

    client: redis.Redis
    keep: float = KEEP_SECONDS  # finished barriers' keys expire this long after they end
    _complete: Any
    _transition: Any
    _mark: Any

    def create_barrier(self, barrier: Barrier) -> None:
        b, _, h = keys.barrier(barrier.id)
        ttl = max(1, int(barrier.deadline_at - barrier.created_at + self.keep))
        row = to_row(barrier)
        header_ids = row.pop("header_ids")
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(b, mapping={k: v for k, v in row.items() if v is not None})
        pipe.set(h, header_ids, ex=ttl)
        pipe.expire(b, ttl)
        pipe.zadd(keys.due(barrier.app), {barrier.id: barrier.due_at()})
        pipe.execute()

    def complete_part(self, barrier_id: str, index: int, envelope: str, failed: bool,
                      now: float, token: str, app: str = "", grace: float = CLAIM_GRACE,
                      reason: str = "") -> Completion:
        b, p, _ = keys.barrier(barrier_id)
        reply = self._complete(keys=[b, p, keys.due(app)],
                               args=[index, envelope, int(failed), repr(now), token, barrier_id,
                                     grace, reason or f"header part {index} failed"])
        outcome = Outcome(_text(reply[0]))
        if outcome not in (Outcome.DISPATCH, Outcome.FAIL):
            return Completion(outcome)
        barrier = _barrier(barrier_id, reply[1])
        envelopes = [_text(e) or None for e in reply[2:]] if outcome is Outcome.DISPATCH \
            and not barrier.by_reference else None
        return Completion(outcome, barrier, envelopes)

    def envelopes(self, barrier_id: str, start: int, stop: int) -> list[str | None]:
        if stop <= start:
            return []
        values = self.client.hmget(keys.barrier(barrier_id)[1],
                                   [str(i) for i in range(start, stop)])
        return [None if v is None else _text(v) for v in values]

    def mark_dispatched(self, barrier_id: str, token: str, now: float) -> bool:
        return bool(self._mark(keys=[keys.barrier(barrier_id)[0]], args=[token, repr(now)]))

    def move_barrier(self, barrier_id: str, sources: tuple[BarrierState, ...],
                     target: BarrierState, now: float, token: str | None = None,
                     reason: str | None = None, outcome: str | None = None,
                     due: float | None = None, stale_before: float | None = None,
                     app: str | None = None) -> Barrier | None:
        b, p, h = keys.barrier(barrier_id)
        if app is None:
            app = _text(self.client.hget(b, "app") or b"")
        if target in IN_FLIGHT and due is None:
            due = now
        after = self._transition(
            keys=[b, keys.due(app), p, h],
            args=[",".join(s.value for s in sources), target.value, repr(now), token or "",
                  barrier_id, reason or "", outcome or "",
                  "" if target not in IN_FLIGHT else repr(due), int(self.keep),
                  "" if stale_before is None else repr(stale_before)])
        return None if after is None else _barrier(barrier_id, after)

    def barrier(self, barrier_id: str, with_header_ids: bool = False) -> Barrier | None:
        b, _, h = keys.barrier(barrier_id)
        data = self.client.hgetall(b)
        if not data:
            return None
        header_ids = self.client.get(h) if with_header_ids else None
        return from_row(Barrier, data, id=barrier_id,
                        **({"header_ids": header_ids} if header_ids else {}))

    def barriers_in_flight(self, app: str) -> list[Barrier]:
        return self._many(self.client.zrange(keys.due(app), 0, -1))

    def due_barriers(self, app: str, now: float, limit: int = 500) -> list[Barrier]:
        return self._many(self.client.zrangebyscore(keys.due(app), "-inf", now, 0, limit))

    def _many(self, ids: list[Any]) -> list[Barrier]:
        ids = [_text(i) for i in ids]
        pipe = self.client.pipeline(transaction=False)
        for barrier_id in ids:
            pipe.hgetall(keys.barrier(barrier_id)[0])
        return [from_row(Barrier, data, id=barrier_id)
                for barrier_id, data in zip(ids, pipe.execute(), strict=True) if data]

    def purge_barriers(self, app: str, before: float) -> int:
        return 0  # finished barriers' keys expire ``keep`` seconds after they end


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _barrier(barrier_id: str, encoded: Any) -> Barrier:
    """A barrier from a script's ``cjson.encode(HGETALL)``: a flat field, value list."""
    flat = json.loads(_text(encoded))
    return from_row(Barrier, dict(zip(flat[::2], flat[1::2], strict=True)), id=barrier_id)
