"""Where the fan-in time of a ``fan_in="store"`` chord on a ``db+postgresql`` backend goes.

    python bench/fan_in_path.py [--chords 30] [--store pg|redis] [--concurrency 4]

One worker with Celery's defaults (prefork) runs chords of 4 ``stamp`` headers (each returns
the wall time it finished) and a ``fanin`` callback, one chord at a time. The worker's app
(this module, ``-A bench.fan_in_path``) times three steps of each chord's fan-in, in order:

1. the last header finished -> Celery's result backend stored its result (the last
   ``DatabaseBackend._store_result`` to end; Celery calls the join only after it);
2. -> chordguard recorded the part in its store, claimed the dispatch and published the
   callback (the end of ``publish_callback``);
3. -> the callback started in a worker process.

Step 1 is Celery's own (every join on this backend waits for it); steps 2 and 3 are the
store's join and the broker. Events go to a Redis list on the broker (``CG_TEST_REDIS``).

    python bench/fan_in_path.py --groups 40 --headers 25 [--rounds 3]

The floor of ``bench/fan_in.py``'s throughput run on this backend instead: 40 groups of 25
``add`` tasks published at once, no chord, no join, timed until the backend holds every
result (one ``count(*)`` every 20 ms): what Celery's result writes alone cost.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis
from celery import Celery, chord, group
from celery.backends.database import DatabaseBackend
from sqlalchemy import create_engine, text

import chordguard
from chordguard.durable import dispatch

ROOT = Path(__file__).resolve().parent.parent
BROKER = os.environ.get("CG_TEST_REDIS", "redis://127.0.0.1:6379/0")
PG = os.environ.get("CG_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
EVENTS = os.environ.get("CG_BENCH_EVENTS", "cg-bench-fan-in-path")
HEADERS = 4

app = Celery("bench-fan-in-path", broker=BROKER, backend="db+" + PG)
app.conf.update(result_serializer="json", task_serializer="json", accept_content=["json"])
chordguard.install(app, fan_in="store", store=os.environ.get("CG_BENCH_STORE", PG))
events = redis.Redis.from_url(BROKER)


def _event(name: str, start: float, end: float) -> None:
    events.rpush(EVENTS, json.dumps([name, start, end]))


def _timed(name: str, fn):
    def timed(*args, **kwargs):
        start = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            _event(name, start, time.time())
    return timed


DatabaseBackend._store_result = _timed("stored", DatabaseBackend._store_result)
dispatch.publish_callback = _timed("published", dispatch.publish_callback)


@app.task(name="bench.stamp")
def stamp(value: int) -> float:
    return time.time()


@app.task(name="bench.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="bench.fanin")
def fanin(stamps: list[float]) -> None:
    _event("callback", max(stamps), time.time())


def steps(chords: list[list[list]]) -> dict[str, list[float]]:
    """Milliseconds of each step, per chord (its events, in the order they were pushed)."""
    out: dict[str, list[float]] = {"1. last header -> result stored (Celery)": [],
                                   "2. -> recorded, claimed, published (chordguard)": [],
                                   "3. -> callback started (broker, worker)": [],
                                   "fan-in (1 + 2 + 3)": []}
    for chord_events in chords:
        callback = next(e for e in chord_events if e[0] == "callback")
        finished, started = callback[1], callback[2]
        stored = max(e[2] for e in chord_events if e[0] == "stored" and e[2] <= started)
        published = max(e[2] for e in chord_events if e[0] == "published")
        for name, ms in zip(out, ((stored - finished), (published - stored),
                                  (started - published), (started - finished)),
                            strict=True):
            out[name].append(ms * 1000)
    return out


def ended(key: str, timeout: float = 30.0) -> list[list]:
    """The chord's events once its callback has started (read off the broker's Redis, so
    waiting adds no load to the result backend)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pushed = [json.loads(raw) for raw in events.lrange(key, 0, -1)]
        if any(e[0] == "callback" for e in pushed):
            time.sleep(0.2)  # the callback's own result write, off the measured path
            return pushed
        time.sleep(0.05)
    raise TimeoutError(f"no callback within {timeout:.0f} s")


def floor(groups: int, size: int, rounds: int, concurrency: int) -> None:
    """Rounds of ``groups`` x ``size`` results stored, timed (see the module docstring)."""
    engine = create_engine(PG)
    times = []
    for _ in range(rounds):
        ids: list[str] = []
        started = time.perf_counter()
        for _ in range(groups):
            ids += [r.id for r in group(add.s(i, i) for i in range(size)).apply_async().results]
        with engine.connect() as conn:
            count = text("SELECT count(*) FROM celery_taskmeta WHERE task_id = ANY(:ids) "
                         "AND status = 'SUCCESS'")
            while conn.execute(count, {"ids": ids}).scalar() < len(ids):
                time.sleep(0.02)
        times.append(time.perf_counter() - started)
    print(f"{groups} groups x {size} tasks, results on db+postgresql, no join, prefork "
          f"-c {concurrency}: median {statistics.median(times):.2f} s, best {min(times):.2f} s "
          f"(rounds {', '.join(f'{t:.2f}' for t in times)}; load average "
          f"{os.getloadavg()[0]:.2f})")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chords", type=int, default=30)
    parser.add_argument("--store", choices=("pg", "redis"), default="pg")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--groups", type=int, help="time this many groups' results instead")
    parser.add_argument("--headers", type=int, default=25, help="tasks per group")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --groups")
    opts = parser.parse_args()
    store = PG if opts.store == "pg" else BROKER
    if os.environ.get("CG_BENCH_STORE", PG) != store:  # this process's app joins there too
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, "CG_BENCH_STORE": store})
    key = f"cg-bench-fan-in-path-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "CG_BENCH_EVENTS": key,
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench.fan_in_path",
                               "worker", "-c", str(opts.concurrency), "-l", "WARNING"],
                              env=env, cwd=ROOT, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not app.control.ping(timeout=0.5):
            assert worker.poll() is None, "the worker exited"
        if opts.groups:
            floor(opts.groups, opts.headers, opts.rounds, opts.concurrency)
            return
        chords = []
        for i in range(opts.chords + 1):  # the first warms every worker process up
            events.delete(key)
            chord([stamp.s(n) for n in range(HEADERS)])(fanin.s())
            pushed = ended(key)
            if i:
                chords.append(pushed)
        print(f"{opts.chords} chords of {HEADERS} headers, db+postgresql backend, "
              f"store {opts.store}, prefork -c {opts.concurrency} "
              f"(load average {os.getloadavg()[0]:.2f})")
        for name, values in steps(chords).items():
            print(f"  {name:48} p50 {statistics.median(values):6.2f} ms  "
                  f"p90 {sorted(values)[int(len(values) * 0.9)]:6.2f} ms")
    finally:
        os.killpg(worker.pid, 9)
        worker.wait()
        events.delete(key)


if __name__ == "__main__":
    main()
