"""Failing a chord removes its header messages still waiting on a Redis broker, by task id:
a worker that later consumes their queue (one that never heard the revoke) does not run
them, and the queue's other messages stay and run. On RabbitMQ the plan says what stays."""

from __future__ import annotations

import json
import uuid

import pytest
from celery import chord

from chordguard.durable import durable_chord, reap
from chordguard.monitor.sources.broker import peek
from tests.chordapp import trace_redis
from tests.cluster import AMQP_URL, REDIS_URL, chordguard_cli, wait_for


def waiting_chord(make_cluster, broker: str, kind: str = "redis", deadline: float = 3600):
    """A chord (Redis backend, or ``durable``) whose first header ran and whose second
    (``t.note``) waits in a queue no worker consumes, next to an unrelated ``t.note`` message
    sent before it (``deadline``: the durable chord's). Returns the cluster, that queue, the
    unrelated message's id, the chord's id, its header's ids and its callback's result."""
    orphan = f"cg-orphan-{uuid.uuid4().hex[:8]}"
    conf = {"task_routes": {"t.note": {"queue": orphan}}}
    if kind == "durable":
        conf |= {"cg_durable": True, "chordguard_store": REDIS_URL}
    cluster = make_cluster(broker, REDIS_URL, conf)
    cluster.start_worker()  # the default queue only
    app, ns = cluster.app, cluster.namespace
    other = app.signature("t.note", ("other",), {"key": f"{ns}:trace:other"}).apply_async()
    ids = [str(uuid.uuid4()) for _ in range(2)]
    header = [app.signature("t.add", (1, 1)).set(task_id=ids[0]),
              app.signature("t.note", ("header",), {"key": f"{ns}:trace:header"}).set(
                  task_id=ids[1])]
    callback = app.signature("t.tsum").set(task_id=str(uuid.uuid4()))
    chord_id = durable_chord(header, callback, deadline=deadline).id if kind == "durable" \
        else chord(header)(callback).parent.id
    wait_for(lambda: app.AsyncResult(ids[0]).state == "SUCCESS", what="the first header")
    return cluster, orphan, other.id, chord_id, ids, app.AsyncResult(callback.id)


def revoke(cluster, chord_id: str) -> dict:
    def attempt():
        done = chordguard_cli(cluster, "revoke", chord_id, "--force", "--json")
        return done.stdout and json.loads(done.stdout)["chords"][0]

    return wait_for(attempt, timeout=60, interval=1, what="revoke to find and fail the chord")


def queued_ids(cluster, queue: str) -> list[str]:
    return [m.task_id for m in peek(cluster.app, {queue}, include_held=False).messages
            if m.queue == queue]


@pytest.mark.parametrize("kind", ["redis", "durable"])
def test_redis_a_failed_chords_queued_header_never_runs(make_cluster, kind):
    cluster, orphan, other_id, chord_id, ids, callback = waiting_chord(make_cluster, REDIS_URL,
                                                                       kind)
    assert sorted(queued_ids(cluster, orphan)) == sorted([other_id, ids[1]])

    plan = revoke(cluster, chord_id)
    assert ids[1] in plan["revoke"] and plan["removed_messages"] == {orphan: 1}, plan
    assert f"removed 1 queued message(s): 1 from {orphan}" in plan["steps"], plan["steps"]
    assert queued_ids(cluster, orphan) == [other_id]  # the other message untouched
    if kind == "redis":
        wait_for(lambda: callback.state == "FAILURE", what="the callback FAILURE")

    ns = cluster.namespace  # queued behind the header: once it ran, the header would have
    later = cluster.app.signature("t.note", ("later",), {"key": f"{ns}:trace:other"}).delay()
    cluster.start_worker(queues=[orphan])  # never heard the revoke (no mingle)
    trace = trace_redis()
    wait_for(lambda: trace.llen(f"{ns}:trace:other") == 2, what="the other messages to run")
    assert cluster.app.AsyncResult(other_id).get(timeout=30) is None
    assert later.get(timeout=30) is None and queued_ids(cluster, orphan) == []
    assert trace.llen(f"{ns}:trace:header") == 0
    assert cluster.app.AsyncResult(ids[1]).state != "SUCCESS"


