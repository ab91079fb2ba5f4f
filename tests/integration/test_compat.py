"""What differs between Celery versions, checked on the version installed with real services
(scripts/compat-matrix runs this on 5.3, 5.4, 5.5 and 5.6; the main suite on 5.7)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import celery
import pytest
from sqlalchemy import create_engine, text

from chordguard import _compat
from chordguard.monitor.celery_hazards import hazards
from chordguard.monitor.sources.results import read_states
from tests.cluster import AMQP_URL, PG_BACKEND, PG_URL, REDIS_URL, ROOT, wait_for

pytestmark = pytest.mark.compat




def test_doctor_cli_names_the_installed_versions_hazards():
    run = subprocess.run([sys.executable, "-m", "chordguard", "--broker", REDIS_URL,
                          "--backend", PG_BACKEND, "doctor", "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    document = json.loads(run.stdout)
    assert document["celery"]["version"] == celery.__version__
    codes = {h["code"] for h in document["celery"]["hazards"]}
    assert codes == {h.code for h in hazards(_compat.INSTALLED)}
    assert ("nested_chain_failure" in codes) != _compat.NESTED_CHAIN_FAILURE_PROPAGATES
    assert all(h["chordguard"] for h in document["celery"]["hazards"])
    findings = {f["code"] for f in document["findings"]}
    assert ("nested_chain_failure" in findings) != _compat.NESTED_CHAIN_FAILURE_PROPAGATES
    text_run = subprocess.run([sys.executable, "-m", "chordguard", "--broker", REDIS_URL,
                               "--backend", PG_BACKEND, "doctor"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    assert f"Celery {celery.__version__}: known chord hazards" in text_run.stdout


def test_database_results_are_read_on_this_version(make_cluster):
    cluster = make_cluster(REDIS_URL, PG_BACKEND)
    cluster.start_worker()
    done = cluster.app.signature("t.echo", ({"files": 3},)).delay()
    assert done.get(timeout=30) == {"files": 3}
    states, how = read_states(cluster.app, [done.id, "never-ran"])
    assert "celery_taskmeta" in how and set(states) == {done.id}
    assert states[done.id].state == "SUCCESS" and states[done.id].result == {"files": 3}
    with create_engine(PG_URL).connect() as db:  # what this Celery wrote: pickle before 5.7
        raw = db.execute(text("SELECT result FROM celery_taskmeta WHERE task_id = :t"),
                         {"t": done.id}).scalar_one()
    assert (bytes(raw)[:1] == b"\x80") == _compat.INSTALLED.db_results_pickled


def test_inspect_time_start_is_wall_time_of_the_current_run(make_cluster):
    cluster = make_cluster(AMQP_URL, None)
    cluster.start_worker(pool="prefork", concurrency=1)
    running = cluster.app.signature("t.sleep", (20,)).delay()

    def active():
        replies = cluster.app.control.inspect(timeout=1).active() or {}
        return next((t for tasks in replies.values() for t in tasks if t["id"] == running.id),
                    None)

    task = wait_for(active, what="the task to run")
    assert abs(task["time_start"] - time.time()) < 10, task["time_start"]
