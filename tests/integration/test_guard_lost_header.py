"""Incident 1 of the post-mortem, on a database backend with acks_late: a header result is
lost (chord_unlock polls forever) and the callback crashes on a ``None`` result.

First with plain Celery (the loop is observed), then with the guard (contained).
"""

from __future__ import annotations

import time

import pytest
from celery import chord
from celery.exceptions import ChordError

from chordguard.store import open_store
from chordguard.store.records import DEAD_LETTERED, Breaker
from tests.cluster import AMQP_URL, PG_BACKEND, PG_URL, REDIS_URL, wait_for
from tests.guard_support import (
    delete_db_result,
    ended,
    letter_for,
    purge_own_queue,
    store_urls,
    unlock_runs,
)

BASE = {"task_acks_late": True, "cg_trace_unlock": True}


def lost_header_chord(app):
    """A fast header whose result will be deleted, a slow one, the post-mortem's callback."""
    result = chord([app.signature("t.none"), app.signature("t.sleep", (3,))])(
        app.signature("t.sum_files"))
    fast = result.parent.results[0]
    wait_for(lambda: fast.state == "SUCCESS", 20, what="the fast header to finish")
    delete_db_result(fast.id)
    return result


def test_plain_celery_polls_forever_for_a_lost_header(make_cluster):
    cluster = make_cluster(AMQP_URL, PG_BACKEND, BASE)
    cluster.start_worker()
    result = lost_header_chord(cluster.app)
    slow = result.parent.results[1]
    wait_for(lambda: slow.state == "SUCCESS", 20, what="the slow header to finish")
    at_done = len(unlock_runs(cluster, result.parent.id))
    time.sleep(4)
    runs = unlock_runs(cluster, result.parent.id)
    assert len(runs) >= at_done + 2, "chord_unlock should keep polling a lost header"
    assert result.state == "PENDING"  # and it would forever: the callback never comes
    purge_own_queue(cluster)


def test_plain_celery_callback_crash_on_none_keeps_no_inputs(make_cluster):
    cluster = make_cluster(AMQP_URL, PG_BACKEND, BASE)
    cluster.start_worker()
    app = cluster.app
    result = chord([app.signature("t.none"), app.signature("t.echo", ({"successful_files": 2},))])(
        app.signature("t.sum_files"))
    with pytest.raises(TypeError):
        result.get(timeout=30)
    assert "NoneType" in (result.traceback or "")  # what was passed in is gone with the logs


@pytest.mark.compat
def test_guard_fails_a_lost_header_chord_fast_and_dead_letters_it(make_cluster, tmp_path):
    # t.sum_files's breaker lives in the shared PostgreSQL store: other runs' crashes (the
    # compat matrix runs this test side by side) must not open it for this one
    guard = {"store": PG_URL, "deadline": 60, "lost_header_grace": 3,
             "unlock_max_interval": 2, "breaker_failures": 1000}
    open_store(PG_URL).update_breaker("t.sum_files",
                                      lambda old: Breaker(old.name, version=old.version))
    cluster = make_cluster(AMQP_URL, PG_BACKEND, {**BASE, "guard": guard})
    cluster.start_worker()
    app = cluster.app
    started = time.monotonic()
    lost = lost_header_chord(app)
    crash = chord([app.signature("t.none"),
                   app.signature("t.echo", ({"successful_files": 2},))])(
        app.signature("t.sum_files"))

    # not lost.get(): before 5.7 it raises the REVOKED of the header the guard revoked
    wait_for(lambda: lost.state == "FAILURE", 45, what="the guard to fail the callback")
    assert isinstance(lost.result, ChordError) and "lost_header" in str(lost.result)
    assert time.monotonic() - started < 30, "lost_header must fail fast, not wait the deadline"
    record = ended(PG_URL, lost.parent.id)
    assert record.state == DEAD_LETTERED and record.reason.startswith("lost_header")
    assert record.polls <= 12, f"{record.polls} unlock polls: backoff should bound them"
    letter = letter_for(PG_URL, lost.parent.id)
    assert letter.callback_name == "t.sum_files"
    assert letter.inputs[0]["type"] == "Pending" and letter.inputs[1] == 3

    polls_at_end = len(unlock_runs(cluster, lost.parent.id))
    time.sleep(3)
    assert len(unlock_runs(cluster, lost.parent.id)) == polls_at_end, "polling must stop"

    with pytest.raises(TypeError):
        crash.get(timeout=30)
    crashed = ended(PG_URL, crash.parent.id)
    assert crashed.state == DEAD_LETTERED and "TypeError" in crashed.reason
    letter = letter_for(PG_URL, crash.parent.id)
    assert letter.inputs == [None, {"successful_files": 2}]
    assert "NoneType" in letter.traceback


@pytest.mark.parametrize("broker", [REDIS_URL, AMQP_URL], ids=["redis", "amqp"])
def test_a_header_waiting_in_a_routed_queue_nobody_consumes_is_not_failed_as_lost(
        make_cluster, tmp_path, broker):
    """A queue named only by ``task_routes`` (not declared in the app's queues) still holds
    the header: the guard must not call it lost and fail a chord that would finish once a
    worker consumes that queue (it did: it dead-lettered healthy chords)."""
    store = store_urls(tmp_path)["sqlite"]
    parked = f"parked-{tmp_path.name[-12:]}"
    conf = {"task_routes": {"t.sleep": {"queue": parked}},
            "guard": {"store": store, "deadline": 120, "lost_header_grace": 2,
                      "unlock_max_interval": 1, "reaper_interval": 1}}
    cluster = make_cluster(broker, PG_BACKEND, conf)
    cluster.start_worker()
    app = cluster.app
    result = chord([app.signature("t.add", (1, 1)), app.signature("t.sleep", (0,))])(
        app.signature("t.tsum"))
    time.sleep(12)  # several unlock polls past the lost-header grace
    record = open_store(store).chord(result.parent.id)
    assert record is not None and record.open, record.reason
    assert result.state == "PENDING"
    assert [d for d in open_store(store).dead_letters() if d.chord_id == result.parent.id] == []
    cluster.start_worker(queues=[parked])  # the chord finishes once the queue is consumed
    assert result.get(timeout=60) == 2
