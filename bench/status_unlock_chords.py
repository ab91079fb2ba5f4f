"""`chordguard status` over in-flight chord_unlock chords, against a Celery-native baseline.

    python bench/status_unlock_chords.py [--chords 300] [--rounds 3] [--broker redis|amqp]
                                         [--guarded] [--without-gossip]

A real worker (tests.cluster) on the PostgreSQL result backend holds one chord_unlock per
chord in its timer (``interval=600``, so nothing polls during the run). Each chord has 4
header tasks: 2 done, 2 parked in a queue nobody consumes. ``--guarded``: the app's import
installs the guard (PostgreSQL store), as users load it with ``-A``. The worker runs with
Celery's defaults (gossip, mingle), as users start it; ``--without-gossip``: without them.
Both sides run as fresh processes (the code compiled to bytecode first, as pip leaves an
installed package), end to end, alternating, against the same cluster:

* chordguard: ``chordguard -A tests.chordapp status --json``;
* ``chordguard inspect <an id nobody knows>`` against Celery's own question to the workers
  about one id, ``celery inspect query_task <id>``;
* baseline: what Celery offers (and what the seed guide's monitor did): ``inspect`` active,
  reserved and scheduled, then, per chord_unlock found, the state of every header and of the
  callback through ``AsyncResult.state`` (one backend read each, as chord_unlock's own
  ``GroupResult.ready()`` does). It learns progress only; it does not look at the broker.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HEADER_DONE, HEADER_PARKED = 2, 2


def baseline() -> None:
    """Run inside the cluster's environment: Celery's own way to the same figures."""
    from tests.chordapp import app_from_env

    app = app_from_env()
    inspect = app.control.inspect(timeout=2.0)
    requests = []
    for method in (inspect.active, inspect.reserved):
        requests += [r for replies in (method() or {}).values() for r in replies]
    requests += [e["request"] for replies in (inspect.scheduled() or {}).values()
                 for e in replies]
    chords = {}
    for request in requests:
        if request["name"] != "celery.chord_unlock":
            continue
        group_id, callback = request["args"][:2]
        headers = [node[0][0] for node in request["kwargs"]["result"]]
        done = sum(app.AsyncResult(h).state in ("SUCCESS", "FAILURE") for h in headers)
        chords[group_id] = (done, len(headers),
                            app.AsyncResult(callback["options"]["task_id"]).state)
    print(json.dumps({"chords": len(chords)}))


def timed(command: list[str], env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"{command} exited {done.returncode}: no verdict\n"
                         f"{done.stdout[-1500:]}{done.stderr[-1500:]}")
    return elapsed, done.stdout


def main() -> None:
    import compileall

    from celery import chord

    from tests.cluster import AMQP_URL, PG_BACKEND, PG_URL, REDIS_URL, Cluster, wait_for

    parser = argparse.ArgumentParser()
    parser.add_argument("--chords", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--broker", choices=("redis", "amqp"), default="redis")
    parser.add_argument("--guarded", action="store_true")
    parser.add_argument("--without-gossip", action="store_true")
    opts = parser.parse_args()
    parked = f"cg-bench-parked-{uuid.uuid4().hex[:8]}"
    conf: dict = {"task_routes": {"t.echo": {"queue": parked}}}
    if opts.guarded:
        # the parked headers sit in a queue only task_routes names: the guard's own check
        # (guard/presence.py) does not look there and would fail the chords after its grace
        conf["guard"] = {"store": PG_URL, "lost_header_grace": 3600}
    cluster = Cluster(REDIS_URL if opts.broker == "redis" else AMQP_URL, PG_BACKEND, conf)
    app = cluster.app
    try:
        cluster.start_worker(concurrency=4, celery_defaults=not opts.without_gossip)
        for _ in range(opts.chords):
            header = [app.signature("t.add", (i, i)) for i in range(HEADER_DONE)] + \
                     [app.signature("t.echo", (i,)) for i in range(HEADER_PARKED)]
            chord(header)(app.signature("t.tsum"), interval=600)
        wait_for(lambda: sum(len(v) for v in (app.control.inspect(timeout=1).scheduled()
                                               or {}).values()) >= opts.chords,
                 timeout=120, interval=1, what="every unlock copy in the worker's timer")
        for tree in ("src", "tests"):  # bytecode, as pip leaves an installed package
            compileall.compile_dir(ROOT / tree, quiet=1)
        env = cluster.env()
        ours = [sys.executable, "-m", "chordguard", "-A", "tests.chordapp", "status", "--json"]
        theirs = [sys.executable, __file__, "--baseline"]
        unknown = str(uuid.uuid4())
        lookup = [sys.executable, "-m", "chordguard", "-A", "tests.chordapp", "inspect", unknown]
        query = [sys.executable, "-m", "celery", "-A", "tests.chordapp", "inspect", "query_task",
                 unknown]
        rows = {"chordguard": [], "baseline": [], "inspect unknown id": [], "celery query_task": []}
        for _ in range(opts.rounds):
            seconds, _ = timed(lookup, env)
            rows["inspect unknown id"].append(seconds)
            seconds, _ = timed(query, env)
            rows["celery query_task"].append(seconds)
            seconds, out = timed(ours, env)
            health = json.loads(out)["health"]
            assert health["active_chord_unlocks"] == opts.chords, health
            rows["chordguard"].append(seconds)
            seconds, out = timed(theirs, env)
            # guarded: the guard's unlock polls on its own backoff, so a copy can be in transit
            # where Celery's inspect does not look (chordguard also reads the journal)
            assert opts.guarded or json.loads(out)["chords"] == opts.chords, out
            rows["baseline"].append(seconds)
        report(rows, opts)
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(parked)
        cluster.close()
        app.control.purge()  # this run's own queues only


def report(rows: dict[str, list[float]], opts: argparse.Namespace) -> None:
    print(f"{opts.chords} unlock chords, broker {opts.broker}, {opts.rounds} rounds"
          + (", guarded app" if opts.guarded else "")
          + (", worker --without-gossip --without-mingle" if opts.without_gossip
             else ", worker with Celery's defaults"))
    for name, values in rows.items():
        print(f"  {name:18} best {min(values):.2f} s, median {statistics.median(values):.2f} s  "
              f"rounds {', '.join(f'{v:.2f}' for v in values)}")
    for ours, theirs in (("chordguard", "baseline"), ("inspect unknown id", "celery query_task")):
        print(f"  ratio {ours} / {theirs}: median "
              f"{statistics.median(rows[ours]) / statistics.median(rows[theirs]):.2f}")
    print(f"  load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    if "--baseline" in sys.argv:
        baseline()
    else:
        main()
