"""Start-up: ``--version`` answers at once, and a command loads only the modules it uses."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import uuid

from tests.cluster import REDIS_URL, ROOT, Cluster

HEAVY = ("sqlalchemy", "starlette", "uvicorn", "prometheus_client", "rich.table")


def test_version_is_the_package_version():
    expected = f"chordguard {importlib.metadata.version('chordguard')}\n"
    for args in (["--version"], ["-A", "no.such.app", "--version"]):  # fast path, click's
        done = subprocess.run([sys.executable, "-m", "chordguard", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=30)
        assert (done.returncode, done.stdout, done.stderr) == (0, expected, ""), args


def imported_modules(cluster: Cluster, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run the CLI under ``-X importtime``: what it printed, and every module it imported."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "chordguard", "-A",
                           "tests.chordapp", *args], env=cluster.env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    modules = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    assert "chordguard.cli" in modules, done.stderr[-2000:]
    return done, modules


def test_check_of_a_redis_app_without_sql_store_loads_nothing_heavy(make_cluster):
    cluster = make_cluster(REDIS_URL, REDIS_URL)
    cluster.app.backend.set_chord_size(str(uuid.uuid4()), 2)  # a chord just applied
    done, modules = imported_modules(cluster, "check", "--max-hours", "1")
    assert done.returncode == 0 and "no stuck chords (1 in flight" in done.stdout, done.stdout
    loaded = sorted(m for m in modules if m.startswith(HEAVY))
    assert loaded == [], loaded
    assert "redis" in modules  # what it does need: the chord keys are read with redis-py


EXIT_APP = '''
import atexit, os
from celery import Celery

app = Celery("exitapp", broker=os.environ["CG_EXIT_URL"], backend=os.environ["CG_EXIT_URL"])
app.conf.broker_transport_options = {"global_keyprefix": "exitapp:"}
note = lambda what: open(os.environ["CG_EXIT_MARKS"], "a").write(what + "\\n")
atexit.register(note, "atexit")
_close = app.close
def close():
    note("closed")
    _close()
app.close = close
'''


def test_a_finished_command_leaves_as_python_would(tmp_path):
    """The CLI skips the interpreter's teardown of its modules when a command is done; what
    an exit does for the user still happens: the app's connections are closed (a RabbitMQ
    broker logs a dropped one), its exit handlers run, and every line reaches the pipe."""
    (tmp_path / "exitapp.py").write_text(EXIT_APP)
    marks = tmp_path / "marks"
    env = {**os.environ, "CG_EXIT_URL": REDIS_URL, "CG_EXIT_MARKS": str(marks),
           "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "chordguard", "-A", "exitapp", "status",
                           "--json"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    document = json.loads(done.stdout)  # whole: the output was flushed before leaving
    verdicts = {"healthy": 0, "unhealthy": 1, "unknown": 3}
    assert done.returncode == verdicts[document["health"]["status"]], done.stderr[-2000:]
    assert marks.read_text().splitlines() == ["closed", "atexit"]
