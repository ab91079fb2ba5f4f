"""One 100,000-header chord end to end: durable_chord on Redis and on PostgreSQL, and
Celery's own Redis chord as the baseline.

    CG_TEST_REDIS=redis://127.0.0.1:7540/0 python bench/durable_scale.py \
        [--headers 100000] [--modes durable-redis,durable-pg,celery-redis] [--port 7541]

The broker (and nothing else) is ``CG_TEST_REDIS``. Each mode gets its own cluster: one
``celery worker -P threads -c 4`` runs the header tasks (``t.add``), a second one,
``-P solo`` on a queue of its own, runs only the callback (``t.tsum``: sums the results), so
that worker's peak RSS (``VmHWM``, reset through ``/proc/PID/clear_refs`` once it is up) is
what the callback cost. The stores are private servers made for the run: a ``redis-server``
on ``--port`` (durable-redis) and ``--port + 1`` (Celery's result backend), a fresh
PostgreSQL database (durable-pg). Store memory is Redis ``INFO used_memory`` after the
callback ran minus before the chord, and PostgreSQL's ``pg_total_relation_size`` of the
durable tables. The publisher's peak RSS is this process's ``VmHWM`` growth while it
published the chord.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from celery import chord
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chordguard.durable import durable_chord  # noqa: E402
from tests.cluster import PG_URL, REDIS_URL, Cluster  # noqa: E402

MODES = ("durable-redis", "durable-pg", "celery-redis")
DURABLE_TABLES = ("chordguard_durable_part", "chordguard_durable_barrier",
                  "chordguard_durable_header")


def private_redis(port: int, tmp: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server on port {port} did not start")


def used_memory(port: int) -> int:
    return int(redis.Redis(port=port).info("memory")["used_memory"])


def status_kb(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int | str) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f} MB"


class PrivateDatabase:
    def __init__(self) -> None:
        self.name = f"cgscale_{os.getpid()}"
        self.admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}"'))
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.url = PG_URL.rsplit("/", 1)[0] + "/" + self.name

    def table_bytes(self) -> dict[str, int]:
        engine = create_engine(self.url)
        try:
            with engine.connect() as conn:
                return {t: int(conn.execute(text("SELECT pg_total_relation_size(:t)"),
                                            {"t": t}).scalar_one()) for t in DURABLE_TABLES}
        finally:
            engine.dispose()

    def close(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :d"), {"d": self.name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}"'))
        self.admin.dispose()


def run_mode(mode: str, headers: int, tmp: Path, store: str | None, backend: str | None,
             ) -> dict:
    conf = {"cg_durable": True, "task_ignore_result": True, "chordguard_store": store} \
        if mode.startswith("durable") else {}
    cluster = Cluster(REDIS_URL, backend, conf, tmp)
    try:
        app = cluster.app
        callback_queue = cluster.queue + "-cb"
        cluster.start_worker(pool="threads", concurrency=4)
        solo = cluster.start_worker(queues=[callback_queue], pool="solo", concurrency=1)
        pid = solo.process.pid
        idle_kb = status_kb(pid, "VmRSS")
        reset_peak(pid)
        reset_peak("self")
        publisher_kb = status_kb("self", "VmRSS")
        started = time.perf_counter()
        header = [app.signature("t.add", (i, i)) for i in range(headers)]
        callback = app.signature("t.tsum", queue=callback_queue)
        if mode.startswith("durable"):
            handle = durable_chord(header, callback, app=app)
            published = time.perf_counter() - started
            total = handle.get(timeout=3600, interval=0.2)
        else:
            result = chord(header)(callback)
            published = time.perf_counter() - started
            total = result.get(timeout=3600, interval=0.2)
        elapsed = time.perf_counter() - started
        expected = sum(2 * i for i in range(headers))
        if total != expected:
            raise RuntimeError(f"{mode}: callback returned {total}, expected {expected}")
        return {"seconds": elapsed, "publish_seconds": published,
                "callback_idle_kb": idle_kb, "callback_peak_kb": status_kb(pid, "VmHWM"),
                "publisher_growth_kb": status_kb("self", "VmHWM") - publisher_kb}
    finally:
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--headers", type=int, default=100_000)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--port", type=int, default=7541,
                        help="private Redis store; Celery's backend gets PORT + 1")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}: choose from {', '.join(MODES)}")
    tmp = Path(tempfile.mkdtemp(prefix="cgscale-"))
    store_port, backend_port = args.port, args.port + 1
    servers = [private_redis(store_port, tmp), private_redis(backend_port, tmp)]
    database = PrivateDatabase() if "durable-pg" in modes else None
    print(f"{args.headers} headers; load average {os.getloadavg()[0]:.1f} (2 cores)", flush=True)
    try:
        for mode in modes:
            port = store_port if mode == "durable-redis" else backend_port
            before = used_memory(port)
            if mode == "durable-redis":
                found = run_mode(mode, args.headers, tmp, f"redis://127.0.0.1:{port}/0", None)
            elif mode == "durable-pg":
                assert database is not None
                found = run_mode(mode, args.headers, tmp, database.url, None)
            else:
                found = run_mode(mode, args.headers, tmp, None, f"redis://127.0.0.1:{port}/0")
            if mode == "durable-pg":
                assert database is not None
                sizes = database.table_bytes()
                store = f"{sum(sizes.values()) / 2**20:.1f} MB PostgreSQL tables (" + \
                    ", ".join(f"{t.removeprefix('chordguard_durable_')} "
                              f"{b / 2**20:.1f} MB" for t, b in sizes.items()) + ")"
            else:
                store = f"{(used_memory(port) - before) / 2**20:.1f} MB Redis used_memory"
            print(f"{mode:14} {found['seconds']:7.1f} s end to end "
                  f"({args.headers / found['seconds']:.0f} headers/s; published in "
                  f"{found['publish_seconds']:.1f} s); store {store}; callback worker peak "
                  f"RSS {mb(found['callback_peak_kb'])} (idle {mb(found['callback_idle_kb'])},"
                  f" +{mb(found['callback_peak_kb'] - found['callback_idle_kb'])}); "
                  f"publisher RSS growth {mb(found['publisher_growth_kb'])}", flush=True)
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
        if database is not None:
            database.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
