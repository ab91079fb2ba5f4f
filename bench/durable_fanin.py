"""durable_chord against Celery's own chords: fan-in latency, throughput, store round trips.

    python bench/durable_fanin.py [--latency-chords 30] [--chords 40] [--headers 25]
                                  [--rounds 3] [--store-port PORT] [--pool threads|prefork]

The broker (and the trace lists) is ``CG_TEST_REDIS`` (default the shared 6379).

Four real clusters run side by side, each with one ``celery worker -P threads -c 4`` on the
Redis broker, all alive for the whole run so every mode sees the same machine load:

* ``celery-redis``: Celery's native Redis chord (Redis result backend);
* ``celery-unlock``: Celery's ``chord_unlock`` on a PostgreSQL result backend (``db+``);
* ``durable-redis``: ``durable_chord`` with a Redis store, no result backend;
* ``durable-pg``: ``durable_chord`` with a PostgreSQL store, no result backend.

The durable stores and the unlock backend live on private servers made for the run (a
``redis-server`` on a free port, a fresh PostgreSQL database), so every command and
transaction they see comes from the benchmark: Redis commands are counted with MONITOR
(client commands only, not those a Lua script runs), PostgreSQL transactions with
``pg_stat_database.xact_commit``.

Latency: chords of 4 ``t.stamp`` headers (each returns the wall time it finished) and a
``t.fanin`` callback that records ``time it started - latest header finish``, one chord at a
time per mode, modes interleaved. Throughput: K chords x N no-op ``t.add`` headers published
at once, until every callback has run; rounds interleave the modes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from celery import chord
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chordguard.durable import durable_chord  # noqa: E402
from tests.cluster import PG_URL, REDIS_URL, Cluster  # noqa: E402

LATENCY_HEADERS = 4
COUNTED_CHORDS = 10
MODES = ("celery-redis", "celery-unlock", "durable-redis", "durable-pg")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """A throwaway redis-server, and a MONITOR that counts client commands by name."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def count_commands(self) -> None:
        """Start counting client commands (MONITOR slows the server: not while timing)."""
        threading.Thread(target=self._monitor, daemon=True).start()
        time.sleep(0.3)

    def _monitor(self) -> None:
        client = redis.Redis.from_url(self.url, socket_timeout=None)
        with client.monitor() as monitor:
            while not self._stop.is_set():
                try:
                    event = monitor.next_command()
                except redis.TimeoutError:
                    continue
                except redis.ConnectionError:  # the server was stopped at the end of the run
                    return
                raw = event.get("command", "")
                name = raw.split(" ", 1)[0].upper() if raw else ""
                if event.get("client_type") == "lua" or not name:
                    continue
                with self._lock:
                    self.counts[name] = self.counts.get(name, 0) + 1

    def snapshot(self) -> dict[str, int]:
        time.sleep(0.5)  # let MONITOR catch up
        with self._lock:
            return dict(self.counts)

    def close(self) -> None:
        self._stop.set()
        self.process.terminate()
        self.process.wait(10)


