"""The tasks a chaos cell runs, and the worker-side faults (duplicate publishing, a clock off).

Every callback run, success, failure and errback is appended to a trace list in the shared
Redis (``CG_TEST_REDIS``), which no fault touches: the harness counts from it. Times in the
trace are real wall time, also in a worker whose clock is set off.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from celery import Celery, signals

import chordguard
from tests.chordapp import trace_redis

REAL_TIME = time.time  # kept before a clock offset replaces time.time
CALLBACKS = ("chaos.callback", "chaos.guarded_callback")


def event(key: str, name: str, n: Any) -> None:
    trace_redis().rpush(key, json.dumps({"e": name, "n": n, "at": REAL_TIME(),
                                         "pid": os.getpid()}))


def register(app: Celery, options: dict[str, Any]) -> None:
    """Register the chaos tasks on ``app``; ``options``: ``trace`` (the trace key),
    ``duplicate`` (task names published twice), ``clock_offset`` (seconds added to
    ``time.time`` in this process)."""
    key = options["trace"]

    @app.task(shared=False, name="chaos.part")
    def part(index: int, seconds: float) -> int:
        time.sleep(seconds)
        return index

    @app.task(shared=False, name="chaos.callback")
    def callback(results: Any, n: int, mode: str = "ok") -> Any:
        return _body(key, n, mode, list(results))

    @chordguard.chord_callback(app=app, name="chaos.guarded_callback", shared=False)
    def guarded_callback(successes: list, failures: list, n: int, mode: str = "ok") -> Any:
        return _body(key, n, mode, successes, failures)

    @app.task(shared=False, name="chaos.errback")
    def errback(task_id: Any = None, *, n: int) -> None:
        event(key, "errback", n)

    def on_success(sender=None, **_: Any) -> None:
        if sender is not None and sender.name in CALLBACKS and sender.app is app:
            event(key, "ok", (sender.request.kwargs or {}).get("n"))

    def on_failure(sender=None, kwargs=None, **_: Any) -> None:
        if sender is not None and sender.name in CALLBACKS and sender.app is app:
            event(key, "fail", (kwargs or {}).get("n"))

    signals.task_success.connect(on_success, weak=False)
    signals.task_failure.connect(on_failure, weak=False)
    if options.get("duplicate"):
        publish_twice(app, set(options["duplicate"]), app.conf.task_default_queue)
    if options.get("clock_offset"):
        offset = float(options["clock_offset"])
        time.time = lambda: REAL_TIME() + offset


def _body(key: str, n: int, mode: str, results: list, failures: list | None = None) -> Any:
    event(key, "run", n)
    if mode == "slow":
        time.sleep(4)
    if mode == "raise":
        raise RuntimeError(f"chaos callback of chord {n} raised")
    if mode == "unjsonable":
        return object()
    if failures:
        raise RuntimeError(f"{len(failures)} header part(s) failed: {failures}")
    return len(results)


def publish_twice(app: Celery, names: set[str], queue: str) -> None:
    """Publish every message of a task in ``names`` to ``queue`` a second time, as it was:
    the broker delivers it twice (same task id, same headers)."""
    local = threading.local()

    def before(sender=None, body=None, exchange=None, routing_key=None, headers=None,
               properties=None, **_: Any) -> None:
        if sender in names and routing_key == queue and not getattr(local, "busy", False):
            local.pending = (body, exchange, routing_key, dict(headers or {}),
                             dict(properties or {}))

    def after(sender=None, **_: Any) -> None:
        pending, local.pending = getattr(local, "pending", None), None
        if pending is None:
            return
        body, exchange, routing_key, headers, properties = pending
        local.busy = True
        try:
            with app.producer_or_acquire() as producer:
                producer.publish(body, exchange=exchange or "", routing_key=routing_key,
                                 headers=headers, serializer="json", **properties)
        finally:
            local.busy = False

    signals.before_task_publish.connect(before, weak=False)
    signals.after_task_publish.connect(after, weak=False)
