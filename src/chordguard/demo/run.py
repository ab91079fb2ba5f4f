"""``chordguard demo``: a real embedded cluster, one healthy chord, one stuck chord, the monitor.

No servers: the broker and result backend are files (see ``demo_app``); the worker is a real
``celery worker`` subprocess.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from celery import chord
from rich.console import Console
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from ..errors import ChordguardError
from .app import make_demo_app

WORKER_START_TIMEOUT = 30.0
DETECT_TIMEOUT = 120.0  # a busy machine: a look whose worker did not answer is retried


class DemoError(ChordguardError):
    """The demo cluster did not behave (worker did not start, a chord did not run)."""


def run_demo(root: Path, console: Console) -> int:
    """Run the demo in ``root``; return 0 when the monitor found the stuck chord."""
    root.mkdir(parents=True, exist_ok=True)
    env = _contained(root)
    app = make_demo_app(root)
    console.print(Rule("chordguard demo"))
    console.print(f"embedded cluster in {root}: filesystem broker, SQLite result backend")
    worker = _start_worker(env, root)
    try:
        _wait_for_worker(app, worker, root)
        console.print("[green]worker up[/] (celery worker -P threads, a real subprocess)")

        healthy = chord(app.signature("demo.square", (i,)) for i in range(10))(
            app.signature("demo.total"))
        total = healthy.get(timeout=60)
        finished = Table("chord id", "callback", "header", "state", "result",
                         title="The healthy chord (finished: it leaves the in-flight list)",
                         title_justify="left")
        finished.add_row(healthy.parent.id, "demo.total", "10 x demo.square", healthy.state,
                         str(total))
        console.print(finished)

        quick = app.signature("demo.square", (3,))
        slow = app.signature("demo.slow", (4, 1))
        stuck = chord([quick, slow])(app.signature("demo.total"))
        quick_id = stuck.parent.results[0].id
        _wait(lambda: app.AsyncResult(quick_id).state == "SUCCESS", 30, "the quick header")
        _delete_result(root / "results.sqlite", quick_id)
        console.print(f"stuck chord {stuck.parent.id}: deleted header {quick_id}'s result "
                      "(as result_expires or backend_cleanup would) while the slow header ran;"
                      " celery.chord_unlock will now poll forever")
        console.print(Rule("chordguard status  (once the lost-header grace has passed)"))
        console.print(_until(env, ("status",), lambda _, out: "lost_header" in out,
                             "status to diagnose the stuck chord"))
        console.print(Rule("chordguard check --max-hours 1"))
        check = _until(env, ("check", "--max-hours", "1"), lambda code, _: code == 1,
                       "check to report the stuck chord")
        console.print(check)
        console.print(Rule("chordguard revoke --max-hours 1 --force  (fails the stuck chord)"))
        revoke = _until(env, ("revoke", "--max-hours", "1", "--force"),
                        lambda _, out: "failed" in out, "revoke to fail the stuck chord")
        console.print(revoke)
        _wait(lambda: stuck.state == "FAILURE", 20, "the callback to be marked FAILURE")
        console.print(f"callback {stuck.id} is now [bold]{stuck.state}[/]: "
                      f"{stuck.result!r} — nobody waits on it forever")
        return 0
    finally:
        _stop(worker)
        app.close()


def _contained(root: Path) -> dict[str, str]:
    """The worker's and the commands' environment: whatever chordguard keeps for a user (the
    workers' roster, the default store) goes under ``root``, never into the user's store."""
    env = {k: v for k, v in os.environ.items() if k != "CHORDGUARD_STORE"}
    return {**env, "CHORDGUARD_DEMO_DIR": str(root), "XDG_STATE_HOME": str(root / "state")}


def _start_worker(env: dict[str, str], root: Path) -> subprocess.Popen:
    log = (root / "worker.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "chordguard.demo.app", "worker", "-P", "threads",
         "-c", "4", "-n", "demo@localhost", "--without-mingle", "--without-gossip",
         "-l", "INFO"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_worker(app, worker: subprocess.Popen, root: Path) -> None:
    end = time.monotonic() + WORKER_START_TIMEOUT
    while time.monotonic() < end:
        if worker.poll() is not None:
            raise DemoError(f"the demo worker exited; see {root / 'worker.log'}")
        if app.control.ping(timeout=0.5):
            return
    raise DemoError(f"the demo worker did not start; see {root / 'worker.log'}")


def _delete_result(database: Path, task_id: str) -> None:
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM celery_taskmeta WHERE task_id = ?", (task_id,))


def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run a chordguard command as a user would; return its exit code and output."""
    command = [sys.executable, "-m", "chordguard", "-A", "chordguard.demo.app", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, Text.from_ansi(done.stdout + done.stderr)


def _until(env: dict[str, str], args: tuple[str, ...], accept, what: str) -> Text:
    """Re-run a command until ``accept(code, plain output)``; return that run's output.

    A lost header is reported only once every worker answered and every queue was read in
    the same look, so a look that catches the unlock message in transit waits for the next.
    """
    end = time.monotonic() + DETECT_TIMEOUT
    while time.monotonic() < end:
        code, output = _cli(env, *args)
        if accept(code, output.plain):
            return output
        time.sleep(1)
    raise DemoError(f"timed out waiting for {what}")


def _wait(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.5)
    raise DemoError(f"timed out waiting for {what}")


def _stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
