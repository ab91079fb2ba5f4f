"""`chordguard check` over 10,000 Redis chords with their header messages queued, against a
Celery-native baseline.

    python bench/check_redis_chords.py [--chords 10000] [--rounds 3] [--redis URL] [--json]
    python bench/check_redis_chords.py --busy --chords 6000 [--json]

(``--redis``, or ``CG_TEST_REDIS``: a private server for 100,000 chords, so the shared one
is not flooded.) Each round also reports the peak RSS of both processes (GNU time);
``--redis-time`` also Redis's own time running ``check``'s read-only scripts (SLOWLOG with
no threshold during each round: a private server, as it logs every command).

Chords are published for real: ``chord([add, add])(tsum)`` through Celery by ``--publishers``
processes side by side, so the broker holds their 20,000 header messages (nobody consumes
the queue) and the result backend the chord keys Celery writes (``set_chord_size``), under a
key prefix of their own (``global_keyprefix`` of broker and backend), deleted afterwards
(``--keep`` keeps them, and ``--prefix`` of a kept run reuses them). Every chord is stuck
(``no_consumer``): ``check`` must name all of them and exit 1. Both sides run as fresh
processes, end to end, against the same keys and messages:

* chordguard: ``chordguard -A bench.check_redis_chords check --max-hours 1`` (``--json``);
* baseline: what Celery offers to read a chord's state: nothing lists chords or peeks at a
  queue, so the group ids are found with the same SCAN, then per chord the backend's own
  calls, one at a time as Celery's code does (``backend.get`` of ``.s``, ``ZCARD``/``GET`` of
  ``.j``/``.t``, ``TTL`` of ``.s``), and the queue is read with LRANGE, each message decoded
  as kombu would to find its group: size, progress, time left and queued parts, less than
  chordguard reports.

``--busy``: a healthy, busy cluster instead. A worker with Celery's defaults works through
the queue (each part sleeps 50 ms: two processes take about 40 messages a second) while both
sides run; ``check`` must exit 0 with the verdict healthy, and every round starts with more
than 5,000 messages still queued. The baseline's count of consistent chords is printed, not
checked (chords move while it reads).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from celery import Celery, chord
from celery._state import _set_task_join_will_block

from chordguard._compat import publish_batch

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("CG_TEST_REDIS", "redis://127.0.0.1:6379/0")
PREFIX_ENV = "CG_BENCH_PREFIX"
HEADER = 2
BUSY_PART_SECONDS = float(os.environ.get("CG_BENCH_PART_SECONDS", "0"))
BUSY_MIN_QUEUED = 5000  # a busy round counts only while the queue still holds this many


def make_app(prefix: str) -> Celery:
    app = Celery("bench-redis-chords", broker=REDIS_URL, backend=REDIS_URL)
    app.conf.update(result_backend_transport_options={"global_keyprefix": prefix},
                    broker_transport_options={"global_keyprefix": prefix},
                    result_serializer="json", task_serializer="json", accept_content=["json"])
    return app


app = make_app(os.environ[PREFIX_ENV]) if os.environ.get(PREFIX_ENV) else None
if app is not None:  # the tasks, for a ``--busy`` round's worker

    @app.task(name="bench.add")
    def add(x: int, y: int) -> int:
        time.sleep(BUSY_PART_SECONDS)
        return x + y

    @app.task(name="bench.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)


def publish(app: Celery, count: int) -> None:
    """``count`` chords of HEADER ``bench.add`` parts and a ``bench.tsum`` callback, each
    published by Celery (``chord(...)(callback)``), a thousand per kombu producer batch (one
    pipeline of LPUSHes). The process does not listen for results (as a worker, which sets
    the same flag: Celery's Redis backend would subscribe to every task sent)."""
    _set_task_join_will_block(True)
    for start in range(0, count, 1000):
        with app.producer_or_acquire() as producer, publish_batch(producer):
            for i in range(start, min(count, start + 1000)):
                chord([app.signature("bench.add", (i, n)) for n in range(HEADER)])(
                    app.signature("bench.tsum"), producer=producer)


def create(app: Celery, count: int, publishers: int = 4) -> None:
    """``count`` chords published by ``publishers`` processes side by side (``publish``)."""
    prefix = app.conf.broker_transport_options["global_keyprefix"]
    env = {**os.environ, PREFIX_ENV: prefix, "CG_TEST_REDIS": app.conf.broker_url}
    shares = [count // publishers + (n < count % publishers) for n in range(publishers)]
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--publish",
                               str(share)], env=env, cwd=ROOT) for share in shares if share]
    for proc in procs:
        assert proc.wait() == 0, "a publisher failed"


