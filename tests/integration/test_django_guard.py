"""The guard in a real Django project with django-celery-results (``django-db``): installed in
``proj/celery.py`` it breaks nothing, joins chords as the ``django`` kind, and ends a chord
that cannot finish within a reaper interval of its deadline, for good."""

from __future__ import annotations

import json
import time
from datetime import UTC

import pytest
import redis

from chordguard.store import open_store
from tests.cluster import REDIS_URL, wait_for
from tests.django_support import DjangoProject

HEALTHY = """
import json
from celery import chord
from shop.tasks import square, total
result = chord(square.s(i) for i in range(6))(total.s())
print(json.dumps([result.parent.id, result.get(timeout=60)]))
"""
STUCK = """
import json
from celery import chord
import chordguard
from shop.tasks import on_error, square, total
body = chordguard.with_deadline(total.s().on_error(on_error.s()), {deadline})
result = chord([square.s(2), square.s(3).set(queue={queue!r})])(body)
print(json.dumps([result.parent.id, result.id]))
"""


@pytest.fixture
def project(tmp_path, request):
    made = DjangoProject(tmp_path, getattr(request, "param", "postgresql"))
    yield made
    made.close()


@pytest.mark.parametrize("project", ["postgresql", "sqlite"], indirect=True)
def test_install_in_proj_celery_keeps_the_project_working(project):
    assert "no issues" in project.manage("check").stdout
    project.manage("migrate", "-v", "0")
    worker = project.start_worker()
    gid, value = project.shell(HEALTHY)
    assert value == sum(i * i for i in range(6))
    assert worker.alive, worker.output()[-3000:]
    record = open_store(project.store).chord(gid)
    assert record is not None and record.kind == "django"
    wait_for(lambda: open_store(project.store).chord(gid).state == "succeeded",
             what="the journal ends the chord")


def test_a_chord_that_cannot_finish_fails_within_a_reaper_interval_and_stays_failed(project):
    project.manage("migrate", "-v", "0")
    project.start_worker()
    nobody = f"nobody-{project.namespace}"
    gid, callback = project.shell(STUCK.format(deadline=6, queue=nobody))
    record = open_store(project.store).chord(gid)
    assert record is not None and record.kind == "django"
    assert project.counter(gid) == 1  # the part on `nobody` holds it

    project.wait_state(callback, {"FAILURE", "SUCCESS"}, timeout=40)
    [(state, done, result)] = project.sql(
        "SELECT status, date_done, result FROM django_celery_results_taskresult "
        "WHERE task_id = %s", callback)
    assert state == "FAILURE" and "ChordError" in result
    late = done.replace(tzinfo=done.tzinfo or UTC).timestamp() - record.deadline_at
    assert 0 <= late <= 10, f"failed {late:.1f} s after its deadline"
    assert project.counter(gid) is None, "the ChordCounter row must be disarmed"
    wait_for(lambda: project.errback_log.exists() and callback in project.errback_log.read_text(),
             what="the errback ran in a worker")

    # The reaper removed the part's message from the Redis broker: a worker started on its
    # queue later runs nothing, and the callback stays failed
    assert redis.Redis.from_url(REDIS_URL).llen(f"{project.namespace}:{nobody}") == 0
    project.start_worker(queues=[nobody])
    time.sleep(5)
    logs = "".join(w.output() for w in project.workers)
    assert f"[{_part_on(project, gid, 1)}] received" not in logs
    assert project.task_state(callback) == "FAILURE"
    assert open_store(project.store).chord(gid).state != "open"


def _part_on(project, gid: str, index: int) -> str:
    record = open_store(project.store).chord(gid)
    return record.header_ids[index]


def test_doctor_names_django_db_and_its_hazards(tmp_path):
    project = DjangoProject(tmp_path, "sqlite", CG_ACKS_LATE="1")
    try:
        done = project.chordguard("doctor", "--json")
        assert done.returncode == 1, done.stdout + done.stderr
        report = json.loads(done.stdout)
        assert report["chord_kind"] == "django"
        found = {f["code"]: f for f in report["findings"]}
        assert found["django_db_duplicate_parts"]["setting"] == "CELERY_TASK_ACKS_LATE"
        assert "shop.square" in found["django_db_duplicate_parts"]["summary"]
        assert found["django_db_sqlite"]["setting"] == "DATABASES"
    finally:
        project.close()


def test_a_guard_installed_in_ready_journals_chords_the_cli_reads(tmp_path):
    project = DjangoProject(tmp_path, CG_GUARD="ready")
    try:
        project.manage("migrate", "-v", "0")
        project.start_worker()
        gid, _ = project.shell(STUCK.format(deadline=600, queue=f"nobody-{project.namespace}"))
        assert open_store(project.store).chord(gid).kind == "django"
        done = project.chordguard("check", "--json")
        report = json.loads(done.stdout)
        assert all(s["ok"] for s in report["sources"]), report["sources"]
        [chord] = [c for c in report["chords"] if c["id"] == gid]
        assert "journal" in chord["sources"] and "django_chords" in chord["sources"]
        assert [d["code"] for d in chord["diagnoses"]] == ["no_consumer"]
    finally:
        project.close()
