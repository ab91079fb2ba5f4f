"""durable_chord with real workers, on a Redis store and a PostgreSQL store.

No result backend anywhere unless a test says so: the barrier alone joins the chord.
"""

from __future__ import annotations

import re
import time

import pytest
import redis
from kombu.exceptions import EncodeError

from chordguard._compat import PUBLISH_BATCHES
from chordguard.config import store_url
from chordguard.durable import ReapReport, durable_chord, reap
from chordguard.durable.dispatch import HEADER_KEY
from chordguard.errors import DurableChordFailed
from chordguard.store import open_store
from tests.cluster import AMQP_URL, PG_BACKEND, PG_URL, REDIS_URL, wait_for
from tests.durable_helpers import STORES, Trace, ran_each_twice


@pytest.fixture(params=list(STORES))
def store(request):
    return STORES[request.param]


def durable_conf(store: str, **extra) -> dict:
    return {"cg_durable": True, "chordguard_store": store, "task_ignore_result": True, **extra}


@pytest.mark.compat
def test_results_in_header_order_without_a_result_backend(make_cluster, store, trace):
    cluster = make_cluster(REDIS_URL, None, durable_conf(store))
    cluster.start_worker(concurrency=5)
    app = cluster.app
    # later parts finish first: the callback must still see header order
    handle = durable_chord([app.signature("t.sleep", (0.2 * (5 - i), i)) for i in range(5)],
                           app.signature("t.record", kwargs={"key": trace.key}))
    assert handle.get(timeout=30) == 5
    assert trace.entries() == [[0, 1, 2, 3, 4]]
    assert handle.state == "succeeded" and handle.progress.done == 5


@pytest.mark.compat
def test_a_header_delivered_twice_is_counted_once(make_cluster, store, trace):
    cluster = make_cluster(REDIS_URL, None, durable_conf(store))
    app = cluster.app
    header = [app.signature("t.echo", (i,)) for i in range(4)]
    handle = durable_chord(header, app.signature("t.record", kwargs={"key": trace.key}))
    barrier = handle.barrier()
    ids = barriers_header_ids(handle)
    for index, task_id in enumerate(ids):  # the same message again: same id, same part
        app.send_task("t.echo", (index,), task_id=task_id,
                      headers={HEADER_KEY: {"b": barrier.id, "i": index, "a": app.main,
                                            "s": None}})
    ran_each_twice(cluster.start_worker(concurrency=4), handle, trace)
    assert handle.progress.done == 4


def test_sigkilled_worker_with_acks_late_exactly_one_callback(make_cluster, store, trace):
    cluster = make_cluster(AMQP_URL, None, durable_conf(
        store, task_acks_late=True, worker_prefetch_multiplier=1))
    first = cluster.start_worker(concurrency=3)
    app = cluster.app
    handle = durable_chord([app.signature("t.sleep", (1.5, i)) for i in range(6)],
                           app.signature("t.record", kwargs={"key": trace.key}))
    wait_for(lambda: first.output().count("] received") >= 3, what="headers to start")
    first.kill()
    assert handle.progress.done == 0
    second = cluster.start_worker(concurrency=3)
    assert handle.get(timeout=60) == 6
    assert trace.entries() == [[0, 1, 2, 3, 4, 5]]
    received = set(re.findall(r"Task t\.sleep\[([^]]+)\] received", first.output()))
    again = set(re.findall(r"Task t\.sleep\[([^]]+)\] received", second.output()))
    assert received & again, "no header was redelivered after SIGKILL"


def test_worker_killed_between_claim_and_publish_is_redispatched_once(make_cluster, store,
                                                                       trace):
    cluster = make_cluster(REDIS_URL, None, durable_conf(store, chordguard_claim_grace=1.0))
    stalled = cluster.start_worker(conf={"cg_stall_publish_of": "t.record"})
    app = cluster.app
    handle = durable_chord([app.signature("t.echo", (i,)) for i in range(2)],
                           app.signature("t.record", kwargs={"key": trace.key}))
    wait_for(lambda: handle.state == "dispatching", what="the dispatch claim")
    stalled.kill()
    cluster.start_worker()
    time.sleep(1.2)
    report = reap(app, keep_lease=False)
    assert report.redispatched == [handle.id]
    assert handle.get(timeout=30) == 2
    assert reap(app, keep_lease=False) == ReapReport()
    assert trace.entries() == [[0, 1]]


