"""The Redis peek lists every message by id and group from its headers and ships a body only
where one is needed. Messages published by Celery for real, plus one no producer of ours
wrote."""

from __future__ import annotations

import json

import redis
from celery import chord

from chordguard.monitor.sources.broker import UNREAD, peek
from chordguard.monitor.sources.chord_members import member
from tests.cluster import REDIS_URL


def test_ids_and_groups_from_headers_bodies_where_needed(make_cluster):
    cluster = make_cluster(REDIS_URL, REDIS_URL)
    app, queue = cluster.app, cluster.queue
    plain = chord([app.signature("t.add", (1, 1)), app.signature("t.add", (2, 2))])(
        app.signature("t.tsum"))
    chained = chord([app.signature("t.add", (3, 3)) | app.signature("t.add", (4,))])(
        app.signature("t.tsum"))
    alone = app.send_task("t.add", (5, 5))
    redis.Redis.from_url(REDIS_URL).lpush(f"{cluster.namespace}:{queue}", b"not a kombu message")

    view = peek(app, {queue})
    assert view.complete and view.queues[queue].depth == view.queues[queue].read == 5
    by_id = {m.task_id: m for m in view.messages}
    parts = [by_id[r.id] for r in plain.parent.results]
    assert {m.group for m in parts} == {plain.parent.id}
    callbacks = [member(m).callback for m in parts if member(m).callback]
    assert [c["options"]["task_id"] for c in callbacks] == [plain.id]  # one body per group
    first = next(m for m in view.messages if m.name == "t.add" and m.args == [3, 3])
    assert member(first).group_id == chained.parent.id  # a chain member: body read whole
    assert by_id[alone.id].args == [5, 5]
    assert any(m.task_id is None and m.undecodable for m in view.messages)

    client = redis.Redis.from_url(REDIS_URL)  # a worker holds one: kombu's unacked entry
    unlock = app.signature("celery.chord_unlock", (plain.parent.id, {"task": "t.tsum"}))
    held_id = unlock.apply_async(queue=f"held-{cluster.namespace}").id
    raw = client.rpop(f"{cluster.namespace}:held-{cluster.namespace}")
    client.hset(f"{cluster.namespace}:unacked", "tag",
                json.dumps([json.loads(raw), "", f"held-{cluster.namespace}"]))
    held = next(m for m in peek(app, {queue}).messages if m.held)
    assert (held.task_id, held.name, held.retries) == (held_id, "celery.chord_unlock", 0)
    assert held.args[0] == plain.parent.id and held.queue == f"held-{cluster.namespace}"

    blind = peek(app, {queue}, limit=0)  # no budget for bodies of messages naming no group
    assert blind.unread_bodies == 2 and not blind.complete
    unread = [m for m in blind.messages if m.undecodable == UNREAD]
    assert {m.task_id for m in unread} == {first.task_id, alone.id}
    assert {m.task_id for m in blind.messages if m.group} == {r.id for r in plain.parent.results}