class PrivateDatabase:
    """A fresh PostgreSQL database for the run; transactions counted from pg_stat_database."""

    def __init__(self) -> None:
        self.name = "cgbench_" + uuid.uuid4().hex[:8]
        self.admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.url = PG_URL.rsplit("/", 1)[0] + "/" + self.name

    def transactions(self) -> int:
        time.sleep(11)  # an idle backend flushes its statistics after 10 s (PostgreSQL 15)
        with self.admin.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            return int(conn.execute(text(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :d"),
                {"d": self.name}).scalar_one())

    def close(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": self.name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}"'))
        self.admin.dispose()


class Bench:
    def __init__(self, tmp: Path, private_redis: PrivateRedis, store_db: PrivateDatabase,
                 backend_db: PrivateDatabase, pool: str = "threads") -> None:
        self.servers = (private_redis, store_db, backend_db)
        self.trace = redis.Redis.from_url(REDIS_URL)
        durable = {"cg_durable": True, "task_ignore_result": True}
        self.clusters = {
            "celery-redis": Cluster(REDIS_URL, REDIS_URL, {}, tmp),
            "celery-unlock": Cluster(REDIS_URL, "db+" + backend_db.url, {}, tmp),
            "durable-redis": Cluster(REDIS_URL, None,
                                     {**durable, "chordguard_store": private_redis.url}, tmp),
            "durable-pg": Cluster(REDIS_URL, None, {**durable, "chordguard_store": store_db.url},
                                  tmp),
        }
        for cluster in self.clusters.values():
            cluster.start_worker(pool=pool, concurrency=4)
        self.keys: list[str] = []

    def key(self) -> str:
        key = "cgbench:" + uuid.uuid4().hex
        self.keys.append(key)
        return key

    def run_chord(self, mode: str, header: list, callback) -> None:
        app = self.clusters[mode].app
        if mode.startswith("durable"):
            durable_chord(header, callback, app=app)
        else:
            chord(header)(callback)

    def latency(self, mode: str) -> float:
        app = self.clusters[mode].app
        key = self.key()
        header = [app.signature("t.stamp", (i,)) for i in range(LATENCY_HEADERS)]
        self.run_chord(mode, header, app.signature("t.fanin", kwargs={"key": key}))
        _, raw = self.trace.blpop([key], timeout=60) or (None, None)
        if raw is None:
            raise RuntimeError(f"{mode}: the callback did not run within 60 s")
        return json.loads(raw)["latency"]

    def throughput(self, mode: str, chords: int, headers: int) -> float:
        app = self.clusters[mode].app
        key = self.key()
        started = time.perf_counter()
        for _ in range(chords):
            header = [app.signature("t.add", (i, i)) for i in range(headers)]
            self.run_chord(mode, header, app.signature("t.fanin", kwargs={"key": key}))
        end = time.monotonic() + 300
        while self.trace.llen(key) < chords:
            if time.monotonic() > end:
                raise RuntimeError(f"{mode}: callbacks missing after 300 s")
            time.sleep(0.01)
        return time.perf_counter() - started

    def unlock_polls(self) -> int:
        log = self.clusters["celery-unlock"].workers[0].output()
        return len(re.findall(r"Task celery\.chord_unlock\[[^]]+\] received", log))

    def close(self) -> None:
        for cluster in self.clusters.values():
            cluster.close()
        if self.keys:
            self.trace.delete(*self.keys)


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f}"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-chords", type=int, default=30)
    parser.add_argument("--chords", type=int, default=40)
    parser.add_argument("--headers", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store-port", type=int, help="port of the private Redis store "
                        "(default: a free one)")
    parser.add_argument("--pool", choices=("threads", "prefork"), default="threads",
                        help="the workers' pool (-P; 4 of them)")
    return parser.parse_args()


@dataclass
class Timings:
    """Fan-in latencies and throughput durations per mode (s), and the load around them."""

    latencies: dict[str, list[float]]
    durations: dict[str, list[float]]
    load: tuple[float, float]


def measure(bench: Bench, modes: tuple[str, ...], args: argparse.Namespace) -> Timings:
    """Warm every mode up, then latency chords and throughput rounds, modes interleaved."""
    for mode in modes:  # connections, tables, scripts
        bench.latency(mode)
    load_before = os.getloadavg()[0]
    latencies: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.latency_chords):
        for mode in modes:
            latencies[mode].append(bench.latency(mode))
    durations: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:
            durations[mode].append(bench.throughput(mode, args.chords, args.headers))
    return Timings(latencies, durations, (load_before, os.getloadavg()[0]))


