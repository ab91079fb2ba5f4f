"""The Celery app the tests run real workers for.

``make_app`` builds it from a namespace and URLs; a worker subprocess builds the same app
from ``CG_*`` environment variables (``celery -A tests.chordapp worker``). Every namespace
gets its own queues, control/event exchanges and Redis key prefix, so tests running side
by side never see each other's chords, messages or workers.
"""

from __future__ import annotations

import json
import os
import socket
import time

import pydantic
from celery import Celery, chord


def make_app(namespace: str, broker: str, backend: str | None, conf: dict | None = None,
             ) -> Celery:
    app = Celery(f"chordapp-{namespace}", broker=broker, backend=backend)
    settings = {
        "task_default_queue": f"cg-{namespace}",
        "control_exchange": f"cgctl-{namespace}",
        "event_exchange": f"cgev-{namespace}",
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_chord_retry_interval": 1.0,
        "worker_prefetch_multiplier": 4,
    }
    if broker.startswith("redis"):
        settings["broker_transport_options"] = {"global_keyprefix": f"{namespace}:"}
    if backend and backend.startswith("redis"):
        settings["result_backend_transport_options"] = {"global_keyprefix": f"{namespace}:"}
    settings.update(conf or {})
    if broker.startswith("redis"):  # extra transport options keep the namespace's key prefix
        settings["broker_transport_options"] = {"global_keyprefix": f"{namespace}:",
                                                **settings["broker_transport_options"]}
    app.conf.update(settings)
    register_tasks(app)
    register_guarded_tasks(app)
    if settings.get("cg_chaos"):
        from chaos.tasks import register as register_chaos

        register_chaos(app, settings["cg_chaos"])
    if settings.get("guard") is not None:
        import chordguard

        chordguard.install(app, **settings["guard"])
    if settings.get("cg_pause_after_retry_of"):
        pause_after_retry(namespace, settings["cg_pause_after_retry_of"])
    if settings.get("cg_trace_unlock"):
        trace_unlock(namespace)
    if settings.get("cg_stall_publish_of"):
        stall_publish(settings["cg_stall_publish_of"])
    if settings.get("cg_clock_offset"):
        skew_clock(float(settings["cg_clock_offset"]))
    if settings.get("cg_durable"):
        from chordguard.durable import enable

        enable()
    if settings.get("cg_periodic"):
        from chordguard.guard.periodic import setup_periodic_monitoring

        setup_periodic_monitoring(app, **settings["cg_periodic"])
    return app


def skew_clock(offset: float) -> None:
    """This process's wall clock reads ``offset`` seconds off (a worker whose clock is
    wrong); monotonic time is left alone."""
    real = time.time
    time.time = lambda: real() + offset


def stall_publish(task_name: str, seconds: float = 600.0) -> None:
    """Block whoever publishes ``task_name`` (a worker dispatching a chord callback), so a
    test can SIGKILL it in the window between Celery's dispatch claim and the publish."""
    from celery.signals import before_task_publish

    def stall(sender=None, **_kwargs):
        if sender == task_name:
            time.sleep(seconds)

    before_task_publish.connect(stall, weak=False)


def register_tasks(app: Celery) -> None:
    @app.task(shared=False, name="t.add")
    def add(x, y):
        return x + y

    @app.task(shared=False, name="t.echo")
    def echo(value):
        return value

    @app.task(shared=False, name="t.sleep")
    def sleep(seconds, value=None):
        time.sleep(seconds)
        return value if value is not None else seconds

    @app.task(shared=False, name="t.fail")
    def fail(message="boom"):
        raise RuntimeError(message)

    @app.task(shared=False, name="t.none")
    def none():
        return None

    @app.task(shared=False, name="t.tsum")
    def tsum(values):
        return sum(values)

    @app.task(shared=False, bind=True, name="t.replaced_sum")
    def replaced_sum(self, values):
        """A body that replaces itself (Task.replace): its final task carries no stamp."""
        raise self.replace(app.signature("t.tsum", (values,), immutable=True))

    @app.task(shared=False, bind=True, name="t.add_to_chord")
    def add_to_chord(self, nums, val, as_chord=False):
        """A header part that adds tasks (or one chord) to its own chord (Task.add_to_chord)."""
        added = [app.signature("t.add", (num, val)) for num in nums]
        if as_chord:
            added = [chord(added, app.signature("t.tsum"))]
        for sig in added:
            self.add_to_chord(sig)
        return 0

    @app.task(shared=False, name="t.collect")
    def collect(values):
        return list(values)

    @app.task(shared=False, name="t.sum_files")
    def sum_files(results):
        """The post-mortem's callback: crashes with TypeError on a None result."""
        return sum(r["successful_files"] for r in results)

    @app.task(shared=False, name="t.record")
    def record(results, key):
        """A callback that leaves one Redis list entry per run: counts runs without a backend."""
        values = list(results)
        trace_redis().rpush(key, json.dumps(values))
        return len(values)

    @app.task(shared=False, name="t.note")
    def note(value, *, key):
        """An errback (gets the failed task's id) that leaves one Redis list entry per run.
        ``key`` is keyword-only: before 5.7 Celery takes a task with two positional
        parameters for an old-style (request, exc, traceback) errback."""
        trace_redis().rpush(key, json.dumps(value))

    @app.task(shared=False, name="t.loud_errback")
    def loud_errback(request, exc, traceback):
        """An old-style errback: Celery runs it in the process that marks the failure."""
        print(f"LOUD ERRBACK for {request.id}: {exc}")

    @app.task(shared=False, name="t.where_errback")
    def where_errback(request, exc, traceback):
        """An old-style errback that prints, then records which process ran it."""
        print(f"WHERE ERRBACK for {request.id}")
        trace_redis().rpush(f"cg:errback:{request.id}", json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname()}))

    @app.task(shared=False, name="t.raising_errback")
    def raising_errback(request, exc, traceback):
        """An old-style errback that prints and raises."""
        print(f"RAISING ERRBACK for {request.id}")
        raise RuntimeError("the errback blew up")

    @app.task(shared=False, name="t.slow_record")
    def slow_record(values, seconds, key):
        """A slow callback that leaves one Redis list entry per run (per delivery)."""
        trace_redis().rpush(key, json.dumps(values))
        time.sleep(seconds)
        return len(values)

    @app.task(shared=False, name="t.stamp")
    def stamp(value=None):
        """A header that returns the wall time it finished at."""
        return time.time()

    @app.task(shared=False, name="t.fanin")
    def fanin(stamps, key):
        """A callback that records how long after the last header finished it started."""
        started = time.time()
        trace_redis().rpush(key, json.dumps({"latency": started - max(stamps),
                                             "n": len(stamps), "at": started}))

    @app.task(shared=False, name="t.sleep_until")
    def sleep_until(at, value=None):
        """Finish at wall time ``at``: lets two workers finish a chord's last parts together."""
        time.sleep(max(0.0, at - time.time()))
        return value


