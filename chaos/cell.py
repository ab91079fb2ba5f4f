"""One cell of the matrix: a fresh cluster of one kind, N chords, one fault, the tally."""

from __future__ import annotations

import contextlib
import gc
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import chord

import chordguard
from chordguard.durable import durable_chord
from chordguard.store import open_store
from tests.chordapp import trace_redis
from tests.cluster import Cluster, Worker, wait_for
from tests.private_servers import PrivatePostgres, PrivateRedis

from .faults import Fault
from .kinds import Kind
from .proxy import Proxy, start_proxy

GRACE = 20.0  # a cell waits this long past the deadline for chords to end
SETTLE = 3.0  # and this long after the last one ended, for late duplicates
REAPER_SLACK = 3.0  # the guard's reaper passes every second; a pass takes a moment
UNLOCK_SLACK = 2.0 + 5.0  # the guard leaves an unlock chord unlock_max_interval + 5 s more
VISIBILITY = 10  # seconds before the Redis broker redelivers an unacknowledged message


@dataclass
class Servers:
    """The private servers a matrix runs against, and the ports its proxies may take."""

    broker: PrivateRedis
    redis: PrivateRedis
    postgres: PrivatePostgres | None  # None: cells of PostgreSQL kinds cannot run
    tmp: Path
    proxy_ports: range = range(7480, 7490)


@dataclass
class Started:
    n: int
    chord_id: str
    callback_id: str
    at: float


@dataclass
class Tally:
    """What one cell measured (``na``: why it was not run)."""

    started: int = 0
    once: int = 0
    failed: int = 0
    lost: int = 0
    dup: int = 0
    slowest: float | None = None
    deadline: float = 0.0
    late: int = 0
    early: int = 0  # failed for its deadline (or a stall) before the deadline
    both: int = 0  # succeeded and still failed (errbacks ran)
    notes: list[str] = field(default_factory=list)
    na: str | None = None
    error: str | None = None  # the harness could not run the cell

    @property
    def meets_goal(self) -> bool:
        return self.na is None and self.error is None and \
            not (self.lost or self.dup or self.late or self.early or self.both)


class Run:
    """A running cell: what a fault's ``act`` gets."""

    def __init__(self, kind: Kind, fault: Fault, servers: Servers, chords: int,
                 tmp: Path) -> None:
        self.kind, self.fault, self.servers = kind, fault, servers
        self.trace = f"chaos:trace:{uuid.uuid4().hex}"
        self.store = self._store_url(tmp)
        self.proxy: Proxy | None = None
        if fault.delay is not None:
            target = self.store_server()
            self.proxy = start_proxy(servers.proxy_ports, target.port, fault.delay)
        self.cluster = Cluster(servers.broker.url, self._backend(self.store),
                               self._conf(self.store), tmp=tmp)
        self.chords = chords
        self.started: list[Started] = []
        self.notes: list[str] = []

    def _store_url(self, tmp: Path) -> str:
        if self.kind.store == "sqlite":
            return f"sqlite:///{tmp}/chaos-{uuid.uuid4().hex[:8]}.sqlite"
        return self.store_server().url

    def store_server(self) -> PrivateRedis | PrivatePostgres:
        server = self.servers.redis if self.kind.store == "redis" else self.servers.postgres
        if server is None:
            raise RuntimeError(f"{self.kind.name} needs a private {self.kind.store} server")
        return server

    def _backend(self, store: str) -> str | None:
        return {"redis": store, "unlock": "db+" + store}.get(self.kind.join)

    def _conf(self, store: str, **chaos: Any) -> dict:
        conf = {"cg_chaos": {"trace": self.trace, **self.fault.chaos, **chaos},
                "broker_transport_options": {"visibility_timeout": VISIBILITY},
                **self.fault.conf}
        if self.kind.join == "durable":
            conf["task_ignore_result"] = True
        if self.kind.guarded:
            conf["guard"] = {"store": store, "deadline": self.fault.deadline,
                             "reaper_interval": 1, "unlock_max_interval": 2,
                             "breaker_failures": 10_000,
                             **({"fan_in": "store"} if self.kind.fan_in else {})}
        return conf

    def start_workers(self) -> None:
        """One worker per entry of the fault's ``workers``, started side by side."""
        started = [self.start_worker(wait=False, **options) for options in self.fault.workers]
        for worker in started:
            self.cluster.wait_ready(worker, timeout=60)

    def start_worker(self, wait: bool = True, **chaos: Any) -> Worker:
        store = self.store
        conf = self._conf(store, **chaos)
        if self.proxy is not None:
            store = store.replace(f":{self.proxy.target}/", f":{self.proxy.port}/")
            conf = self._conf(store, **chaos)
            backend = self._backend(store)
            if backend:
                conf["result_backend"] = backend
        return self.cluster.start_worker(conf=conf, wait=wait)

    def publish(self) -> None:
        app, fault = self.cluster.app, self.fault
        for n in range(self.chords):
            header = [app.signature("chaos.part", (i, s)) for i, s in enumerate(fault.parts)]
            name = "chaos.guarded_callback" if self.kind.guarded else "chaos.callback"
            callback = app.signature(name, kwargs={"n": n, "mode": fault.mode})
            callback.link_error(app.signature("chaos.errback", kwargs={"n": n}))
            at = time.time()
            if self.kind.join == "durable":
                handle = durable_chord(header, callback, deadline=fault.deadline,
                                       stall_timeout=fault.deadline)
                self.started.append(Started(n, handle.id, handle.callback_id, at))
                continue
            if self.kind.guarded:
                callback = chordguard.with_deadline(callback, fault.deadline)
            result = chord(header)(callback)
            self.started.append(Started(n, result.parent.id, result.id, at))
        if self.kind.fan_in:  # before any fault: each chord has its barrier, or Celery joins it
            barriers = open_store(self.store)
            unjoined = sum(barriers.barrier(s.chord_id) is None for s in self.started)
            if unjoined:
                self.notes.append(f"{unjoined} not joined by the store (Celery's join)")

    def events(self) -> list[dict]:
        return [json.loads(raw) for raw in trace_redis().lrange(self.trace, 0, -1)]

    def wait_event(self, name: str, count: int, timeout: float = 30.0) -> None:
        wait_for(lambda: sum(e["e"] == name for e in self.events()) >= count, timeout,
                 what=f"{count} '{name}' event(s)")

    def wait_log(self, worker: Worker, task: str, word: str, count: int,
                 timeout: float = 30.0) -> None:
        wait_for(lambda: sum(task in line and word in line
                             for line in worker.output().splitlines()) >= count, timeout,
                 what=f"{count} {task} {word} in {worker.name}'s log")

    def observe(self) -> None:
        """Wait until every chord ended (then SETTLE more) or its deadline plus GRACE."""
        end = self.started[0].at + self.fault.deadline + GRACE
        settled_at = None
        while time.time() < end:
            ended = {e["n"] for e in self.events() if e["e"] in ("ok", "errback")}
            if len(ended) == len(self.started):
                settled_at = settled_at or time.time() + SETTLE
                if time.time() >= settled_at:
                    return
            time.sleep(0.3)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cluster.close()
        gc.collect()  # results' finalizers talk to the backend: while its server is up
        if self.proxy is not None:
            self.proxy.close()
        trace_redis().delete(self.trace)


