"""`chordguard check` over 10,000 in-flight Redis chords, against a Celery-native baseline.

    python bench/check_redis_chords.py [--chords 10000] [--rounds 3] [--redis URL]

(``--redis``, or ``CG_TEST_REDIS``: a private server for 100,000 chords, so the shared one
is not flooded.) Each round also reports the peak RSS of both processes (``wait4``).

Chords are made the real way, with Celery's own Redis backend calls (``set_chord_size``,
then ``store_result`` + ``on_chord_part_return`` for 0-2 of 4 header parts each) — the first
3,000; beyond that, byte-for-byte copies of their keys (DUMP/RESTORE) under new group ids —
under a key prefix of their own (``result_backend_transport_options['global_keyprefix']``),
and deleted afterwards. Both sides run as fresh processes, end to end, against the same keys:

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
import tempfile
import time
import uuid
from pathlib import Path

from celery import Celery, states
from celery.app.task import Context

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("CG_TEST_REDIS", "redis://127.0.0.1:6379/0")
PREFIX_ENV = "CG_BENCH_PREFIX"
HEADER = 4
REAL_CHORDS = 3000  # made through Celery's backend calls; more are copies of these


def make_app(prefix: str) -> Celery:
    app = Celery("bench-redis-chords", broker=REDIS_URL, backend=REDIS_URL)
    app.conf.update(result_backend_transport_options={"global_keyprefix": prefix},
                    broker_transport_options={"global_keyprefix": prefix},
                    result_serializer="json", task_serializer="json", accept_content=["json"])
    return app


app = make_app(os.environ[PREFIX_ENV]) if os.environ.get(PREFIX_ENV) else None


def create(app: Celery, count: int) -> None:
    """``count`` in-flight chords of HEADER parts, ``i % 3`` of them returned: the first
    REAL_CHORDS made through Celery's backend, the rest byte-for-byte copies of their keys
    under new group ids (``clone``), so 100,000 take seconds to make, not an hour."""
    backend = app.backend
    callback = app.signature("bench.callback")
    callback.freeze()
    made = []
    for i in range(min(count, REAL_CHORDS)):
        gid = str(uuid.uuid4())
        made.append(gid)
        backend.set_chord_size(gid, HEADER)
        for index in range(i % 3):
            request = Context(id=str(uuid.uuid4()), group=gid, group_index=index,
                              chord=dict(callback))
            backend.store_result(request.id, index, states.SUCCESS, request=request)
            backend.on_chord_part_return(request, states.SUCCESS, index)
    clone(app, made, count - len(made))


def clone(app: Celery, group_ids: list[str], count: int) -> None:
    """``count`` more chords: DUMP/RESTORE of the chord keys of ``group_ids``, in turn."""
    client = app.backend.client
    prefix = app.backend.group_keyprefix.decode()
    dumps = []
    for gid in group_ids:
        keys = [prefix + gid + suffix for suffix in (".s", ".j", ".t", ".d", ".c")]
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.dump(key)
                pipe.pttl(key)
            replies = pipe.execute()
        dumps.append([(key[len(prefix) + len(gid):], replies[2 * i], replies[2 * i + 1])
                      for i, key in enumerate(keys) if replies[2 * i] is not None])
    pipe = client.pipeline(transaction=False)
    for made in range(count):
        gid = str(uuid.uuid4())
        for suffix, payload, ttl in dumps[made % len(dumps)]:
            pipe.restore(prefix + gid + suffix, max(ttl, 0), payload)
        if made % 2000 == 1999:
            pipe.execute()
    pipe.execute()


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


def timed(args: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MiB, GNU time's %M) and stdout of one run, which must exit 0."""
    with tempfile.NamedTemporaryFile("r") as peak:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak.name, *args], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - start
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return seconds, int(peak.read().split()[-1]) // 1024, proc.stdout


def main() -> None:
    global REDIS_URL
    parser = argparse.ArgumentParser()
    parser.add_argument("--chords", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-rounds", type=int, help="default: --rounds")
    parser.add_argument("--redis", default=REDIS_URL, help="Redis URL (broker and backend)")
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.baseline:  # the baseline's own process
        print(baseline(app))
        return
    REDIS_URL = opts.redis
    prefix = f"cgbench{uuid.uuid4().hex[:8]}:"
    env = {**os.environ, PREFIX_ENV: prefix, "CG_TEST_REDIS": opts.redis,
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
        rows: dict[str, list[tuple[float, int]]] = {"chordguard check": [], "celery baseline": []}
        for round_ in range(opts.rounds):
            seconds, peak, out = timed(check, env)
            assert f"{opts.chords} in flight" in out, out
            rows["chordguard check"].append((seconds, peak))
            if round_ >= (opts.rounds if opts.baseline_rounds is None else opts.baseline_rounds):
                continue
            seconds, peak, out = timed(base, env)
            assert out.strip() == str(opts.chords), out
            rows["celery baseline"].append((seconds, peak))
        for name, runs in rows.items():
            times = [s for s, _ in runs]
            print(f"{name:17} best {min(times):.2f} s, median {statistics.median(times):.2f} s, "
                  f"peak RSS {max(p for _, p in runs)} MiB  "
                  f"(rounds {', '.join(f'{s:.2f}' for s in times)})")
        ours, theirs = ([s for s, _ in runs] for runs in rows.values())
        print(f"ratio check / baseline: best {min(ours) / min(theirs):.2f}, median "
              f"{statistics.median(ours) / statistics.median(theirs):.2f}  "
              f"(load average {os.getloadavg()[0]:.2f})")
    finally:
        print(f"deleted {delete_all(bench_app, prefix)} bench keys")


if __name__ == "__main__":
    main()
