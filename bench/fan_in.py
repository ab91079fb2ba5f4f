"""``fan_in="store"`` against Celery's own joins: fan-in latency, throughput, statements.

    python bench/fan_in.py [--latency-chords 30] [--chords 40] [--headers 25] [--rounds 3]
                           [--store-port PORT] [--pool threads|prefork]

The broker (and the trace lists) is ``CG_TEST_REDIS`` (default the shared 6379). The same
canvas code, ``chord(header)(callback)``, runs in five real clusters side by side, each with
one ``celery worker -P threads -c 4`` (``--pool prefork``: Celery's default pool), all alive
for the whole run:

* ``unlock-pg``: Celery's ``chord_unlock`` on a ``db+postgresql`` result backend;
* ``store-pg``: the same backend, ``chordguard.install(app, fan_in="store")``, PostgreSQL store;
* ``store-redis``: the same backend, ``fan_in="store"``, Redis store;
* ``celery-redis``: Celery's native Redis chord (Redis result backend), the throughput bar;
* ``redis+store``: the same Redis result backend, ``fan_in="store"`` with the Redis store in
  place of Celery's counter keys.

The stores and the result backend live on private servers made for the run (``durable_fanin``'s
``PrivateRedis`` and ``PrivateDatabase``), so every transaction they count is the
benchmark's. Latency: chords of 4 ``t.stamp`` headers and a ``t.fanin`` callback recording
``time it started - latest header finish``, one chord at a time per mode, modes interleaved.
Throughput: K chords x N no-op headers published at once, until every callback has run.
"""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.durable_fanin import (  # noqa: E402
    LATENCY_HEADERS,
    Bench,
    PrivateDatabase,
    PrivateRedis,
    arguments,
    measure,
    report,
    running,
)
from tests.cluster import REDIS_URL, Cluster  # noqa: E402

MODES = ("unlock-pg", "store-pg", "store-redis", "celery-redis", "redis+store")
COUNTED_CHORDS = 10


class FanInBench(Bench):
    """``Bench``'s latency and throughput runs over this benchmark's five clusters."""

    def __init__(self, tmp: Path, private_redis: PrivateRedis, store_db: PrivateDatabase,
                 backend_db: PrivateDatabase, pool: str = "threads") -> None:
        self.servers = (private_redis, store_db, backend_db)
        backend = "db+" + backend_db.url

        def store(url: str) -> dict:
            # no reaper pass inside the counted window (chords end long before a deadline)
            return {"guard": {"store": url, "fan_in": "store", "reaper_interval": 3600}}

        self.trace = redis.Redis.from_url(REDIS_URL)
        self.clusters = {
            "unlock-pg": Cluster(REDIS_URL, backend, {}, tmp),
            "store-pg": Cluster(REDIS_URL, backend, store(store_db.url), tmp),
            "store-redis": Cluster(REDIS_URL, backend, store(private_redis.url), tmp),
            "celery-redis": Cluster(REDIS_URL, REDIS_URL, {}, tmp),
            "redis+store": Cluster(REDIS_URL, REDIS_URL, store(private_redis.url), tmp),
        }
        for cluster in self.clusters.values():
            cluster.start_worker(pool=pool, concurrency=4)
        self.keys = []

    def unlock_tasks(self, mode: str) -> int:
        log = self.clusters[mode].workers[0].output()
        return len(re.findall(r"Task celery\.chord_unlock\[[^]]+\] received", log))


def main() -> None:
    args = arguments()
    with running(FanInBench, args) as bench:
        private_redis, store_db, _ = bench.servers
        timings = measure(bench, MODES, args)
        n = COUNTED_CHORDS
        unlocks_before = {m: bench.unlock_tasks(m) for m in MODES[:3]}
        private_redis.count_commands()
        redis_before = private_redis.snapshot()
        store_before = store_db.transactions()
        for _ in range(n):
            for mode in ("store-pg", "store-redis", "unlock-pg"):
                bench.latency(mode)
        redis_after = private_redis.snapshot()
        store_after = store_db.transactions()
        unlocks = {m: bench.unlock_tasks(m) - unlocks_before[m] for m in MODES[:3]}

    report(timings, args)
    latency = {m: statistics.median(v) for m, v in timings.latencies.items()}
    speed = {m: statistics.median(v) for m, v in timings.durations.items()}
    for mode, join in (("store-pg", "unlock-pg"), ("store-redis", "unlock-pg"),
                       ("redis+store", "celery-redis")):
        print(f"  {mode}: fan-in {latency[join] / latency[mode]:.2f}x as fast as {join}'s; "
              f"throughput {speed['celery-redis'] / speed[mode]:.2f}x celery-redis's")
    commands = {c: redis_after.get(c, 0) - redis_before.get(c, 0) for c in redis_after}
    commands = {c: v for c, v in sorted(commands.items()) if v}
    print(f"\nover {n} more chords x {LATENCY_HEADERS} headers per mode:")
    print("  chord_unlock tasks per chord: "
          + ", ".join(f"{m} {unlocks[m] / n:.1f}" for m in MODES[:3]))
    print(f"  store-pg store transactions per chord: {(store_after - store_before) / n:.1f} "
          f"(parts + 3 = {LATENCY_HEADERS + 3})")
    print(f"  store-redis client commands per chord: {sum(commands.values()) / n:.1f} "
          f"{commands}")


if __name__ == "__main__":
    main()
