"""The Redis store's barriers: one hash per barrier, one hash of part envelopes, one Lua
call per part (``lua.COMPLETE``, on the barrier's slot only), keys as ``keys`` lays them
out. The app's ``due`` index is written when a barrier is created, claimed or moved — never
by a completion that only counts — and ``due_barriers`` re-scores an entry found early."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ...errors import BarrierExists
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
from . import keys, lua


class RedisBarriers:
    """The ``Barriers`` half of ``RedisStore`` (which supplies ``client`` and ``_eval``)."""

    client: Any  # redis.Redis or redis.cluster.RedisCluster
    keep: float = KEEP_SECONDS  # finished barriers' keys expire this long after they end
    _eval: Callable[[str, list[str], list[Any]], Any]

    def create_barrier(self, barrier: Barrier) -> None:
        b, _, h = keys.barrier(barrier.id)
        ttl = max(1, int(barrier.deadline_at - barrier.created_at + self.keep))
        row = to_row(barrier)
        header_ids = row.pop("header_ids")
        fields = [item for pair in row.items() if pair[1] is not None for item in pair]
        if not self._eval(lua.CREATE, [b, h], [ttl, header_ids, *fields]):
            raise BarrierExists(barrier.id)
        self.client.zadd(keys.due(barrier.app), {barrier.id: barrier.due_at()})

    def complete_part(self, barrier_id: str, index: int, envelope: str, failed: bool,
                      now: float, token: str, app: str = "", grace: float = CLAIM_GRACE,
                      reason: str = "") -> Completion:
        b, p, _ = keys.barrier(barrier_id)
        reply = self._eval(lua.COMPLETE, [b, p],
                           [index, envelope, int(failed), repr(now), token,
                            reason or f"header part {index} failed"])
        outcome = Outcome(_text(reply[0]))
        if outcome not in (Outcome.DISPATCH, Outcome.FAIL):
            return Completion(outcome)
        barrier = _barrier(barrier_id, reply[1])
        if outcome is Outcome.DISPATCH:  # the reaper looks again once the claim's grace ran
            self.client.zadd(keys.due(barrier.app),
                             {barrier_id: min(barrier.deadline_at, now + grace)})
        else:
            self.client.zrem(keys.due(barrier.app), barrier_id)
        envelopes = [_text(e) or None for e in reply[2:]] if outcome is Outcome.DISPATCH \
            and not barrier.by_reference else None
        return Completion(outcome, barrier, envelopes)

    def grow_barrier(self, barrier_id: str) -> int | None:
        index = int(self._eval(lua.GROW, [keys.barrier(barrier_id)[0]], []))
        return None if index < 0 else index

    def envelopes(self, barrier_id: str, start: int, stop: int) -> list[str | None]:
        if stop <= start:
            return []
        values = self.client.hmget(keys.barrier(barrier_id)[1],
                                   [str(i) for i in range(start, stop)])
        return [None if v is None else _text(v) for v in values]

    def mark_dispatched(self, barrier_id: str, token: str, now: float) -> bool:
        reply = self._eval(lua.MARK_DISPATCHED, [keys.barrier(barrier_id)[0]],
                           [token, repr(now)])
        if not reply:
            return False
        app, deadline_at = _text(reply[0]), float(_text(reply[1]))
        self.client.zadd(keys.due(app), {barrier_id: deadline_at})  # sent: due at the deadline
        return True

    def move_barrier(self, barrier_id: str, sources: tuple[BarrierState, ...],
                     target: BarrierState, now: float, token: str | None = None,
                     reason: str | None = None, outcome: str | None = None,
                     due: float | None = None, stale_before: float | None = None,
                     app: str | None = None) -> Barrier | None:
        b, p, h = keys.barrier(barrier_id)
        ends = target not in IN_FLIGHT
        after = self._eval(lua.TRANSITION, [b, p, h],
                           [",".join(s.value for s in sources), target.value, repr(now),
                            token or "", reason or "", outcome or "", int(ends),
                            int(self.keep), "" if stale_before is None else repr(stale_before)])
        if after is None:
            return None
        moved = _barrier(barrier_id, after)
        if ends:
            self.client.zrem(keys.due(moved.app), barrier_id)
        else:
            self.client.zadd(keys.due(moved.app), {barrier_id: now if due is None else due})
        return moved

    def barrier(self, barrier_id: str, with_header_ids: bool = False) -> Barrier | None:
        b, _, h = keys.barrier(barrier_id)
        data = self.client.hgetall(b)
        if not data:
            return None
        header_ids = self.client.get(h) if with_header_ids else None
        return from_row(Barrier, data, id=barrier_id,
                        **({"header_ids": header_ids} if header_ids else {}))

    def barriers_in_flight(self, app: str) -> list[Barrier]:
        entries = self.client.zrange(keys.due(app), 0, -1, withscores=True)
        return [barrier for barrier, _ in self._in_flight(app, entries)]

    def due_barriers(self, app: str, now: float, limit: int = 500) -> list[Barrier]:
        """Due entries, each checked against its barrier: a waiting one found early (its
        completions pushed it back) is re-scored to when it is due and left out."""
        found = self._in_flight(app, self.client.zrangebyscore(
            keys.due(app), "-inf", now, 0, limit, withscores=True))
        due = []
        for barrier, score in found:
            if barrier.state is not BarrierState.WAITING or barrier.due_at() <= now:
                due.append(barrier)
            else:
                self._eval(lua.RESCORE, [keys.due(app)],
                           [barrier.id, repr(score), repr(barrier.due_at())])
        return due

    def _in_flight(self, app: str, entries: list[tuple[Any, float]],
                   ) -> list[tuple[Barrier, float]]:
        """The in-flight barriers of ``app``'s due entries (and their scores); an entry
        whose barrier ended or expired is dropped from the index."""
        entries = [(_text(i), score) for i, score in entries]
        with self.client.pipeline(transaction=False) as pipe:
            for barrier_id, _ in entries:
                pipe.hgetall(keys.barrier(barrier_id)[0])
            rows = pipe.execute()
        found, stale = [], []
        for (barrier_id, score), data in zip(entries, rows, strict=True):
            barrier = from_row(Barrier, data, id=barrier_id) if data else None
            if barrier is not None and barrier.state in IN_FLIGHT:
                found.append((barrier, score))
            else:
                stale.append(barrier_id)
        if stale:
            self.client.zrem(keys.due(app), *stale)
        return found

    def purge_barriers(self, app: str, before: float) -> int:
        return 0  # finished barriers' keys expire ``keep`` seconds after they end


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _barrier(barrier_id: str, encoded: Any) -> Barrier:
    """A barrier from a script's ``cjson.encode(HGETALL)``: a flat field, value list."""
    flat = json.loads(_text(encoded))
    return from_row(Barrier, dict(zip(flat[::2], flat[1::2], strict=True)), id=barrier_id)
