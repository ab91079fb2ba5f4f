"""The guard judges a chord's body in linear time: a result found ready is never read again,
and the outcome is known once every final task is ready (FAILURE if any failed)."""

from __future__ import annotations

import uuid

import pytest
from celery import Celery, group

from chordguard.guard.body_watch import BodyWatch
from chordguard.store import open_store
from chordguard.store.records import ChordRecord, jsonable


def watched(members: int, serializer: str = "json",
            ) -> tuple[Celery, BodyWatch, list[str], list[tuple[list, set]]]:
    """An app on an in-memory result backend, a journal holding a chord whose body is a
    group of ``members`` tasks, a BodyWatch over them, and the keys each MGET read."""
    app = Celery("bodies", backend="cache+memory://", set_as_current=False)
    app.conf.update(result_serializer=serializer, accept_content=[serializer])
    body = group(app.signature("t.sum") for _ in range(members))
    body.freeze()
    store = open_store(f"memory://{uuid.uuid4().hex}")
    store.record_chord(ChordRecord(id="c1", app="bodies", kind="redis", callback_name=None,
                                   callback_id=body.id, header_ids=[], created_at=0.0,
                                   deadline_at=None, callback=jsonable(dict(body))))
    reads: list[tuple[list, set]] = []  # (keys asked, keys that read ready)
    backend, mget = app.backend, app.backend.mget

    def counted(keys):
        values = mget(keys)
        reads.append((list(keys), {k for k in keys if values.get(k)}))
        return values

    backend.mget = counted
    ended: list[tuple[str, str]] = []
    watch = BodyWatch(app, store, 60.0, lambda stamp, name, outcome: ended.append(outcome))
    return app, watch, [t.id for t in body.tasks], reads


def test_each_ready_result_is_read_once_and_the_last_one_ends_the_body():
    app, watch, ids, reads = watched(250)
    outcomes = []
    for task_id in ids:
        app.backend.store_result(task_id, 3, "SUCCESS")
        outcomes.append(watch.outcome("c1"))
    assert outcomes == [None] * 249 + ["SUCCESS"]
    seen_ready: set = set()
    for keys, ready in reads:  # finishing in order, a key read ready is never read again
        assert not seen_ready & set(keys)
        seen_ready |= ready
    assert len(seen_ready) == len(ids)
    assert len(reads) == len(ids)  # one round trip per pass: each reads ahead


@pytest.mark.parametrize("serializer", ["json", "pickle"])  # pickle: Celery's own decoder
def test_a_failed_final_task_makes_the_body_fail(serializer):
    app, watch, ids, _ = watched(3, serializer)
    app.backend.store_result(ids[0], 1, "SUCCESS")
    app.backend.store_result(ids[1], ValueError("boom"), "FAILURE")
    assert watch.outcome("c1") is None
    app.backend.store_result(ids[2], 1, "SUCCESS")
    assert watch.outcome("c1") == "FAILURE"


def test_a_chord_the_journal_does_not_know_has_no_outcome():
    _, watch, _, _ = watched(2)
    assert watch.outcome("unknown-chord") is None
