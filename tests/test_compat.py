"""What differs between Celery versions, checked on the version installed (scripts/compat-matrix
runs this on 5.3, 5.4, 5.5 and 5.6; the main suite on 5.7)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time

import celery
import pytest
from sqlalchemy import create_engine, text

from chordguard import _compat
from chordguard._compat import CeleryFacts
from chordguard.celery_hazards import hazards
from chordguard.doctor import AppConfig, lint
from chordguard.sources.result_tuples import header_ids, upstream_ids
from chordguard.sources.results import read_states
from tests.cluster import AMQP_URL, PG_BACKEND, PG_URL, REDIS_URL, ROOT, wait_for

pytestmark = pytest.mark.compat


def test_installed_version_is_supported_and_known():
    assert _compat.INSTALLED.version == tuple(int(p) for p in celery.__version__.split(".")[:2])
    assert _compat.INSTALLED.supported, f"celery {celery.__version__} outside 5.3 to 5.7"


@pytest.mark.parametrize(("version", "codes"), [
    ((5, 3), {"nested_chain_failure", "unlock_gives_up_silently", "redis_parts_counted_twice",
              "errback_taken_for_old_style", "no_result_chord_expires", "keyprefix_separator"}),
    ((5, 6), {"nested_chain_failure", "unlock_gives_up_silently", "redis_parts_counted_twice",
              "errback_taken_for_old_style", "no_result_chord_expires"}),
    ((5, 7), set()),
    ((5, 8), {"untested_celery_version"}),
])
def test_each_version_has_its_hazards(version, codes):
    assert {h.code for h in hazards(CeleryFacts(version))} == codes


def test_doctor_flags_9674_only_where_it_hangs_an_unguarded_unlock_chord():
    def found(version, backend, guarded=False):
        config = AppConfig(settings={"result_backend": backend, "task_time_limit": 60,
                                     "worker_send_task_events": True}, guarded=guarded,
                           celery=CeleryFacts(version))
        return {f.code for f in lint(config)}

    assert "nested_chain_failure" in found((5, 6), "db+postgresql://h/db")
    assert "nested_chain_failure" not in found((5, 7), "db+postgresql://h/db")
    assert "nested_chain_failure" not in found((5, 6), "redis://h")
    assert "nested_chain_failure" not in found((5, 6), "db+postgresql://h/db", guarded=True)
    assert "untested_celery_version" in found((5, 8), "redis://h")


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


def test_stored_results_of_every_version_decode_and_code_never_unpickles():
    assert _compat.stored_result(b'{"a": 1}', json.loads) == {"a": 1}  # 5.7: serializer bytes
    assert _compat.stored_result(pickle.dumps({"a": [1]}), json.loads) == {"a": [1]}  # 5.3-5.6
    with pytest.raises(ValueError, match="refusing"):
        _compat.stored_result(pickle.dumps(ValueError("x")), json.loads)
    assert _compat.stored_result(None, json.loads) is None


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


def test_result_tuples_of_a_nested_chain_header():
    fail, two, three, last, plain = "f", "2", "3", "4", "1"
    group_23 = [["g23", [[fail, None], None]], [[[two, None], None], [[three, None], None]]]
    result = [[[plain, None], None], [[last, group_23], None]]
    assert header_ids(result) == [plain, last]
    assert upstream_ids(result) == {last: [two, three, fail]}


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