def existing(app: Celery) -> int:
    """Chords already made under the app's prefix (their ``.s`` keys)."""
    client = app.backend.client
    return sum(1 for _ in client.scan_iter(match=app.backend.group_keyprefix + b"*.s",
                                           count=5000))


def baseline(app: Celery) -> int:
    """Celery-native: per chord, the backend's own one-at-a-time reads; the queue read and
    each message decoded as kombu does, to count each chord's queued parts."""
    backend = app.backend
    client = backend.client
    prefix = backend.group_keyprefix
    ids = {key[len(prefix):-2] for key in client.scan_iter(match=prefix + b"*.s", count=5000)}
    queued: dict[str, int] = {}
    queue = app.conf.broker_transport_options["global_keyprefix"] + "celery"
    for start in range(0, client.llen(queue), 1000):
        for raw in client.lrange(queue, start, start + 999):
            message = json.loads(raw)
            json.loads(base64.b64decode(message["body"]))
            group = message["headers"].get("group")
            queued[group] = queued.get(group, 0) + 1
    seen = 0
    for gid in ids:
        size = backend.get(prefix + gid + b".s")
        done = client.zcard(prefix + gid + b".j")
        extra = client.get(prefix + gid + b".t")
        ttl = client.ttl(prefix + gid + b".s")
        seen += size is not None and ttl != -2 and \
            done + queued.get(gid.decode(), 0) == int(size) + int(extra or 0)
    return seen


def delete_all(app: Celery, prefix: str) -> int:
    client = app.backend.client
    removed = 0
    for key in list(client.scan_iter(match=prefix + "*", count=5000)):
        removed += client.delete(key)
    return removed


@contextlib.contextmanager
def scripts_time(client, rounds: list[float]):
    """Appends to ``rounds`` the seconds Redis spent in EVAL/EVALSHA calls meanwhile (their
    inner commands included), read from a SLOWLOG that logs every command."""
    saved = dict(client.config_get("slowlog-*"))
    client.config_set("slowlog-log-slower-than", 0)
    client.config_set("slowlog-max-len", 1_000_000)
    client.slowlog_reset()
    try:
        yield
        entries = client.slowlog_get(1_000_000)
        rounds.append(sum(e["duration"] for e in entries
                          if e["command"].split(b" ")[0].upper() in (b"EVAL", b"EVALSHA")) / 1e6)
    finally:
        for key, value in saved.items():
            client.config_set(key, value)
        client.slowlog_reset()


def timed(args: list[str], env: dict[str, str], code: int | None,
          ) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MiB, GNU time's %M) and stdout of one run, which must exit
    ``code`` (None: any)."""
    with tempfile.NamedTemporaryFile("r") as peak:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak.name, *args], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - start
        assert code is None or proc.returncode == code, proc.stdout[-3000:] + proc.stderr[-3000:]
        return seconds, int(peak.read().split()[-1]) // 1024, proc.stdout


def judged(out: str, chords: int, as_json: bool) -> None:
    """Every chord judged stuck, ``no_consumer``: the health counts in ``check``'s output
    (the JSON lists its first page of chords, the table its first rows)."""
    if as_json:
        document = json.loads(out)
        health = document["health"]
        assert health["stuck_chords"] == chords, health
        assert health["diagnoses"] == {"no_consumer": chords}, health
        assert document["chords_total"] == chords, document["chords_total"]
    else:
        assert f"{chords} in flight" in out and f"{chords} with blocking problems" in out, \
            out[-2000:]
        assert f"diagnoses: no_consumer {chords}" in out, out[-2000:]


def healthy(out: str, as_json: bool) -> None:
    """A busy round's verdict: healthy (``check`` exited 0, which ``timed`` asserted)."""
    if as_json:
        health = json.loads(out)["health"]
        assert health["status"] == "healthy", health
    else:
        assert out.startswith("no stuck chords"), out[-2000:]


def start_worker(env: dict[str, str]) -> subprocess.Popen:
    """One worker with Celery's defaults (prefork, 2 processes, gossip, mingle,
    heartbeats) working through the queue, each part taking BUSY_PART_SECONDS; returns when
    it has taken its first messages."""
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench.check_redis_chords",
                             "worker", "-c", "2", "-l", "WARNING"],
                            env={**env, "CG_BENCH_PART_SECONDS": "0.05"}, cwd=ROOT,
                            start_new_session=True)
    client, queue = app_client(env)
    before = client.llen(queue)
    end = time.monotonic() + 60
    while client.llen(queue) >= before:
        assert proc.poll() is None and time.monotonic() < end, "the worker did not start"
        time.sleep(0.2)
    return proc


def app_client(env: dict[str, str]):
    """The Redis client and queue key of the bench's app under ``env``'s prefix."""
    bench_app = make_app(env[PREFIX_ENV])
    return bench_app.backend.client, env[PREFIX_ENV] + "celery"