class FileCount(pydantic.BaseModel):
    """What a post-mortem header task returns."""

    successful_files: int


def register_guarded_tasks(app: Celery) -> None:
    """Tasks written with chordguard's task patterns."""
    import chordguard

    @chordguard.chord_callback(app=app, name="t.guarded_sum", schema=FileCount, shared=False)
    def guarded_sum(successes, failures):
        """The post-mortem's callback, guarded: crashes when any header failed."""
        if failures:
            raise ValueError(f"{len(failures)} header task(s) failed: {failures}")
        return sum(r.successful_files for r in successes)

    @chordguard.chord_callback(app=app, name="t.guarded_record", shared=False)
    def guarded_record(successes, failures, key):
        """Leaves one Redis list entry per body run: counts runs of a run-once callback."""
        trace_redis().rpush(key, json.dumps([successes, failures]))
        return len(successes)

    @chordguard.chord_callback(app=app, name="t.guarded_slow", shared=False)
    def guarded_slow(successes, failures, seconds, key):
        """A slow run-once callback that leaves one Redis list entry per body run."""
        trace_redis().rpush(key, json.dumps(successes))
        time.sleep(seconds)
        return len(successes)

    @chordguard.header_task(app=app, name="t.files", shared=False)
    def files(n: int, fail: bool = False) -> dict:
        if fail:
            raise OSError(f"could not read {n} files")
        return {"successful_files": n}


def pause_after_retry(namespace: str, task_name: str, seconds: float = 600.0) -> None:
    """Hold the first worker that re-publishes ``task_name`` by a retry, after the publish and
    before its message is acknowledged (once per namespace), so a test can SIGKILL it there:
    under acks_late the old message comes back while the new one is queued."""
    from celery.signals import after_task_publish

    def pause(sender=None, headers=None, **_kwargs):
        if sender == task_name and (headers or {}).get("retries") and \
                trace_redis().set(f"cg:{namespace}:paused", 1, nx=True, ex=3600):
            time.sleep(seconds)

    after_task_publish.connect(pause, weak=False)


def trace_unlock(namespace: str) -> None:
    """Record every celery.chord_unlock run (retry count, time) in the Redis list
    ``cg:<namespace>:unlock``: two chains of one chord show the same retry count twice."""
    from celery.signals import task_prerun

    def record(sender=None, task=None, args=None, **_kwargs):
        if task is not None and task.name == "celery.chord_unlock":
            trace_redis().rpush(f"cg:{namespace}:unlock", json.dumps(
                {"chord": (args or [None])[0], "retries": task.request.retries,
                 "at": time.time()}))

    task_prerun.connect(record, weak=False)


def trace_redis():
    import redis

    return redis.Redis.from_url(os.environ.get("CG_TEST_REDIS", "redis://127.0.0.1:6379/0"))


def app_from_env() -> Celery:
    return make_app(os.environ["CG_NAMESPACE"], os.environ["CG_BROKER"],
                    os.environ.get("CG_BACKEND") or None,
                    json.loads(os.environ.get("CG_CONF") or "{}"))


if os.environ.get("CG_NAMESPACE"):
    app = app_from_env()
