"""Installed like a user installs it: the wheel alone in a fresh venv (no test extras, nothing
from this checkout on the path) runs a Redis-broker worker, a chord, ``status`` and ``demo``.
This is what catches a dependency that only the test extras happened to bring."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import redis

from tests.cluster import REDIS_URL, ROOT

USER_APP = """
from celery import Celery

app = Celery("userapp", broker={url!r}, backend={url!r})
app.conf.update(task_default_queue={queue!r}, control_exchange={queue!r} + "-ctl",
                broker_transport_options={{"global_keyprefix": {prefix!r}}},
                result_backend_transport_options={{"global_keyprefix": {prefix!r}}})


@app.task
def square(x):
    return x * x


@app.task
def total(values):
    return sum(values)
"""
CHORD = """
from celery import chord
from userapp import app, square, total
print("total", chord(square.s(i) for i in range(10))(total.s()).get(timeout=60))
"""


def run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def test_the_wheel_alone_runs_a_worker_a_chord_status_and_demo(tmp_path):
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        tmp_path)
    [wheel] = wheels.glob("chordguard-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    bin_dir = venv / "bin"
    run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         str(wheel)], tmp_path, timeout=600)
    extras = run([str(bin_dir / "python"), "-c", "import importlib.util as u; "
                  "print([m for m in ('pytest', 'pydantic', 'httpx') if u.find_spec(m)])"],
                 tmp_path)
    assert extras.stdout.strip() == "[]", "the venv must hold no test extras"

    app_dir = tmp_path / "app"
    app_dir.mkdir()
    namespace = "u" + uuid.uuid4().hex[:10]
    (app_dir / "userapp.py").write_text(textwrap.dedent(USER_APP.format(
        url=REDIS_URL, queue=f"cg-{namespace}", prefix=f"{namespace}:")))
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen([str(bin_dir / "celery"), "-A", "userapp", "worker", "-P",
                               "threads", "-c", "2", "--without-mingle", "--without-gossip"],
                              cwd=app_dir, stdout=log, stderr=subprocess.STDOUT,
                              env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                              start_new_session=True)
    try:
        chord_run = run([str(bin_dir / "python"), "-c", CHORD], app_dir, timeout=90)
        assert "total 285" in chord_run.stdout
        status = run([str(bin_dir / "chordguard"), "-A", "userapp", "status"], app_dir)
        assert "healthy" in status.stdout.lower(), status.stdout
    finally:
        worker.kill()
        worker.wait(10)
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            client.delete(key)
    assert "ModuleNotFoundError" not in (tmp_path / "worker.log").read_text()

    demo = run([str(bin_dir / "chordguard"), "demo", "--dir", str(tmp_path / "demo")], tmp_path)
    assert "lost_header" in demo.stdout and "ChordError" in demo.stdout