def report(timings: Timings, args: argparse.Namespace) -> None:
    """Print the load, each mode's latency (median, p90, max) and throughput."""
    print(f"load average {timings.load[0]:.1f} -> {timings.load[1]:.1f} (2 cores)")
    print(f"\nfan-in latency, {args.latency_chords} chords x {LATENCY_HEADERS} headers per mode "
          "(ms: median, p90, max)")
    for mode, values in timings.latencies.items():
        values = sorted(values)
        print(f"  {mode:14} {median_ms(values):>7} {values[int(0.9 * len(values))] * 1000:8.1f}"
              f" {values[-1] * 1000:8.1f}")
    total = args.chords * args.headers
    print(f"\nthroughput, {args.chords} chords x {args.headers} headers, {args.rounds} rounds "
          "(s: median; rounds)")
    for mode, durations in timings.durations.items():
        median = statistics.median(durations)
        print(f"  {mode:14} {median:7.2f}  {', '.join(f'{d:.2f}' for d in durations)}  "
              f"({total / median:.0f} headers/s)")


@contextmanager
def running(kind: type[Bench], args: argparse.Namespace) -> Iterator[Bench]:
    """``kind``'s clusters over a private Redis and two fresh databases (its store's and its
    result backend's), all removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="cgbench-"))
    private_redis = PrivateRedis(tmp, args.store_port)
    store_db, backend_db = PrivateDatabase(), PrivateDatabase()
    bench = None
    try:
        bench = kind(tmp, private_redis, store_db, backend_db, pool=args.pool)
        yield bench
    finally:
        if bench is not None:
            bench.close()
        private_redis.close()
        store_db.close()
        backend_db.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    args = arguments()
    with running(Bench, args) as bench:
        private_redis, store_db, backend_db = bench.servers
        timings = measure(bench, MODES, args)
        n, k = COUNTED_CHORDS, LATENCY_HEADERS
        private_redis.count_commands()
        redis_before = private_redis.snapshot()
        store_before, backend_before = store_db.transactions(), backend_db.transactions()
        polls_before = bench.unlock_polls()
        for _ in range(n):
            for mode in MODES:
                bench.latency(mode)
        redis_after = private_redis.snapshot()
        store_after, backend_after = store_db.transactions(), backend_db.transactions()
        polls = bench.unlock_polls() - polls_before

    commands = {c: redis_after.get(c, 0) - redis_before.get(c, 0) for c in redis_after}
    commands = {c: v for c, v in sorted(commands.items()) if v}
    report(timings, args)
    latencies, durations = timings.latencies, timings.durations
    base = statistics.median(latencies["celery-redis"])
    print(f"  ratio durable-redis / celery-redis: "
          f"{statistics.median(latencies['durable-redis']) / base:.2f}")
    unlock = statistics.median(latencies["celery-unlock"])
    print(f"  ratio durable-pg / celery-unlock: "
          f"{statistics.median(latencies['durable-pg']) / unlock:.4f}")
    celery_redis = statistics.median(durations["celery-redis"])
    for mode in ("durable-redis", "durable-pg"):
        print(f"  speed {mode} / celery-redis: "
              f"{celery_redis / statistics.median(durations[mode]):.2f}x")

    print(f"\nstore round trips over {n} more chords x {k} headers per mode (counted apart)")
    print(f"  durable-redis client commands: {commands}")
    per_header = commands.get("EVALSHA", 0) - 3 * n  # 3 per chord: create, mark, finish
    print(f"  durable-redis completion calls per header part: {per_header / (n * k):.2f}; "
          f"per chord of {k}: {sum(commands.values()) / n:.1f} commands")
    store_x, backend_x = store_after - store_before, backend_after - backend_before
    print(f"  durable-pg store transactions: {store_x} ({store_x / n:.1f} per chord of {k}, "
          f"{(store_x - 5 * n) / (n * k):.2f} per header part beyond 5 per chord)")
    print(f"  celery-unlock backend transactions: {backend_x} ({backend_x / n:.1f} per chord)")
    print(f"  celery chord_unlock polls: {polls} for {n} chords ({polls / n:.1f} per chord)")


if __name__ == "__main__":
    main()