def main() -> None:
    global REDIS_URL
    parser = argparse.ArgumentParser()
    parser.add_argument("--chords", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-rounds", type=int, help="default: --rounds")
    parser.add_argument("--redis", default=REDIS_URL, help="Redis URL (broker and backend)")
    parser.add_argument("--json", action="store_true", help="time `check --json`")
    parser.add_argument("--busy", action="store_true",
                        help="a worker with Celery's defaults works through the queue while "
                             "both sides run: every chord is healthy (check exits 0)")
    parser.add_argument("--source-timeout", type=float, help="check's --source-timeout")
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--redis-time", action="store_true",
                        help="report Redis's own time in check's scripts (SLOWLOG)")
    parser.add_argument("--keep", action="store_true", help="leave the chords for a rerun")
    parser.add_argument("--prefix", help="the key prefix of a kept run: reuse its chords")
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--publish", type=int, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.baseline:  # the baseline's own process
        print(baseline(app))
        return
    if opts.publish is not None:  # one publisher's process
        publish(app, opts.publish)
        return
    REDIS_URL = opts.redis
    prefix = opts.prefix or f"cgbench{uuid.uuid4().hex[:8]}:"
    env = {**os.environ, PREFIX_ENV: prefix, "CG_TEST_REDIS": opts.redis,
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    bench_app = make_app(prefix)
    check = [sys.executable, "-m", "chordguard", "-A", "bench.check_redis_chords",
             *(["--json"] if opts.json else []), "check", "--max-hours", "1",
             *(["--source-timeout", str(opts.source_timeout)] if opts.source_timeout else [])]
    base = [sys.executable, str(Path(__file__).resolve()), "--baseline"]
    worker = None
    try:
        started = time.perf_counter()
        if existing(bench_app) != opts.chords:
            create(bench_app, opts.chords, opts.publishers)
        print(f"prefix {prefix}: {opts.chords} chords, "
              f"{bench_app.backend.client.llen(prefix + 'celery')} queued messages, made in "
              f"{time.perf_counter() - started:.1f} s (load average {os.getloadavg()[0]:.2f})")
        rows: dict[str, list[tuple[float, int]]] = {"chordguard check": [], "celery baseline": []}
        worker = start_worker(env) if opts.busy else None
        client, queue = app_client(env)
        script_seconds: list[float] = []
        for round_ in range(opts.rounds):
            if worker is not None:
                queued = client.llen(queue)
                assert queued > BUSY_MIN_QUEUED, f"the queue holds {queued}: no longer busy"
                seconds, peak, out = timed(check, env, 0)
                healthy(out, opts.json)
                print(f"round {round_ + 1}: healthy in {seconds:.2f} s, queue {queued} -> "
                      f"{client.llen(queue)} messages")
            else:
                with (scripts_time(client, script_seconds) if opts.redis_time
                      else contextlib.nullcontext()):
                    seconds, peak, out = timed(check, env, None)
                try:
                    judged(out, opts.chords, opts.json)
                except AssertionError:  # a verdict that is not the definite one: say which
                    print(f"round {round_ + 1}: NOT every chord judged ({seconds:.2f} s): "
                          + next((line for line in out.splitlines() if "unknown" in line),
                                 out[-300:]))
            rows["chordguard check"].append((seconds, peak))
            if round_ >= (opts.rounds if opts.baseline_rounds is None else opts.baseline_rounds):
                continue
            seconds, peak, out = timed(base, env, 0)
            assert worker is not None or out.strip() == str(opts.chords), out
            rows["celery baseline"].append((seconds, peak))
        for name, runs in rows.items():
            if not runs:  # --baseline-rounds 0
                continue
            times = [s for s, _ in runs]
            print(f"{name:17} best {min(times):.2f} s, median {statistics.median(times):.2f} s, "
                  f"peak RSS {max(p for _, p in runs)} MiB  "
                  f"(rounds {', '.join(f'{s:.2f}' for s in times)})")
        if script_seconds:
            print(f"Redis's own time in check's scripts: "
                  f"{', '.join(f'{s:.2f}' for s in script_seconds)} s")
        ours, theirs = ([s for s, _ in runs] for runs in rows.values())
        if theirs:
            print(f"ratio check / baseline: best {min(ours) / min(theirs):.2f}, median "
                  f"{statistics.median(ours) / statistics.median(theirs):.2f}  "
                  f"(load average {os.getloadavg()[0]:.2f})")
    finally:
        if worker is not None:
            os.killpg(worker.pid, 9)
            worker.wait()
        if not opts.keep:
            print(f"deleted {delete_all(bench_app, prefix)} bench keys")


if __name__ == "__main__":
    main()
