"""Real clusters for tests: an app in its own namespace plus real worker subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis
from celery import Celery, chord

from tests.chordapp import make_app

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("CG_TEST_REDIS", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("CG_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
PG_URL = os.environ.get("CG_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PG_BACKEND = "db+" + PG_URL


class Worker:
    """A ``celery worker`` subprocess; its log is kept for assertions and failure reports."""

    def __init__(self, process: subprocess.Popen, name: str, log: Path) -> None:
        self.process, self.name, self.log = process, name, log

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and any pool children)."""
        if self.alive:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)



class Cluster:
    """An app with its own queues, exchanges and key prefix, and the workers started for it."""

    def __init__(self, broker: str, backend: str | None, conf: dict | None = None,
                 tmp: Path | None = None) -> None:
        self.namespace = "t" + uuid.uuid4().hex[:10]
        self.broker, self.backend, self.conf = broker, backend, dict(conf or {})
        self.tmp = tmp or Path("/tmp")
        self.app: Celery = make_app(self.namespace, broker, backend, self.conf)
        self.workers: list[Worker] = []

    @property
    def queue(self) -> str:
        return self.app.conf.task_default_queue

    def group_key(self, group_id: str, suffix: str = "") -> str:
        """A Redis result key of the group, as this Celery builds it (5.3/5.4 put a '_'
        after every global_keyprefix, 5.5+ only after one not ending in ':_-.')."""
        prefix = self.app.backend.group_keyprefix
        return (prefix.decode() if isinstance(prefix, bytes) else prefix) + group_id + suffix

    def env(self, **extra: str) -> dict[str, str]:
        """Environment that makes ``tests.chordapp`` build this cluster's app."""
        env = dict(os.environ)
        env.update(CG_NAMESPACE=self.namespace, CG_BROKER=self.broker,
                   CG_BACKEND=self.backend or "", CG_CONF=json.dumps(self.conf),
                   PYTHONPATH=f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}")
        env.update(extra)
        return env

    def start_worker(self, queues: list[str] | None = None, concurrency: int = 4,
                     pool: str = "threads", conf: dict | None = None, wait: bool = True,
                     extra_args: list[str] | None = None, celery_defaults: bool = True,
                     ) -> Worker:
        """Start ``celery worker`` for this app and wait until it answers a ping.

        ``celery_defaults``: gossip, mingle and heartbeats on, as users run workers (each
        test's app has its own control and event exchanges: no cross-talk); False adds
        ``--without-mingle --without-gossip`` for a test about them."""
        name = f"w{len(self.workers)}-{self.namespace}@localhost"
        log = self.tmp / f"{name.split('@')[0]}.log"
        env = self.env()
        if conf:
            env["CG_CONF"] = json.dumps({**self.conf, **conf})
        args = [sys.executable, "-m", "celery", "-A", "tests.chordapp", "worker", "-P", pool,
                "-c", str(concurrency), "-n", name, "-Q", ",".join(queues or [self.queue]),
                *([] if celery_defaults else ["--without-mingle", "--without-gossip"]),
                "-l", "INFO", *(extra_args or [])]
        process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log.open("w"),
                                   stderr=subprocess.STDOUT, start_new_session=True)
        worker = Worker(process, name, log)
        self.workers.append(worker)
        if wait:
            self.wait_ready(worker)
        return worker

    def wait_ready(self, worker: Worker, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not worker.alive:
                raise RuntimeError(f"worker {worker.name} exited:\n{worker.output()[-3000:]}")
            if self.app.control.ping(destination=[worker.name], timeout=0.5):
                return
        raise RuntimeError(f"worker {worker.name} did not answer within {timeout:.0f} s:\n"
                           f"{worker.output()[-3000:]}")

    def close(self) -> None:
        """SIGKILL the workers (no waiting on sleeping headers), then remove what this
        namespace left: its Redis keys and, on RabbitMQ, its default queue."""
        for worker in self.workers:
            worker.kill()
        if REDIS_URL.split("://")[0] in (self.broker.split("://")[0],
                                        (self.backend or "").split("://")[0]):
            client = redis.Redis.from_url(REDIS_URL)
            for key in client.scan_iter(match=f"{self.namespace}:*", count=1000):
                client.delete(key)
        if self.broker.startswith("amqp"):
            with self.app.connection_for_write() as conn:
                conn.default_channel.queue_delete(self.queue)
        self.app.close()


def lost_counter_chord(cluster: Cluster) -> str:
    """A Redis chord whose first part finished and whose ``.s`` counter was then deleted
    while the second part still runs: stuck for ever (``counter_lost``). Returns its id."""
    app = cluster.app
    result = chord([app.signature("t.sleep", (0.1,)), app.signature("t.sleep", (120,))])(
        app.signature("t.tsum"))
    gid = result.parent.id
    client = redis.Redis.from_url(REDIS_URL)
    wait_for(lambda: client.exists(cluster.group_key(gid, ".j")), what="first part done")
    assert client.delete(cluster.group_key(gid, ".s")) == 1
    return gid


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def chordguard_cli(cluster: Cluster, *args: str, timeout: float = 60.0,
                   ) -> subprocess.CompletedProcess:
    """Run ``chordguard -A tests.chordapp ARGS`` against the cluster, as a user would."""
    return subprocess.run([sys.executable, "-m", "chordguard", "-A", "tests.chordapp", *args],
                          env=cluster.env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
