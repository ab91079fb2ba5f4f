"""A real Django project for tests (``tests/django_project``): its own database, queues and
store, ``manage.py`` and ``celery -A proj worker`` subprocesses run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import redis
from celery import Celery

from tests.cluster import REDIS_URL, ROOT, Worker, wait_for

PROJECT = ROOT / "tests" / "django_project"
PG_ADMIN = os.environ.get("CG_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")


class DjangoProject:
    """The test project with a fresh database (PostgreSQL, or ``sqlite`` in ``tmp``)."""

    def __init__(self, tmp: Path, database: str = "postgresql", **env: str) -> None:
        self.namespace = "dj" + uuid.uuid4().hex[:10]
        self.tmp = tmp
        self.store = f"sqlite:///{tmp / 'chordguard.sqlite'}"
        self.sqlite = database == "sqlite"
        self.db = str(tmp / "db.sqlite3") if self.sqlite else f"cg_django_{self.namespace}"
        self.extra = dict(env)
        self.errback_log = tmp / "errbacks.log"
        self.workers: list[Worker] = []
        if not self.sqlite:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.db}"')
        self.control = Celery("djangoproj-control", broker=REDIS_URL)
        self.control.conf.update(control_exchange=f"cgctl-{self.namespace}",
                                 broker_transport_options={
                                     "global_keyprefix": f"{self.namespace}:"})

    @property
    def queue(self) -> str:
        return f"cg-{self.namespace}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        env.update(CG_NAMESPACE=self.namespace, CG_BROKER=REDIS_URL, CG_STORE=self.store,
                   CG_DJANGO_DB=("sqlite:" if self.sqlite else "") + self.db,
                   CG_ERRBACK_LOG=str(self.errback_log),
                   PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT),
                                               env.get("PYTHONPATH", "")]))
        env.update(self.extra)
        env.update(extra)
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 120,
            **env: str) -> subprocess.CompletedProcess:
        """Run a command in the project directory, as a user would."""
        done = subprocess.run(list(args), cwd=PROJECT, env=self.env(**env), capture_output=True,
                              text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, (f"{args} exited {done.returncode}:\n{done.stdout}\n"
                                          f"{done.stderr}")
        return done

    def manage(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "manage.py", *args, check=check, **env)

    def shell(self, code: str, **env: str) -> object:
        """Run ``code`` in ``manage.py shell`` (Django set up); return what it printed last,
        read as JSON."""
        done = self.manage("shell", "-c", code, **env)
        return json.loads(done.stdout.strip().splitlines()[-1])

    def chordguard(self, *args: str, check: bool = False, **env: str,
                   ) -> subprocess.CompletedProcess:
        """``chordguard -A proj ARGS`` in the project directory."""
        return self.run(sys.executable, "-m", "chordguard", "-A", "proj", *args, check=check,
                        **env)

    def start_worker(self, queues: list[str] | None = None) -> Worker:
        """``celery -A proj worker`` with Celery's defaults (gossip, mingle, heartbeats, the
        prefork pool); returns once it answers a ping. One process on SQLite: parts returning
        at once fail there with "database is locked" (doctor's ``django_db_sqlite``)."""
        concurrency = 1 if self.sqlite else 2
        name = f"w{len(self.workers)}-{self.namespace}@localhost"
        log = self.tmp / f"{name.split('@')[0]}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "proj", "worker", "-c", str(concurrency),
             "-n", name, "-Q", ",".join(queues or [self.queue]), "-l", "INFO"],
            cwd=PROJECT, env=self.env(), stdout=log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True)
        worker = Worker(process, name, log)
        self.workers.append(worker)
        end = time.monotonic() + 60
        while not self.control.control.ping(destination=[name], timeout=0.5):
            if not worker.alive or time.monotonic() > end:
                raise AssertionError(f"worker {name} did not start:\n{worker.output()[-3000:]}")
        return worker

    def sql(self, query: str, *params: object) -> list[tuple]:
        """Rows of ``query`` on the project's database (django-celery-results' tables)."""
        if self.sqlite:
            import sqlite3

            with sqlite3.connect(self.db) as conn:
                return conn.execute(query.replace("%s", "?"), params).fetchall()
        with psycopg.connect(PG_ADMIN.rsplit("/", 1)[0] + "/" + self.db) as conn:
            return conn.execute(query, params).fetchall()

    def task_state(self, task_id: str) -> str | None:
        rows = self.sql("SELECT status FROM django_celery_results_taskresult WHERE task_id = %s",
                        task_id)
        return rows[0][0] if rows else None

    def counter(self, group_id: str) -> int | None:
        rows = self.sql("SELECT count FROM django_celery_results_chordcounter "
                        "WHERE group_id = %s", group_id)
        return rows[0][0] if rows else None

    def wait_state(self, task_id: str, states: set[str], timeout: float = 60) -> str:
        return wait_for(lambda: (s := self.task_state(task_id)) in states and s, timeout,
                        what=f"task {task_id} in {sorted(states)}")

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{self.namespace}:*", count=1000):
            client.delete(key)
        self.control.close()
        if not self.sqlite:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
