"""``install(app, fan_in="store")``: Celery chords joined by chordguard's store barrier, with
real workers, on a ``db+postgresql`` and a Redis result backend, Redis and PostgreSQL stores.

The user's canvas code is Celery's own; what changes is that no ``celery.chord_unlock`` (and
no Redis chord counter key) is ever written, and the barrier decides, exactly once.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import redis
from celery import chord, group
from celery.exceptions import ChordError
from celery.signals import after_task_publish

import chordguard
from chordguard.model import ChordKind
from chordguard.monitor.collect import collect
from chordguard.store import open_store
from chordguard.store.records import BarrierState, Policy
from tests.cluster import AMQP_URL, PG_BACKEND, PG_URL, REDIS_URL, chordguard_cli, wait_for
from tests.durable_helpers import Trace, ran_each_twice
from tests.private_servers import private_redis

BACKENDS = {"db": PG_BACKEND, "redis": REDIS_URL}
STORES = {"redis": REDIS_URL, "postgres": PG_URL}
COMBOS = [("db", "postgres"), ("db", "redis"), ("redis", "redis"), ("redis", "postgres")]


def fan_in_conf(store: str, **extra) -> dict:
    return {"guard": {"store": store, "fan_in": "store", "reaper_interval": 1}, **extra}


@pytest.fixture
def published():
    """Names of the tasks this process publishes."""
    names: list[str] = []

    def record(sender=None, **_):
        names.append(sender)

    after_task_publish.connect(record, weak=False)
    yield names
    after_task_publish.disconnect(record)


def wait_until_succeeded(barriers, barrier_id: str) -> None:
    """The barrier ends in the callback's after-return hook, just after the result backend
    stored the result that ``get()`` returned: a read right after ``get()`` can be early."""
    wait_for(lambda: barriers.barrier(barrier_id).state is BarrierState.SUCCEEDED,
             timeout=10, what=f"the barrier {barrier_id} to end with its callback")


def redis_chord_keys(cluster, group_id: str) -> list[bytes]:
    return list(redis.Redis.from_url(REDIS_URL).scan_iter(
        match=cluster.group_key(group_id) + "*"))


@pytest.mark.parametrize("backend,store", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_a_chord_is_joined_by_the_barrier_in_header_order(make_cluster, backend, store,
                                                          published):
    cluster = make_cluster(REDIS_URL, BACKENDS[backend], fan_in_conf(STORES[store]))
    worker = cluster.start_worker(concurrency=5)
    app = cluster.app
    # later parts finish first: the callback must still get header order
    result = chord([app.signature("t.sleep", (0.15 * (5 - i), i)) for i in range(5)])(
        app.signature("t.collect"))
    assert result.get(timeout=30) == [0, 1, 2, 3, 4]
    upgraded = (group([app.signature("t.echo", (i,)) for i in range(3)])
                | app.signature("t.tsum")).delay()
    assert upgraded.get(timeout=30) == 3
    barriers = open_store(STORES[store])
    for group_id in (result.parent.id, upgraded.parent.id):
        assert barriers.barrier(group_id).policy is Policy.CELERY
        wait_until_succeeded(barriers, group_id)
        if backend == "redis":
            assert redis_chord_keys(cluster, group_id) == []
    assert "celery.chord_unlock" not in published
    assert "chord_unlock" not in worker.output()


def test_a_failed_part_fails_the_callback_with_chord_error_and_runs_its_errback(
        make_cluster, trace):
    cluster = make_cluster(REDIS_URL, PG_BACKEND, fan_in_conf(PG_URL))
    cluster.start_worker(concurrency=3)
    app = cluster.app
    callback = app.signature("t.collect").on_error(
        app.signature("t.note", kwargs={"key": trace.key}))
    result = chord([app.signature("t.echo", (0,)), app.signature("t.fail", ("bad part",)),
                    app.signature("t.sleep", (1.0, 2))])(callback)
    failing = result.parent.results[1].id
    wait_for(lambda: result.state == "FAILURE", what="the callback to fail")
    assert isinstance(result.result, ChordError)
    assert str(result.result) == f"Dependency {failing} raised RuntimeError('bad part')"
    # as Celery: the chord fails once every part has ended, and the errback runs once
    assert result.parent.results[2].state == "SUCCESS"
    wait_for(lambda: trace.entries() == [result.id], what="the errback")
    time.sleep(1.0)
    assert trace.entries() == [result.id]
    barrier = open_store(PG_URL).barrier(result.parent.id)
    assert barrier.state is BarrierState.FAILED and barrier.failed == 1


def test_a_chord_callback_that_raises_is_dead_lettered_under_the_chords_group_id(make_cluster):
    cluster = make_cluster(REDIS_URL, PG_BACKEND, fan_in_conf(PG_URL))
    cluster.start_worker(concurrency=3)
    app = cluster.app
    # t.guarded_sum validates each part against a schema an int does not meet: it raises
    result = chord([app.signature("t.echo", (1,)), app.signature("t.echo", (2,))])(
        app.signature("t.guarded_sum"))
    wait_for(lambda: result.state == "FAILURE", what="the callback to fail")
    store = open_store(PG_URL)  # shared by the suite: this chord's letters only
    wait_for(lambda: result.parent.id in {d.chord_id for d in store.dead_letters()},
             what="the dead letter of the chord's group id")
    assert result.id not in {d.chord_id for d in store.dead_letters()}


@pytest.mark.parametrize("store", list(STORES))
def test_every_part_delivered_twice_runs_the_callback_once(make_cluster, store, trace):
    cluster = make_cluster(REDIS_URL, PG_BACKEND, fan_in_conf(STORES[store]))
    app = cluster.app
    result = chord([app.signature("t.echo", (i,)) for i in range(4)])(
        app.signature("t.record", kwargs={"key": trace.key}))
    client = redis.Redis.from_url(REDIS_URL)
    queue = next(k for k in client.scan_iter(match=f"{cluster.namespace}:*{cluster.queue}")
                 if client.type(k) == b"list")
    messages = client.lrange(queue, 0, -1)
    assert len(messages) == 4
    client.lpush(queue, *messages)  # the same four messages again: a duplicate delivery each
    ran_each_twice(cluster.start_worker(concurrency=4), result, trace)
    assert open_store(STORES[store]).barrier(result.parent.id).done == 4


def test_sigkilled_worker_with_acks_late_runs_the_callback_once(make_cluster, trace):
    cluster = make_cluster(AMQP_URL, PG_BACKEND, fan_in_conf(
        PG_URL, task_acks_late=True, worker_prefetch_multiplier=1))
    first = cluster.start_worker(concurrency=3)
    app = cluster.app
    result = chord([app.signature("t.sleep", (1.5, i)) for i in range(6)])(
        app.signature("t.record", kwargs={"key": trace.key}))
    wait_for(lambda: first.output().count("] received") >= 3, what="headers to start")
    first.kill()
    second = cluster.start_worker(concurrency=3)
    assert result.get(timeout=60) == 6
    time.sleep(1.0)
    assert trace.entries() == [[0, 1, 2, 3, 4, 5]]
    received = set(re.findall(r"Task t\.sleep\[([^]]+)\] received", first.output()))
    again = set(re.findall(r"Task t\.sleep\[([^]]+)\] received", second.output()))
    assert received & again, "no header was redelivered after SIGKILL"


def test_the_monitor_lists_it_as_a_store_chord_and_the_revoke_command_fails_it(make_cluster, trace):
    cluster = make_cluster(REDIS_URL, PG_BACKEND, fan_in_conf(REDIS_URL))
    cluster.start_worker(concurrency=2)
    app = cluster.app
    callback = app.signature("t.collect").on_error(
        app.signature("t.note", kwargs={"key": trace.key}))
    result = chord([app.signature("t.echo", (0,)), app.signature("t.sleep", (30, 1))])(callback)
    barriers = open_store(REDIS_URL)
    wait_for(lambda: barriers.barrier(result.parent.id).done == 1, what="the first part")
    seen = collect(app).find(result.parent.id)
    assert seen is not None and seen.kind is ChordKind.STORE
    assert (seen.total, seen.done, seen.callback_id) == (2, 1, result.id)
    revoked = chordguard_cli(cluster, "revoke", result.parent.id, "--json")
    assert revoked.returncode == 0, revoked.stderr
    assert [c["chord_id"] for c in json.loads(revoked.stdout)["chords"]] == [result.parent.id]
    wait_for(lambda: result.state == "FAILURE", what="the callback to fail")
    assert isinstance(result.result, ChordError)
    wait_for(lambda: trace.entries() == [result.id], what="the errback")
    assert barriers.barrier(result.parent.id).state is BarrierState.FAILED


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_generator_header_is_joined_as_the_backend_would_unroll_it(make_cluster, backend,
                                                                     published, caplog):
    """db+: Celery's chord_unlock lists the header when the chord is published, so the store
    unrolls it and joins the chord. Redis: Celery publishes while it unrolls (its own suite
    checks that), so the chord stays Celery's."""
    cluster = make_cluster(REDIS_URL, BACKENDS[backend], fan_in_conf(PG_URL))
    cluster.start_worker(concurrency=3)
    app = cluster.app
    # later parts finish first: header order still holds when the header is a generator
    lazy = chord(app.signature("t.sleep", (0.15 * (4 - i), i)) for i in range(4))(
        app.signature("t.collect"))
    upgraded = (group(app.signature("t.echo", (i,)) for i in range(3))
                | app.signature("t.tsum")).delay()
    assert lazy.get(timeout=30) == [0, 1, 2, 3]
    assert upgraded.get(timeout=30) == 3
    barriers = open_store(PG_URL)
    for result in (lazy, upgraded):
        barrier = barriers.barrier(result.parent.id)
        if backend == "redis":
            assert barrier is None
            continue
        assert barrier is not None and barrier.total == len(result.parent.results)
        wait_until_succeeded(barriers, barrier.id)
    assert "celery.chord_unlock" not in published
    assert not [r for r in caplog.records if "Celery counts" in r.getMessage()]


