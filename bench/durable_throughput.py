"""durable_chord on a Redis store against Celery's Redis chord: throughput, and where the
CPU goes (the publisher, the worker).

    CG_TEST_REDIS=redis://127.0.0.1:7540/0 python bench/durable_throughput.py \
        [--chords 40] [--headers 25] [--rounds 3] [--pool threads] [--floor]

The workload of ``bench/durable_fanin.py``'s throughput (K chords x N no-op ``t.add``
headers published at once, a ``t.fanin`` callback each, until every callback ran), for the
two Redis modes only, so it also fits a busy machine: one ``celery worker -P threads -c 4``
per mode, rounds interleaved. Broker, Celery's result backend and the durable store
(database 3) all live on ``CG_TEST_REDIS``; point it at a private server. Besides the time
it reports the publisher's CPU seconds (this process) and the worker's (``/proc``).
``--floor`` adds a third mode, the same messages without any chord (each chord's headers and
a ``t.fanin`` in one ``Producer.batch``, no result backend, no chordguard): what no chord
implementation on this broker and worker can beat.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import redis
from celery import chord

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chordguard.durable import durable_chord  # noqa: E402
from tests.cluster import REDIS_URL, Cluster  # noqa: E402

MODES = ("celery-redis", "durable-redis")
FLOOR = "no-chord"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(cluster: Cluster, mode: str, chords: int, headers: int) -> tuple[float, float, float]:
    """Seconds until every callback ran, publisher CPU seconds, worker CPU seconds."""
    app, trace = cluster.app, redis.Redis.from_url(REDIS_URL)
    key = "cgbench:" + uuid.uuid4().hex
    worker = cluster.workers[0].process.pid
    worker_before, publisher_before = cpu_seconds(worker), time.process_time()
    started = time.perf_counter()
    for _ in range(chords):
        header = [app.signature("t.add", (i, i)) for i in range(headers)]
        callback = app.signature("t.fanin", kwargs={"key": key})
        if mode == "durable-redis":
            durable_chord(header, callback, app=app)
        elif mode == FLOOR:
            with app.producer_or_acquire() as producer, producer.batch():
                for sig in [*header, callback.clone(([0],))]:
                    sig.apply_async(producer=producer)
        else:
            chord(header)(callback)
    end = time.monotonic() + 600
    while trace.llen(key) < chords:
        if time.monotonic() > end:
            raise RuntimeError(f"{mode}: callbacks missing after 600 s")
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    trace.delete(key)
    return elapsed, time.process_time() - publisher_before, cpu_seconds(worker) - worker_before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chords", type=int, default=40)
    parser.add_argument("--headers", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pool", default="threads")
    parser.add_argument("--floor", action="store_true", help=f"add the {FLOOR!r} mode")
    args = parser.parse_args()
    modes = (*MODES, FLOOR) if args.floor else MODES
    store = REDIS_URL.rsplit("/", 1)[0] + "/3"
    clusters = {
        "celery-redis": Cluster(REDIS_URL, REDIS_URL, {}),
        "durable-redis": Cluster(REDIS_URL, None, {"cg_durable": True, "task_ignore_result": True,
                                                   "chordguard_store": store}),
    }
    if args.floor:
        clusters[FLOOR] = Cluster(REDIS_URL, None, {"task_ignore_result": True})
    try:
        for cluster in clusters.values():
            cluster.start_worker(pool=args.pool, concurrency=4)
        for mode in modes:  # warm up: connections, scripts
            run(clusters[mode], mode, 5, args.headers)
        load_before = os.getloadavg()[0]
        found: dict[str, list[tuple[float, float, float]]] = {m: [] for m in modes}
        for _ in range(args.rounds):
            for mode in modes:
                found[mode].append(run(clusters[mode], mode, args.chords, args.headers))
    finally:
        for cluster in clusters.values():
            cluster.close()
    print(f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} (2 cores); "
          f"{args.chords} chords x {args.headers} headers, {args.rounds} rounds, "
          f"-P {args.pool} -c 4")
    medians = {m: [statistics.median(x) for x in zip(*found[m], strict=True)] for m in modes}
    for mode in modes:
        seconds, publisher, worker = medians[mode]
        print(f"  {mode:14} {seconds:6.2f} s (rounds "
              f"{', '.join(f'{r[0]:.2f}' for r in found[mode])}); CPU s: publisher "
              f"{publisher:.2f}, worker {worker:.2f}")
    base, durable = medians["celery-redis"], medians["durable-redis"]
    print(f"  speed durable-redis / celery-redis: {base[0] / durable[0]:.2f}x; CPU per header "
          f"part: publisher {base[1] / durable[1]:.2f}x less, worker {base[2] / durable[2]:.2f}x "
          "less")
    if args.floor:
        print(f"  speed {FLOOR} / celery-redis: {base[0] / medians[FLOOR][0]:.2f}x (the ceiling)")


if __name__ == "__main__":
    main()