def run_cell(kind: Kind, fault: Fault, servers: Servers, chords: int, tmp: Path) -> Tally:
    """Run ``fault`` on ``chords`` chords of ``kind``; the tally (or why it does not apply)."""
    reason = fault.applies(kind)
    if reason:
        return Tally(na=reason, deadline=fault.deadline)
    run = None
    try:
        run = Run(kind, fault, servers, chords, tmp)
        run.start_workers()
        run.publish()
        trouble = None
        if fault.act is not None:
            try:
                fault.act(run)
            except Exception as exc:  # the chords still run: count what became of them
                trouble = f"the fault did not go as planned: {exc}"
        run.observe()
        result = tally(run)
        if trouble:
            result.notes.append(trouble)
        return result
    except Exception as exc:
        return Tally(started=len(run.started) if run else 0, deadline=fault.deadline,
                     error=f"{type(exc).__name__}: {exc}".splitlines()[0][:200])
    finally:
        if run is not None:
            run.close()
        for server in (servers.redis, servers.postgres, servers.broker):
            if server is not None:
                server.resume()


def tally(run: Run) -> Tally:
    """Count each chord as ended once, failed properly, or lost, from the trace and stores."""
    events = run.events()
    letters = _dead_letters(run)
    result = Tally(started=len(run.started), deadline=run.fault.deadline)
    improper = 0
    unlock = run.kind.join == "unlock" and not run.kind.fan_in
    slack = REAPER_SLACK + (UNLOCK_SLACK if unlock else 0.0)
    for started in run.started:
        mine = [e for e in events if e["n"] == started.n]
        runs = sum(e["e"] == "run" for e in mine)
        ok = [e["at"] for e in mine if e["e"] == "ok"]
        errbacks = [e["at"] for e in mine if e["e"] == "errback"]
        marked = any(e["e"] == "fail" for e in mine) or _failure_marked(run, started)
        lettered = started.chord_id in letters or not run.kind.guarded
        result.dup += max(0, runs - 1)
        if ok:
            result.once += runs == 1
            result.both += bool(errbacks)
            ended = min(ok)
        elif errbacks and marked and lettered:
            result.failed += 1
            ended = min(errbacks)
            why = letters.get(started.chord_id, "")
            result.early += ("deadline" in why or "stall" in why) and \
                ended - started.at < run.fault.deadline - 0.5
        else:
            result.lost += 1
            improper += bool(errbacks or marked)
            continue
        took = ended - started.at
        result.slowest = max(result.slowest or 0.0, took)
        result.late += took > run.fault.deadline + slack
    result.notes.extend(run.notes)
    if improper:
        result.notes.append(f"{improper} failed without errback or dead letter (counted lost)")
    if result.both:
        result.notes.append(f"{result.both} succeeded and then also failed (errback ran)")
    return result


def _dead_letters(run: Run) -> dict[str, str]:
    """Chord id -> the reason of its dead letter."""
    if not run.kind.guarded:
        return {}
    try:
        return {letter.chord_id: letter.reason for letter in open_store(run.store).dead_letters()}
    except Exception:
        return {}


def _failure_marked(run: Run, started: Started) -> bool:
    """The callback's FAILURE is recorded: in the result backend, or a durable barrier."""
    try:
        if run.kind.join == "durable":
            barrier = open_store(run.store).barrier(started.chord_id)
            return barrier is not None and barrier.state.value == "failed"
        return run.cluster.app.AsyncResult(started.callback_id).state == "FAILURE"
    except Exception:
        return False