def test_every_canvas_shape_of_a_list_header_is_joined_by_the_store(make_cluster, published):
    cluster = make_cluster(REDIS_URL, PG_BACKEND, fan_in_conf(PG_URL))
    cluster.start_worker(concurrency=4)
    app = cluster.app

    def echo():
        return [app.signature("t.echo", (i,)) for i in (1, 2)]

    shapes = {
        "immutable body": (chord(echo())(app.signature("t.echo", ("done",), immutable=True)),
                           "done"),
        "group body": (chord(echo())(group(app.signature("t.tsum"), app.signature("t.collect"))),
                       [3, [1, 2]]),
        "chain body": (chord(echo())(app.signature("t.tsum") | app.signature("t.add", (10,))),
                       13),
        "chain and group in the header": (
            chord([app.signature("t.echo", (1,)) | app.signature("t.add", (1,)),
                   group(app.signature("t.echo", (5,)), app.signature("t.echo", (6,)))])(
                app.signature("t.collect")), [2, 6, 5]),
        "nested chord in the header": (
            chord([chord(echo(), app.signature("t.tsum")), app.signature("t.echo", (4,))])(
                app.signature("t.collect")), [3, 4]),
        "Task.replace in a part": (
            chord([app.signature("t.replaced_sum", ([1, 2],)), app.signature("t.echo", (4,))])(
                app.signature("t.collect")), [3, 4]),
    }
    barriers = open_store(PG_URL)
    for name, (result, expected) in shapes.items():
        got = result.get(timeout=30)
        assert got == expected, name
        barrier = barriers.barrier(result.parent.id) if result.parent else None
        assert barrier is not None and barrier.policy is Policy.CELERY, name
        wait_until_succeeded(barriers, barrier.id)
    assert "celery.chord_unlock" not in published


