"""Chord throughput on Redis with ``chordguard.install`` against the same run without it.

    python bench/guard_throughput.py [--chords 200] [--header 10] [--rounds 5]
                                     [--store redis|sqlite] [--pool prefork] [--concurrency 2]

Two apps, identical but for the guard, each in its own key prefix and queue, each with one
real worker (Redis broker and result backend). Rounds alternate plain / guarded: a round
publishes ``--chords`` chords of ``--header`` ``add`` tasks and a ``tsum`` callback, and
ends when every callback result is in; chords per second are counted from the first publish
(journal writes included) to the last result. Keys and queues are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from celery import Celery, chord

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("CG_TEST_REDIS", "redis://127.0.0.1:6379/0")
ENV_PREFIX, ENV_STORE = "CG_BENCH_PREFIX", "CG_BENCH_STORE"


def make_app(prefix: str, store: str | None) -> Celery:
    """The benchmark app; with ``store`` the guard is installed."""
    app = Celery(f"bench-guard-{prefix}", broker=REDIS_URL, backend=REDIS_URL)
    app.conf.update(task_default_queue=f"{prefix}q", control_exchange=f"{prefix}ctl",
                    event_exchange=f"{prefix}ev", result_serializer="json",
                    task_serializer="json", accept_content=["json"],
                    broker_transport_options={"global_keyprefix": prefix},
                    result_backend_transport_options={"global_keyprefix": prefix},
                    worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)

    @app.task(name="bench.add", shared=False)
    def add(x, y):
        return x + y

    @app.task(name="bench.tsum", shared=False)
    def tsum(values):
        return sum(values)

    if store:
        import chordguard

        chordguard.install(app, store=store, deadline=3600, retention=600)
    return app


app = make_app(os.environ[ENV_PREFIX], os.environ.get(ENV_STORE) or None) \
    if os.environ.get(ENV_PREFIX) else None


class Side:
    """One app (plain or guarded) and its worker process."""

    def __init__(self, label: str, store: str | None, pool: str, concurrency: int) -> None:
        self.label, self.store = label, store
        self.prefix = f"cgbg{uuid.uuid4().hex[:8]}:"
        self.app = make_app(self.prefix, store)
        env = {**os.environ, ENV_PREFIX: self.prefix, ENV_STORE: store or "",
               "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.name = f"bench-{self.prefix[:-1]}@localhost"
        self.log = open(f"/tmp/{self.prefix[:-1]}.log", "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "bench.guard_throughput", "worker", "-P",
             pool, "-c", str(concurrency), "-n", self.name, "-Q", f"{self.prefix}q",
             "-l", "WARNING"],  # Celery's defaults: gossip, mingle, heartbeats
            env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        end = time.monotonic() + 60
        while not self.app.control.ping(destination=[self.name], timeout=0.5):
            if time.monotonic() > end or self.process.poll() is not None:
                raise RuntimeError(f"{label} worker did not start; see {self.log.name}")

    def run(self, chords: int, header: int) -> float:
        """Chords per second for one round."""
        sig = self.app.signature
        started = time.perf_counter()
        results = [chord([sig("bench.add", (i, j)) for j in range(header)])(sig("bench.tsum"))
                   for i in range(chords)]
        for i, result in enumerate(results):
            expected = sum(i + j for j in range(header))
            assert result.get(timeout=300) == expected, f"{self.label}: wrong result"
        rate = chords / (time.perf_counter() - started)
        if self.store:
            self.check_journal(results[-1].parent.id)
        return rate

    def check_journal(self, chord_id: str) -> None:
        """The guard really ran: the last chord's record ended succeeded."""
        from chordguard.store import open_store

        end = time.monotonic() + 10
        while (record := open_store(self.store).chord(chord_id)) is None or record.open:
            if time.monotonic() > end:
                raise RuntimeError(f"guard did not journal chord {chord_id}: {record}")
            time.sleep(0.1)

    def worker_cpu(self) -> float:
        """CPU seconds the worker and its pool processes have used so far (Linux)."""
        tick = os.sysconf("SC_CLK_TCK")
        pids = [self.process.pid]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == self.process.pid:
                    pids.append(int(entry))
        total = 0.0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        client = self.app.backend.client
        for key in list(client.scan_iter(match=self.prefix + "*", count=5000)):
            client.delete(key)
        self.app.close()


def side_options(parser: argparse.ArgumentParser, header: int, rounds: int) -> None:
    """The options every plain-vs-guarded benchmark takes."""
    parser.add_argument("--header", type=int, default=header)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--store", choices=("redis", "sqlite"), default="redis")
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--concurrency", type=int, default=2)


def both_sides(opts: argparse.Namespace) -> tuple[Side, Side]:
    """The plain and the guarded side, their workers started."""
    store = REDIS_URL if opts.store == "redis" else f"sqlite:////tmp/cgbench-{uuid.uuid4().hex}.db"
    plain = Side("plain", None, opts.pool, opts.concurrency)
    return plain, Side("guarded", store, opts.pool, opts.concurrency)


def alternate(plain: Side, guarded: Side, rounds: int,
              measure: Callable[[Side], float]) -> tuple[dict[str, list[float]], list[float]]:
    """``measure`` each side once per round, plain first in even rounds; the figures per
    side and the load average after each round."""
    figures: dict[str, list[float]] = {"plain": [], "guarded": []}
    loads = []
    for n in range(rounds):
        for side in (plain, guarded) if n % 2 == 0 else (guarded, plain):
            figures[side.label].append(measure(side))
        loads.append(os.getloadavg()[0])
    return figures, loads


def report(figures: dict[str, list[float]], loads: list[float], unit: str) -> None:
    """Print each side's median and rounds, and the guarded / plain ratio of the medians."""
    for label, values in figures.items():
        print(f"{label:8} {unit}: median {statistics.median(values):.2f}  rounds "
              + ", ".join(f"{v:.2f}" for v in values))
    ratio = statistics.median(figures["guarded"]) / statistics.median(figures["plain"])
    print(f"ratio guarded / plain: {ratio:.3f}  (load average during rounds "
          f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores)")


def compare(opts: argparse.Namespace, warm: Callable[[Side], object],
            measure: Callable[[Side], float], title: str, unit: str) -> None:
    """Start both sides, ``warm`` each, alternate ``measure`` for ``opts.rounds`` rounds and
    print ``title`` and the figures; the workers are stopped and the keys deleted after."""
    plain, guarded = both_sides(opts)
    try:
        warm(plain)
        warm(guarded)
        figures, loads = alternate(plain, guarded, opts.rounds, measure)
        print(title)
        report(figures, loads, unit)
    finally:
        plain.close()
        guarded.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chords", type=int, default=200)
    side_options(parser, header=10, rounds=5)
    opts = parser.parse_args()
    compare(opts, lambda side: side.run(20, opts.header),  # workers and connections warm
            lambda side: side.run(opts.chords, opts.header),
            f"{opts.chords} chords x {opts.header} parts, {opts.rounds} alternating rounds, "
            f"{opts.pool} -c {opts.concurrency}, store {opts.store}", "chords/s")


if __name__ == "__main__":
    main()