@pytest.mark.compat
def test_fail_policy_fails_at_once_and_runs_errbacks(make_cluster, store, trace):
    cluster = make_cluster(REDIS_URL, PG_BACKEND, durable_conf(store))
    cluster.start_worker(concurrency=3)
    app = cluster.app
    errors = Trace()
    callback = app.signature("t.record", kwargs={"key": trace.key})
    callback.link_error(app.signature("t.note", kwargs={"key": errors.key}))
    handle = durable_chord([app.signature("t.echo", (1,)), app.signature("t.fail", ("bad",)),
                            app.signature("t.sleep", (5, 2))], callback)
    with pytest.raises(DurableChordFailed, match=r"header part 1 .* RuntimeError: bad"):
        handle.get(timeout=30)
    assert handle.progress.done < 3  # failed before the slow header finished
    wait_for(lambda: errors.entries() == [handle.callback_id], what="the errback")
    # Celery runs the errbacks first, then stores the FAILURE
    wait_for(lambda: app.AsyncResult(handle.callback_id).state == "FAILURE", what="FAILURE")
    assert trace.entries() == []
    [letter] = [x for x in open_store(store).dead_letters() if x.chord_id == handle.id]
    assert "RuntimeError: bad" in letter.reason and letter.callback_name == "t.record"
    errors.close()


@pytest.mark.compat
def test_a_crashing_callback_ends_failed_and_dead_lettered(make_cluster, store):
    cluster = make_cluster(REDIS_URL, None, durable_conf(store))
    cluster.start_worker(concurrency=2)
    app = cluster.app
    handle = durable_chord([app.signature("t.none"), app.signature("t.echo", (1,))],
                           app.signature("t.sum_files"))
    with pytest.raises(DurableChordFailed, match="callback raised TypeError"):
        handle.get(timeout=30)
    # the barrier ends FAILED a moment before its dead letter is written (durable/hook.py)
    [letter] = wait_for(lambda: [x for x in open_store(store).dead_letters()
                                 if x.chord_id == handle.id], what="the dead letter")
    assert letter.inputs == [None, 1] and "TypeError" in letter.error


def test_continue_policy_hands_every_envelope_to_the_callback(make_cluster, store, trace):
    cluster = make_cluster(REDIS_URL, None, durable_conf(store))
    cluster.start_worker(concurrency=3)
    app = cluster.app
    handle = durable_chord([app.signature("t.echo", (1,)), app.signature("t.fail", ("bad",))],
                           app.signature("t.record", kwargs={"key": trace.key}),
                           on_header_failure="continue")
    assert handle.get(timeout=30) == 2
    [envelopes] = trace.entries()
    assert [e["status"] for e in envelopes] == ["succeeded", "failed"]
    assert envelopes[0]["result"] == 1
    assert (envelopes[1]["type"], envelopes[1]["error"]) == ("RuntimeError", "bad")


def test_racing_final_completions_on_two_workers(make_cluster, trace):
    cluster = make_cluster(REDIS_URL, None, durable_conf(PG_URL))
    cluster.start_worker(concurrency=3)
    cluster.start_worker(concurrency=3)
    app = cluster.app
    at = time.time() + 1.5
    handles = [durable_chord([app.signature("t.sleep_until", (at, n)) for n in (c, c)],
                             app.signature("t.record", kwargs={"key": trace.key}))
               for c in range(3)]
    assert [h.get(timeout=30) for h in handles] == [2, 2, 2]
    time.sleep(0.3)
    assert sorted(trace.entries()) == [[0, 0], [1, 1], [2, 2]]


def test_ten_thousand_headers(make_cluster, store):
    cluster = make_cluster(AMQP_URL, None, durable_conf(store))
    cluster.start_worker(concurrency=4)
    app = cluster.app
    handle = durable_chord([app.signature("t.add", (i, i)) for i in range(10_000)],
                           app.signature("t.tsum"))
    assert handle.barrier().by_reference
    assert handle.get(timeout=150) == sum(2 * i for i in range(10_000))
    assert handle.progress.done == 10_000


def test_a_header_failing_to_publish_sends_none_of_its_messages_in_one_batch(make_cluster):
    cluster = make_cluster(REDIS_URL, None, durable_conf(REDIS_URL))
    app = cluster.app
    header = [app.signature("t.echo", (i,)) for i in range(3)]
    header.append(app.signature("t.echo", (object(),)))  # JSON cannot encode it
    with pytest.raises(EncodeError):
        durable_chord(header, app.signature("t.tsum"))
    # one pipeline per header (kombu 5.7+): the three messages before the bad one were never
    # flushed; an older kombu publishes one by one, as Celery's own group does
    queue = redis.Redis.from_url(REDIS_URL).llen(f"{cluster.namespace}:{cluster.queue}")
    assert queue == (0 if PUBLISH_BATCHES else 3)
    letters = [d for d in open_store(REDIS_URL).dead_letters() if d.app == app.main]
    assert len(letters) == 1 and "publishing the header failed" in letters[0].reason


def barriers_header_ids(handle) -> list[str]:
    return open_store(store_url(handle.app)).barrier(handle.id, with_header_ids=True).header_ids
