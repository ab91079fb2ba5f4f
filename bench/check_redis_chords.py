"""`chordguard check` over 10,000 in-flight Redis chords, against a Celery-native baseline.

    python bench/check_redis_chords.py [--chords 10000] [--rounds 3]

Chords are made the real way, with Celery's own Redis backend calls (``set_chord_size``,
then ``store_result`` + ``on_chord_part_return`` for 0-2 of 4 header parts each), under a key
prefix of their own (``result_backend_transport_options['global_keyprefix']``), and deleted
afterwards. Both sides run as fresh processes, end to end, against the same keys:

* chordguard: ``chordguard -A bench.check_redis_chords check --max-hours 1``;
* baseline: what Celery offers to read a chord's state: nothing lists chords, so the group
  ids are found with the same SCAN, then per chord the backend's own calls, one at a time as
  Celery's code does (``backend.get`` of ``.s``, ``ZCARD``/``GET`` of ``.j``/``.t``, ``TTL``
  of ``.s``): size, progress and time left, less than chordguard reports.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from celery import Celery, states
from celery.app.task import Context

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("CG_TEST_REDIS", "redis://127.0.0.1:6379/0")
PREFIX_ENV = "CG_BENCH_PREFIX"
HEADER = 4


def make_app(prefix: str) -> Celery:
    app = Celery("bench-redis-chords", broker=REDIS_URL, backend=REDIS_URL)
    app.conf.update(result_backend_transport_options={"global_keyprefix": prefix},
                    broker_transport_options={"global_keyprefix": prefix},
                    result_serializer="json", task_serializer="json", accept_content=["json"])
    return app


app = make_app(os.environ[PREFIX_ENV]) if os.environ.get(PREFIX_ENV) else None


def create(app: Celery, count: int) -> None:
    """``count`` in-flight chords of HEADER parts, ``i % 3`` of them returned."""
    backend = app.backend
    callback = app.signature("bench.callback")
    callback.freeze()
    for i in range(count):
        gid = str(uuid.uuid4())
        backend.set_chord_size(gid, HEADER)
        for index in range(i % 3):
            request = Context(id=str(uuid.uuid4()), group=gid, group_index=index,
                              chord=dict(callback))
            backend.store_result(request.id, index, states.SUCCESS, request=request)
            backend.on_chord_part_return(request, states.SUCCESS, index)


def baseline(app: Celery) -> int:
    """Celery-native: per chord, the backend's own one-at-a-time reads."""
    backend = app.backend
    client = backend.client
    prefix = backend.group_keyprefix
    ids = {key[len(prefix):-2] for key in client.scan_iter(match=prefix + b"*.s", count=5000)}
    seen = 0
    for gid in ids:
        size = backend.get(prefix + gid + b".s")
        done = client.zcard(prefix + gid + b".j")
        extra = client.get(prefix + gid + b".t")
        ttl = client.ttl(prefix + gid + b".s")
        seen += size is not None and done <= int(size) + int(extra or 0) and ttl != -2
    return seen


def delete_all(app: Celery, prefix: str) -> int:
    client = app.backend.client
    removed = 0
    for key in list(client.scan_iter(match=prefix + "*", count=5000)):
        removed += client.delete(key)
    return removed


def timed(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    return time.perf_counter() - start, proc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chords", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.baseline:  # the baseline's own process
        print(baseline(app))
        return
    prefix = f"cgbench{uuid.uuid4().hex[:8]}:"
    env = {**os.environ, PREFIX_ENV: prefix,
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    bench_app = make_app(prefix)
    check = [sys.executable, "-m", "chordguard", "-A", "bench.check_redis_chords", "check",
             "--max-hours", "1"]
    base = [sys.executable, str(Path(__file__).resolve()), "--baseline"]
    try:
        started = time.perf_counter()
        create(bench_app, opts.chords)
        print(f"created {opts.chords} chords in {time.perf_counter() - started:.1f} s "
              f"(load average {os.getloadavg()[0]:.2f})")
        ours, theirs = [], []
        for _ in range(opts.rounds):
            seconds, proc = timed(check, env)
            assert proc.returncode == 0 and f"{opts.chords} in flight" in proc.stdout, \
                proc.stdout + proc.stderr
            ours.append(seconds)
            seconds, proc = timed(base, env)
            assert proc.stdout.strip() == str(opts.chords), proc.stdout + proc.stderr
            theirs.append(seconds)
        mine, celery_s = statistics.median(ours), statistics.median(theirs)
        print(f"chordguard check: median {mine:.2f} s  "
              f"(rounds {', '.join(f'{s:.2f}' for s in ours)})")
        print(f"celery baseline:  median {celery_s:.2f} s  "
              f"(rounds {', '.join(f'{s:.2f}' for s in theirs)})")
        print(f"ratio check / baseline: {mine / celery_s:.2f}  "
              f"(load average {os.getloadavg()[0]:.2f})")
    finally:
        print(f"deleted {delete_all(bench_app, prefix)} bench keys")


if __name__ == "__main__":
    main()