def test_the_durable_reaper_removes_the_queued_headers_of_a_chord_it_fails(make_cluster):
    cluster, orphan, other_id, chord_id, ids, _ = waiting_chord(make_cluster, REDIS_URL,
                                                                "durable", deadline=3)
    app, ns = cluster.app, cluster.namespace
    wait_for(lambda: chord_id in reap(app, keep_lease=False).failed, timeout=30,
             what="the reaper to fail the chord past its deadline")
    assert queued_ids(cluster, orphan) == [other_id]

    later = app.signature("t.note", ("later",), {"key": f"{ns}:trace:other"}).delay()
    cluster.start_worker(queues=[orphan])
    trace = trace_redis()
    wait_for(lambda: trace.llen(f"{ns}:trace:other") == 2, what="the other messages to run")
    assert later.get(timeout=30) is None and trace.llen(f"{ns}:trace:header") == 0


@pytest.mark.parametrize("dry_run", [True, False])
def test_rabbitmq_the_plan_says_the_messages_stay(make_cluster, dry_run):
    cluster, orphan, other_id, chord_id, ids, _ = waiting_chord(make_cluster, AMQP_URL)
    try:
        wait_for(lambda: sorted(queued_ids(cluster, orphan)) == sorted([other_id, ids[1]]),
                 what="both messages queued")
        if dry_run:
            done = chordguard_cli(cluster, "revoke", chord_id, "--dry-run", "--json")
            assert done.returncode == 0, done.stderr
            plan = json.loads(done.stdout)["chords"][0]
        else:
            plan = revoke(cluster, chord_id)
        says = [s for s in plan["steps"] if "stay in their queues on RabbitMQ" in s]
        assert len(says) == 1 and f"seen queued in {orphan};" in says[0], plan["steps"]
        assert "known only to the workers that heard this revoke" in says[0]
        assert plan["removed_messages"] == {} and ids[1] in plan["revoke"]
        assert sorted(queued_ids(cluster, orphan)) == sorted([other_id, ids[1]])
    finally:
        with cluster.app.connection_for_write() as conn:
            conn.default_channel.queue_delete(orphan)


def test_redis_a_message_a_dead_worker_held_is_not_restored(make_cluster):
    """A header with an ETA sits in kombu's unacked hash of the worker that took it; that
    worker dies; the chord is failed; a new worker's restore of unacked messages (visibility
    timeout 12 s here: long enough for revoke to come first, as any kombu consumer restores,
    the CLI's too) brings back the unrelated ETA message held with it, never the header."""
    cluster = make_cluster(REDIS_URL, REDIS_URL, {"broker_transport_options": {
        "visibility_timeout": 12, "unacked_restore_interval": 1, "unacked_restore_throttle": 1}})
    first = cluster.start_worker()
    app, ns = cluster.app, cluster.namespace
    other = app.signature("t.note", ("other",), {"key": f"{ns}:trace:other"}).apply_async(
        countdown=10)
    header = [app.signature("t.add", (1, 1)),
              app.signature("t.note", ("header",), {"key": f"{ns}:trace:header"}).set(
                  countdown=10)]
    result = chord(header)(app.signature("t.tsum"))
    header_id = result.parent.results[1].id

    def held() -> set[str]:
        return {m.task_id for m in peek(app, {cluster.queue}).messages if m.held}

    wait_for(lambda: held() == {other.id, header_id}
             and result.parent.results[0].state == "SUCCESS", what="both ETA messages held")
    first.kill()  # SIGKILL: its unacked messages stay in the hash
    plan = revoke(cluster, result.parent.id)
    assert plan["removed_messages"] == {"(held by workers)": 1}, plan
    assert held() == {other.id}

    cluster.start_worker()  # restores what is left in the hash once the timeout has passed
    trace = trace_redis()
    wait_for(lambda: trace.llen(f"{ns}:trace:other") == 1, timeout=40,
             what="the other held message to be restored and run")
    assert held() == set() and trace.llen(f"{ns}:trace:header") == 0
