"""Upstream reports users hit, reproduced with real workers on the Celery versions where they
occur: plain Celery stays stuck (chord_unlock polls, the callback stays PENDING) and the
monitor names why; the guard ends the same chord by its deadline (callback FAILURE with
ChordError, errbacks run, dead-lettered, polling stopped). RabbitMQ broker, PostgreSQL
(``db+``) result backend.
"""

from __future__ import annotations

import uuid

import pytest
from celery import chain, chord, group

from chordguard import _compat
from tests.cluster import REDIS_URL, Cluster, wait_for
from tests.guard_support import delete_db_result, store_urls
from tests.upstream_support import Broken, errback_for, pair, reproduce

pytestmark = pytest.mark.compat


def nested_chain_failure(cluster: Cluster) -> Broken:
    """celery#9674: ``chain(group(identity.si(1), chain(fail.si(), group(identity.si(2),
    identity.si(3)), identity.si(4))), identity.s())`` (t.echo is the identity)."""
    app = cluster.app

    def echo(value):
        return app.signature("t.echo", (value,), immutable=True)

    callback = app.signature("t.tsum").on_error(errback_for(cluster))
    result = chain(group(echo(1), chain(app.signature("t.fail", immutable=True),
                                        group(echo(2), echo(3)), echo(4))),
                   callback).apply_async()
    return Broken(result, result.parent.id, errback_for(cluster).id)


def header_sigkilled(cluster: Cluster) -> Broken:
    """celery#2911: the worker running a header task is SIGKILLed (the OOM killer) without
    acks_late: the message was acknowledged, so the result never arrives."""
    app = cluster.app
    callback = app.signature("t.tsum").on_error(errback_for(cluster))
    result = chord([app.signature("t.add", (1, 1)), app.signature("t.sleep", (60,))])(callback)
    quick, slow = (r.id for r in result.parent.results)
    worker = cluster.workers[-1]
    wait_for(lambda: app.AsyncResult(quick).state == "SUCCESS", what="the quick header")

    def running() -> bool:
        active = app.control.inspect(destination=[worker.name], timeout=1).active() or {}
        return any(t["id"] == slow for tasks in active.values() for t in tasks)

    wait_for(running, what="the slow header to run")
    worker.kill()
    cluster.start_worker()  # the unlock message (unacked, in the timer) comes back; slow not
    return Broken(result, result.parent.id, errback_for(cluster).id)


def unlock_without_headers(cluster: Cluster) -> Broken:
    """celery#1700: chord publication interrupted after ``chord_unlock`` was sent (Celery
    sends it first) and before the header tasks were: ``apply_chord`` by hand, no headers.
    (Redis broker: with no header finished, the chord's age is known only from the unlock
    message's ``retries`` header, which workers do not report and RabbitMQ hides while a
    worker holds the message.)"""
    app = cluster.app
    callback = app.signature("t.tsum").on_error(errback_for(cluster))
    result = callback.freeze()
    group_id = str(uuid.uuid4())
    headers = [app.AsyncResult(str(uuid.uuid4())) for _ in range(2)]
    app.backend.apply_chord((group_id, headers), callback, interval=None, countdown=1,
                            max_retries=None)
    return Broken(app.AsyncResult(result.id), group_id, errback_for(cluster).id)


def lost_db_result(cluster: Cluster) -> Broken:
    """The seed incident (Celery 5.3.4): a finished header's row in ``celery_taskmeta`` is
    gone (result_expires / backend_cleanup) while the chord waits on a slower header."""
    app = cluster.app
    callback = app.signature("t.tsum").on_error(errback_for(cluster))
    result = chord([app.signature("t.add", (1, 1)), app.signature("t.sleep", (3, 5))])(callback)
    quick = result.parent.results[0].id
    wait_for(lambda: app.AsyncResult(quick).state == "SUCCESS", what="the quick header")
    delete_db_result(quick)
    return Broken(result, result.parent.id, errback_for(cluster).id)


def test_celery_9674_failure_inside_a_nested_chain(make_cluster, tmp_path):
    url = store_urls(tmp_path)["redis"]
    if _compat.NESTED_CHAIN_FAILURE_PROPAGATES:  # 5.7: Celery itself fails the callback
        plain, _ = pair(make_cluster, url)
        plain.start_worker()
        broken = nested_chain_failure(plain)
        wait_for(lambda: broken.result.state == "FAILURE", what="Celery 5.7 to fail it")
        assert type(broken.result.result).__name__ == "ChordError"
        return
    codes = reproduce(make_cluster, url, nested_chain_failure, "nested_chain_failed")
    assert "lost_header" not in codes, "the part is explained by the failure upstream"


def test_celery_2911_header_killed_without_acks_late(make_cluster, tmp_path):
    reproduce(make_cluster, store_urls(tmp_path)["redis"], header_sigkilled, "lost_header")


def test_celery_1700_unlock_sent_headers_never(make_cluster, tmp_path):
    reproduce(make_cluster, store_urls(tmp_path)["redis"], unlock_without_headers,
              "lost_header", broker=REDIS_URL)


def test_seed_incident_lost_header_result_on_db_backend(make_cluster, tmp_path):
    reproduce(make_cluster, store_urls(tmp_path)["postgres"], lost_db_result, "lost_header")