def test_a_hung_store_delays_the_chords_and_loses_none(make_cluster, trace):
    with private_redis() as server:
        cluster = make_cluster(REDIS_URL, PG_BACKEND, {
            **fan_in_conf(server.url), "chordguard_store_timeout": 1,
            "chordguard_store_connect_timeout": 1})
        cluster.start_worker(concurrency=4)
        app = cluster.app
        results = [chord([app.signature("t.sleep", (1, 10 * c + i)) for i in range(3)])(
            app.signature("t.record", kwargs={"key": trace.key})) for c in range(4)]
        with server.hung():  # parts end while the store does not answer: workers hold them
            wait_for(lambda: sum(r.parent.completed_count() for r in results) >= 4,
                     what="the first parts")
            time.sleep(2)
            assert trace.entries() == []
        assert [r.get(timeout=30) for r in results] == [3] * 4
        time.sleep(1)
        assert sorted(values[0] // 10 for values in trace.entries()) == [0, 1, 2, 3]
        barriers = open_store(server.url)
        for r in results:
            wait_until_succeeded(barriers, r.parent.id)


def test_the_reaper_fails_a_chord_past_its_deadline(make_cluster, trace):
    cluster = make_cluster(REDIS_URL, PG_BACKEND, fan_in_conf(PG_URL))
    cluster.start_worker(concurrency=2)
    app = cluster.app
    callback = chordguard.with_deadline(app.signature("t.collect").on_error(
        app.signature("t.note", kwargs={"key": trace.key})), 3)
    result = chord([app.signature("t.echo", (0,)), app.signature("t.sleep", (30, 1))])(callback)
    wait_for(lambda: result.state == "FAILURE", timeout=20, what="the reaper")
    assert isinstance(result.result, ChordError) and "deadline passed" in str(result.result)
    wait_for(lambda: trace.entries() == [result.id], what="the errback")
    assert open_store(PG_URL).barrier(result.parent.id).state is BarrierState.FAILED


def test_a_body_that_replaces_itself_is_left_alone_after_the_deadline(make_cluster):
    cluster = make_cluster(REDIS_URL, PG_BACKEND, fan_in_conf(PG_URL))
    cluster.start_worker(concurrency=2)
    app = cluster.app
    body = chordguard.with_deadline(app.signature("t.replaced_sum"), 2)
    result = chord([app.signature("t.echo", (1,)), app.signature("t.echo", (2,))])(body)
    assert result.get(timeout=30) == 3
    time.sleep(4)  # past the deadline, with the reaper passing every second
    assert (result.state, result.result) == ("SUCCESS", 3)
    assert open_store(PG_URL).barrier(result.parent.id).state is BarrierState.SUCCEEDED


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_part_adds_tasks_and_a_chord_to_its_chord(make_cluster, backend):
    cluster = make_cluster(REDIS_URL, BACKENDS[backend], fan_in_conf(REDIS_URL))
    cluster.start_worker(concurrency=4)
    app = cluster.app
    tasks = (group([app.signature("t.add_to_chord", ([1, 2, 3], 4))])
             | app.signature("t.collect")).delay()
    assert sorted(tasks.get(timeout=30)) == [0, 5, 6, 7]
    nested = (group([app.signature("t.add_to_chord", ([1, 2, 3], 4), {"as_chord": True})])
              | app.signature("t.collect")).delay()
    assert sorted(nested.get(timeout=30)) == [0, 5 + 6 + 7]
    barriers = open_store(REDIS_URL)
    assert [barriers.barrier(r.parent.id).total for r in (tasks, nested)] == [4, 2]


@pytest.mark.parametrize("callback", ["t.slow_record", "t.guarded_slow"])
def test_a_callback_whose_worker_dies_mid_run_is_failed_by_its_deadline(make_cluster, trace,
                                                                        callback):
    """The barrier ends when its one-task callback ends, not when it is published: a
    callback SIGKILLed mid-run (acks_late; the Redis broker redelivers it only after its
    visibility timeout) is failed by the surviving worker's reaper at the deadline, its
    errback run once, and it is not run again."""
    cluster = make_cluster(REDIS_URL, PG_BACKEND, fan_in_conf(
        PG_URL, task_acks_late=True, worker_prefetch_multiplier=1))
    workers = [cluster.start_worker(concurrency=1, wait=False) for _ in range(2)]
    for worker in workers:
        cluster.wait_ready(worker)
    app, errbacks = cluster.app, Trace()
    try:
        plain = chord([app.signature("t.echo", (i,)) for i in range(2)])(
            app.signature("t.tsum"))
        assert plain.get(timeout=30) == 1
        barriers = open_store(PG_URL)
        wait_until_succeeded(barriers, plain.parent.id)

        body = chordguard.with_deadline(app.signature(
            callback, kwargs={"seconds": 120, "key": trace.key}).on_error(
            app.signature("t.note", kwargs={"key": errbacks.key})), 8)
        result = chord([app.signature("t.echo", (i,)) for i in range(2)])(body)
        wait_for(lambda: len(trace.entries()) == 1, timeout=20, what="the callback to start")
        assert barriers.barrier(result.parent.id).state is BarrierState.DISPATCHED
        running = next(w for w in workers if f"[{result.id}] received" in w.output())
        running.kill()
        wait_for(lambda: result.state == "FAILURE", timeout=30, what="the reaper")
        assert isinstance(result.result, ChordError) and "deadline" in str(result.result)
        wait_for(lambda: errbacks.entries() == [result.id], what="the errback")
        assert barriers.barrier(result.parent.id).state is BarrierState.FAILED
        time.sleep(3)  # past the end: nothing runs again
        assert errbacks.entries() == [result.id]
        assert len(trace.entries()) == 1
    finally:
        errbacks.close()
