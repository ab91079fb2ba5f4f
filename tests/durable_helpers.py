"""Shared pieces of the durable_chord tests: store URLs, barrier records, traces in Redis."""

from __future__ import annotations

import json
import re
import time
import uuid

import redis

from chordguard.durable.barrier import Barrier, BarrierState, Policy
from tests.cluster import PG_URL, REDIS_URL, wait_for

STORES = {"redis": REDIS_URL, "postgres": PG_URL}


def new_barrier(total: int, app: str, policy: Policy = Policy.FAIL, deadline: float = 60.0,
                stall: float = 30.0) -> Barrier:
    now = time.time()
    return Barrier(id=uuid.uuid4().hex, app=app, state=BarrierState.WAITING, policy=policy,
                   total=total, remaining=total,
                   callback={"task": "t.collect", "args": [], "kwargs": {},
                             "options": {"task_id": uuid.uuid4().hex}},
                   callback_id=uuid.uuid4().hex, created_at=now, updated_at=now,
                   deadline_at=now + deadline, stall_seconds=stall,
                   header_ids=[uuid.uuid4().hex for _ in range(total)])


def ran_each_twice(worker, handle, trace: Trace, parts: int = 4) -> None:
    """``worker`` ran each of ``parts`` echo headers twice, the callback once with them."""
    assert handle.get(timeout=30) == parts
    wait_for(lambda: len(re.findall(r"Task t\.echo\[[^]]+\] succeeded", worker.output()))
             == 2 * parts, what="every header delivery to run")
    time.sleep(0.5)
    assert trace.entries() == [list(range(parts))]


class Trace:
    """A Redis list a test task appends to: how many times (and with what) something ran."""

    def __init__(self) -> None:
        self.key = "cgtest:trace:" + uuid.uuid4().hex
        self.redis = redis.Redis.from_url(REDIS_URL)

    def entries(self) -> list:
        return [json.loads(v) for v in self.redis.lrange(self.key, 0, -1)]

    def close(self) -> None:
        self.redis.delete(self.key)
