"""The monitor on a real Django project with django-celery-results (``django-db``): the CLI
loads it as ``celery -A proj`` does, names what is wrong with its chords, and fails one for
good (``revoke --force``: callback FAILURE, errback run in a worker, counter disarmed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import redis

from tests.cluster import REDIS_URL, wait_for
from tests.django_support import PROJECT, DjangoProject
from tests.serving import free_port

PUBLISH = """
import json
from celery import chord
from shop.tasks import on_error, square, total
parts = [square.s(2)] + [square.s(i).set(queue=q) for i, q in enumerate({queues!r})]
result = chord(parts)(total.s().on_error(on_error.s()))
print(json.dumps([result.parent.id, result.id]))
"""


@pytest.fixture
def project(tmp_path, request):
    made = DjangoProject(tmp_path, CG_GUARD=getattr(request, "param", "1"),
                         CG_LOST_HEADER_GRACE="3")
    made.manage("migrate", "-v", "0")
    yield made
    made.close()


def chords_of(project: DjangoProject, *args: str) -> tuple[int, dict[str, list[str]]]:
    done = project.chordguard("check", "--json", *args)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    document = json.loads(done.stdout)
    assert all(s["ok"] for s in document["sources"]), document["sources"]  # journal included
    return done.returncode, {c["id"]: [d["code"] for d in c["diagnoses"]]
                             for c in document["chords"]}


@pytest.mark.parametrize("project", ["0", "1"], indirect=True, ids=["plain", "guarded"])
def test_check_names_no_consumer_and_lost_header(project):
    project.start_worker()
    waiting, purged = f"nobody-{project.namespace}", f"purged-{project.namespace}"
    no_consumer, _ = project.shell(PUBLISH.format(queues=[waiting]))
    lost, _ = project.shell(PUBLISH.format(queues=[purged]))
    wait_for(lambda: project.counter(no_consumer) == 1 and project.counter(lost) == 1,
             what="the parts on the default queue done")
    # The message of the lost chord's part is gone (a purge, a broker lost): no result ever
    assert redis.Redis.from_url(REDIS_URL).delete(f"{project.namespace}:{purged}") == 1

    def diagnosed():
        code, found = chords_of(project)
        return code == 1 and "lost_header" in found.get(lost, []) and found

    found = wait_for(diagnosed, timeout=30, interval=1, what="lost_header named")
    sources = json.loads(project.chordguard("status", "--json").stdout)["sources"]
    assert {s["name"] for s in sources} >= {"django_chords"} | (
        {"journal"} if project.extra["CG_GUARD"] == "1" else set())
    assert "no_consumer" in found[no_consumer]
    assert "no_consumer" not in found[lost]
    celery_cli = project.run("celery", "-A", "proj", "chordguard", "check", "--json",
                             check=False)
    assert celery_cli.returncode == 1, celery_cli.stderr
    assert no_consumer in celery_cli.stdout
    health = _served_health(project)
    assert health["status"] == "unhealthy" and health["by_kind"]["django"] >= 2
    assert health["diagnoses"]["no_consumer"] >= 1


def _served_health(project: DjangoProject) -> dict:
    """``/healthz`` of ``chordguard -A proj serve`` started in the project directory."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "chordguard", "-A", "proj", "serve",
                               "--port", str(port)], cwd=PROJECT, env=project.env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        def answer():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
            except httpx.TransportError:
                return None

        reply = wait_for(answer, timeout=40, what="serve answers")
        assert reply.status_code == 503
        return reply.json()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(10)


def test_revoke_fails_a_django_chord_in_a_worker_and_it_stays_failed(project):
    project.start_worker()
    late = f"late-{project.namespace}"
    gid, callback = project.shell(PUBLISH.format(queues=[late]))
    wait_for(lambda: project.counter(gid) == 1, what="the first part counted down")

    done = project.chordguard("revoke", gid, "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    assert project.task_state(callback) == "FAILURE"
    assert project.counter(gid) is None, "the ChordCounter row must be disarmed"
    errbacks = wait_for(lambda: project.errback_log.exists() and project.errback_log.read_text(),
                        what="the errback ran")
    [line] = errbacks.splitlines()
    assert line.startswith(callback) and "ChordError" in line
    assert "failed in worker w0-" in done.stdout  # not in the operator's shell

    # failing it removed the part's message from the Redis broker: a worker started on its
    # queue later runs nothing (and the disarmed counter would not fire the callback anyway)
    assert redis.Redis.from_url(REDIS_URL).llen(f"{project.namespace}:{late}") == 0
    part = next(i for i in _header_ids(project, gid) if project.task_state(i) != "SUCCESS")
    project.start_worker(queues=[late])
    time.sleep(5)
    assert f"[{part}] received" not in "".join(w.output() for w in project.workers)
    assert project.task_state(callback) == "FAILURE"
    assert len(project.errback_log.read_text().splitlines()) == 1
    code, found = chords_of(project)
    assert gid not in found


def _header_ids(project: DjangoProject, gid: str) -> list[str]:
    from chordguard.store import open_store

    return open_store(project.store).chord(gid).header_ids


DUPLICATED = """
import json
from celery import chord
from shop.tasks import square, total
rest = [square.s(i).set(queue={rest!r}) for i in {rest_parts!r}]
parts = [square.s(1).set(queue={twice!r}), *rest]
result = chord(parts)(total.s())
print(json.dumps([result.parent.id, result.id]))
"""


def _run_one_part_twice(project: DjangoProject, rest_parts: list[int]) -> tuple[str, str, str]:
    """A chord whose first part is delivered twice (a redelivery, as under acks_late) and
    whose other parts wait in a queue nobody consumes yet; returns (group, callback, rest)."""
    twice, rest = f"twice-{project.namespace}", f"rest-{project.namespace}"
    gid, callback = project.shell(DUPLICATED.format(twice=twice, rest=rest,
                                                    rest_parts=rest_parts))
    client = redis.Redis.from_url(REDIS_URL)
    [message] = client.lrange(f"{project.namespace}:{twice}", 0, -1)
    client.rpush(f"{project.namespace}:{twice}", message)
    project.start_worker(queues=[twice])
    wait_for(lambda: (project.counter(gid) or 0) < len(rest_parts), what="counted twice")
    return gid, callback, rest


def test_a_part_counted_twice_is_counter_mismatch(project):
    gid, _, _ = _run_one_part_twice(project, [2, 3])
    assert project.counter(gid) == 1  # 3 parts, 2 unfinished
    found = wait_for(lambda: "counter_mismatch" in chords_of(project)[1].get(gid, []) and
                     chords_of(project)[1], timeout=40, interval=2, what="counter_mismatch")
    assert "counter_mismatch" in found[gid]


def test_the_counter_gone_early_is_counter_lost_then_orphaned_body(project):
    gid, callback, rest = _run_one_part_twice(project, [2])
    assert project.counter(gid) is None  # the second run reached 0 and deleted the row
    _, found = chords_of(project)
    assert "counter_lost" in found[gid]
    project.start_worker(queues=[rest])  # the real last part finds no counter
    wait_for(lambda: "Can't find ChordCounter" in "".join(w.output() for w in project.workers),
             what="the last part finds no counter")
    found = wait_for(lambda: "orphaned_body" in chords_of(project)[1].get(gid, []) and
                     chords_of(project)[1], timeout=40, interval=2, what="orphaned_body")
    assert "counter_lost" not in found[gid]
    assert project.task_state(callback) is None  # never published
