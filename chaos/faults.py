"""The matrix's rows: one fault each, what it does to a running cell, and where it applies."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .kinds import Kind

if TYPE_CHECKING:
    from .cell import Run


@dataclass(frozen=True)
class Fault:
    """``parts``: seconds each header task sleeps; ``deadline``: each chord's deadline (and,
    plus a grace, how long a cell waits); ``conf``: Celery settings of the cell;
    ``chaos``: options of ``chaos.tasks`` in the publisher and every worker; ``workers``:
    per-worker extra options (one entry per worker started); ``mode``: what the callback
    does; ``delay``: put workers behind the proxy with this delay (None: no proxy);
    ``act``: the fault, run once the chords are published; ``applies``: None, or why the
    fault means nothing for a kind."""

    name: str
    what: str
    parts: tuple[float, ...] = (1.0, 1.0, 1.0)
    deadline: float = 15.0
    conf: dict = field(default_factory=dict)
    chaos: dict = field(default_factory=dict)
    workers: tuple[dict, ...] = ({},)
    mode: str = "ok"
    delay: float | None = None
    act: Callable[[Run], None] | None = None
    applies: Callable[[Kind], str | None] = lambda kind: None


def kill_mid_header(run: Run) -> None:
    """SIGKILL the first worker once it holds header parts; the second one lives on."""
    worker = run.cluster.workers[0]
    run.wait_log(worker, "chaos.part", "received", 3)
    time.sleep(0.5)
    worker.kill()


def kill_mid_callback(run: Run) -> None:
    """SIGKILL the worker running the first callback; the other one lives on."""
    run.wait_event("run", 1)
    pid = next(e["pid"] for e in run.events() if e["e"] == "run")
    next(w for w in run.cluster.workers if w.process.pid == pid).kill()


def hang_store(run: Run) -> None:
    run.wait_log(run.cluster.workers[0], "chaos.part", "received", 1)
    with run.store_server().hung():
        time.sleep(15)


def wipe_store(run: Run) -> None:
    run.wait_log(run.cluster.workers[0], "chaos.part", "succeeded", 3)
    run.store_server().restart()


def restart_broker(run: Run) -> None:
    run.wait_log(run.cluster.workers[0], "chaos.part", "received", 3)
    run.servers.broker.restart()


def restart_postgres(run: Run) -> None:
    run.wait_log(run.cluster.workers[0], "chaos.part", "succeeded", 3)
    run.store_server().restart()


def reset_connections(run: Run) -> None:
    end = time.monotonic() + 10
    while time.monotonic() < end:
        time.sleep(1.5)
        run.proxy.reset()


def expire_results(run: Run) -> None:
    """Redis expires by TTL on its own; a ``db+`` backend forgets results when
    ``celery.backend_cleanup`` runs (beat's job): run it once the short expiry has passed."""
    if run.kind.join == "unlock":
        time.sleep(5)
        run.cluster.app.backend.cleanup()


def no_server(kind: Kind) -> str | None:
    return None if kind.server else "SQLite is a local file: no server"


def redis_only(kind: Kind) -> str | None:
    return None if kind.store == "redis" else "a restart keeps what was committed"


def postgres_only(kind: Kind) -> str | None:
    return None if kind.store == "postgres" else "no PostgreSQL in this kind"


def with_backend(kind: Kind) -> str | None:
    return "no result backend: results live in the barrier" if kind.join == "durable" else None


ACKS_LATE = {"task_acks_late": True, "worker_prefetch_multiplier": 1}
CALLBACK_NAMES = ["chaos.callback", "chaos.guarded_callback"]
TWO = ({}, {})

FAULTS = [
    Fault("none", "no fault (baseline)"),
    Fault("kill-header", "one of two workers SIGKILLed mid-header (acks_late off)",
          parts=(3, 3, 3), workers=TWO, act=kill_mid_header),
    Fault("kill-header-ackslate", "one of two workers SIGKILLed mid-header, acks_late",
          parts=(3, 3, 3), deadline=35, conf=ACKS_LATE, workers=TWO, act=kill_mid_header),
    Fault("kill-callback", "the worker running a callback SIGKILLed, acks_late",
          parts=(0.2, 0.2, 0.2), deadline=35, conf=ACKS_LATE, mode="slow", workers=TWO,
          act=kill_mid_callback),
    Fault("dup-header", "every header message delivered twice",
          chaos={"duplicate": ["chaos.part"]}),
    Fault("dup-callback", "every callback message delivered twice",
          chaos={"duplicate": CALLBACK_NAMES}),
    Fault("store-hang", "store/backend hung 15 s (SIGSTOP, SIGCONT)", parts=(2, 2, 2),
          deadline=40, act=hang_store, applies=no_server),
    Fault("store-wipe", "store/backend restarted empty (redis, no persistence)",
          act=wipe_store, parts=(0.5, 0.5, 4), applies=redis_only),
    Fault("broker-restart", "broker redis-server restarted mid-chord (queues lost)",
          parts=(2, 2, 2), act=restart_broker),
    Fault("pg-restart", "PostgreSQL restarted mid-chord (pg_ctl -m immediate)",
          parts=(0.5, 0.5, 4), act=restart_postgres, applies=postgres_only),
    Fault("net-delay", "30 ms added each way between workers and store", delay=0.03,
          applies=no_server),
    Fault("net-reset", "worker-store connections reset every 1.5 s for 10 s", delay=0.0,
          parts=(2, 2, 2), act=reset_connections, applies=no_server),
    Fault("result-expiry", "result_expires 3 s, chord lasts 7 s", parts=(0.3, 0.3, 7),
          conf={"result_expires": 3, "result_chord_expires": 3}, act=expire_results,
          applies=with_backend),
    Fault("callback-raises", "the callback raises", parts=(0.2, 0.2, 0.2), mode="raise"),
    Fault("callback-unjsonable", "the callback returns an object JSON cannot hold",
          parts=(0.2, 0.2, 0.2), mode="unjsonable"),
    Fault("clock-skew", "one of two workers' clock 30 s ahead", parts=(4, 4, 4), deadline=25,
          workers=({"clock_offset": 30}, {})),
]
