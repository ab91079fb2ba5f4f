"""A chord whose body is a large group, with ``chordguard.install`` against the same run
without it.

    python -m bench.guard_group_body [--members 1000] [--header 4] [--rounds 3]
                                     [--store redis|sqlite] [--pool prefork] [--concurrency 2]

Map → reduce → map: a chord of ``--header`` ``add`` tasks whose body is a group of
``--members`` ``tsum`` tasks (each gets the header's results). Two apps, identical but for
the guard, each with one real worker (Redis broker and result backend, see
``guard_throughput``); rounds alternate plain / guarded and time the publish to the last
body member's result, and the worker's CPU seconds (worker and pool processes, read from
/proc: less sensitive than wall time to a busy machine). A guarded round also waits for the
journal to close the chord before its CPU is read.
"""

from __future__ import annotations

import argparse
import os
import time

from celery import chord, group

from bench.guard_throughput import Side, compare, report, side_options

CPU: dict[str, list[float]] = {"plain": [], "guarded": []}


def run(side: Side, header: int, members: int) -> float:
    """Seconds from publishing one chord to the last result of its group body (the worker's
    CPU seconds for it are kept in ``CPU``, measured once the journal closed the chord)."""
    sig = side.app.signature
    cpu = side.worker_cpu()
    started = time.perf_counter()
    result = chord([sig("bench.add", (0, j)) for j in range(header)])(
        group(sig("bench.tsum") for _ in range(members)))
    values = result.get(timeout=3600)
    elapsed = time.perf_counter() - started
    expected = sum(range(header))
    assert values == [expected] * members, f"{side.label}: wrong results"
    if side.store:
        side.check_journal(result.parent.id)
    CPU[side.label].append(side.worker_cpu() - cpu)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=1000)
    side_options(parser, header=4, rounds=3)
    opts = parser.parse_args()
    compare(opts, lambda side: run(side, opts.header, 10),  # workers and connections warm
            lambda side: run(side, opts.header, opts.members),
            f"chord of {opts.header} parts, group body of {opts.members} members, "
            f"{opts.rounds} alternating rounds, {opts.pool} -c {opts.concurrency}, "
            f"store {opts.store}", "seconds")
    for values in CPU.values():
        del values[0]  # the warm-up round
    report(CPU, [os.getloadavg()[0]], "worker CPU s")


if __name__ == "__main__":
    main()
