"""First, do no harm: with the guard installed a chord gives the same result as without it.

Each test reproduces one way an earlier guard changed a chord's behaviour (issue 8), with
real workers: a generator header unrolled early and its error swallowed; a group body left
hanging when a header failed on the chord_unlock path; a succeeded chord with a group,
chain, chord or replaced body failed by the reaper after its deadline; a chord published
from another thread left out of the journal.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time

import pytest
from celery import chain, chord, group
from celery.signals import after_task_publish

from chordguard.store import open_store
from chordguard.store.records import SUCCEEDED
from tests.chordapp import trace_redis
from tests.cluster import PG_BACKEND, REDIS_URL, wait_for
from tests.guard_support import ended, store_urls


def guard_conf(tmp_path, **extra) -> dict:
    return {"guard": {"store": store_urls(tmp_path)["sqlite"], "reaper_interval": 1,
                      **extra}}


@pytest.fixture
def published():
    """Ids of the header messages this process has published, in order."""
    ids: list[str] = []

    def record(sender=None, headers=None, **_):
        if sender == "t.echo":
            ids.append((headers or {}).get("id"))

    after_task_publish.connect(record, weak=False)
    yield ids
    after_task_publish.disconnect(record)


def rows(app, published: list[str], fail_at: int | None = None):
    """A header generator that checks it is unrolled while it is published, as Celery does
    (Celery reads a few rows ahead; an early unroll reads all of them before publishing)."""
    for i in range(5):
        assert i < 4 or published, "header unrolled before any row was published"
        if i == fail_at:
            raise ValueError(f"row {i} unreadable")
        yield app.signature("t.echo", (i,))


@pytest.mark.parametrize("guarded", [False, True], ids=["plain", "guarded"])
def test_a_generator_header_is_unrolled_lazily_and_its_error_reaches_the_caller(
        make_cluster, tmp_path, published, guarded):
    cluster = make_cluster(REDIS_URL, REDIS_URL, guard_conf(tmp_path) if guarded else {})
    cluster.start_worker()
    app = cluster.app

    result = chord(rows(app, published), app.signature("t.tsum"))()
    assert result.get(timeout=20) == 0 + 1 + 2 + 3 + 4
    published.clear()
    with pytest.raises(ValueError, match="row 2 unreadable"):
        chord(rows(app, published, fail_at=2), app.signature("t.tsum"))()


def group_body_failure(cluster, key: str) -> dict:
    """A chord whose header fails, with a group body whose members have errbacks: what
    the caller and the members see."""
    app = cluster.app
    note = app.signature("t.note", kwargs={"key": key})
    body = group(app.signature("t.echo").set(link_error=[note]),
                 app.signature("t.echo").set(link_error=[note]))
    result = chord([app.signature("t.add", (1, 1)), app.signature("t.fail", ("header",))])(body)
    with pytest.raises(Exception) as raised:
        result.get(timeout=30)
    members = [app.AsyncResult(r.id) for r in result.results]
    wait_for(lambda: trace_redis().llen(key) >= 2, 20, what="both members' errbacks")
    # the group's get() raises at its first failed member; Celery fails the others (errbacks
    # first, then the state) a moment later: read the states once they settle, or as they
    # are after 10 s (a member left PENDING then is a difference the caller compares)
    with contextlib.suppress(AssertionError):  # wait_for's timeout
        wait_for(lambda: all(m.state != "PENDING" for m in members), 10,
                 what="every member's state")
    return {"raised": type(raised.value).__name__,
            "message": str(raised.value).split(" raised ")[-1],
            "members": [m.state for m in members],
            "member_errors": sorted(type(m.result).__name__ for m in members),
            "errbacks": sorted(json.loads(v) for v in trace_redis().lrange(key, 0, -1))
            == sorted(m.id for m in members)}


def test_a_group_body_fails_like_celery_when_a_header_fails_on_the_unlock_path(
        make_cluster, tmp_path):
    seen = {}
    for name, conf in (("plain", {}), ("guarded", guard_conf(tmp_path))):
        cluster = make_cluster(REDIS_URL, PG_BACKEND, conf)
        cluster.start_worker()
        seen[name] = group_body_failure(cluster, f"cg:{cluster.namespace}:errbacks")
    assert seen["plain"]["members"] == ["FAILURE", "FAILURE"]
    assert seen["plain"]["errbacks"] is True
    assert seen["guarded"] == seen["plain"]


def bodies(app, key: str) -> dict:
    """Chords with every body shape Celery supports, each with an errback that must not run;
    name -> (chord result, expected value)."""
    def header():
        return [app.signature("t.add", (1, 1)), app.signature("t.add", (2, 2))]

    note = app.signature("t.note", kwargs={"key": key})
    shapes = {
        "task": app.signature("t.tsum"),
        "group": group(app.signature("t.collect"), app.signature("t.collect")),
        "chain": chain(app.signature("t.tsum"), app.signature("t.add", (10,))),
        "chain_to_group": chain(app.signature("t.tsum"),
                                group(app.signature("t.add", (1,)), app.signature("t.add", (2,)))),
        "chord": chord([app.signature("t.collect"), app.signature("t.collect")],
                       app.signature("t.collect")),
        "replaced": app.signature("t.replaced_sum"),
        "immutable": app.signature("t.echo", ("fixed",), immutable=True),
    }
    expected = {"task": 6, "group": [[2, 4], [2, 4]], "chain": 16, "chain_to_group": [7, 8],
                "chord": [[2, 4], [2, 4]], "replaced": 6, "immutable": "fixed"}
    return {name: (chord(header())(body.set(link_error=[note])), expected[name])
            for name, body in shapes.items()}


@pytest.mark.parametrize("backend", [REDIS_URL, PG_BACKEND], ids=["redis", "postgres"])
def test_succeeded_chords_of_every_body_shape_stay_succeeded_past_their_deadline(
        make_cluster, tmp_path, backend):
    conf = guard_conf(tmp_path, deadline=6, unlock_max_interval=2)
    url = conf["guard"]["store"]
    cluster = make_cluster(REDIS_URL, backend, conf)
    cluster.start_worker()
    key = f"cg:{cluster.namespace}:errbacks"
    started = time.time()
    chords = bodies(cluster.app, key)
    for name, (result, expected) in chords.items():
        assert result.get(timeout=30) == expected, name

    ids = {name: result.parent.id for name, (result, _) in chords.items()}
    records = {name: ended(url, gid, timeout=30) for name, gid in ids.items()}
    assert {n: r.state for n, r in records.items()} == dict.fromkeys(ids, SUCCEEDED)
    # the replaced body's final task carries no stamp: the reaper closed it, after the
    # deadline, from the body's real state; so the reaper has run past every deadline here
    assert records["replaced"].reason == "callback succeeded (reaper)"
    assert records["replaced"].ended_at > started + 6
    assert all(r.reason == "callback succeeded" for n, r in records.items() if n != "replaced")

    wait_for(lambda: time.time() > max(r.deadline_at for r in records.values()) + 3, 20,
             what="a reaper pass after the last deadline")
    store = open_store(url)
    assert [d.chord_id for d in store.dead_letters()] == []
    for name, (result, expected) in chords.items():
        assert result.get(timeout=5) == expected, name  # still SUCCESS, not failed later
    assert trace_redis().llen(key) == 0  # no errback ran


def test_chords_published_from_another_thread_are_journaled(make_cluster, tmp_path):
    conf = guard_conf(tmp_path)
    cluster = make_cluster(REDIS_URL, REDIS_URL, conf)
    cluster.start_worker()
    app = cluster.app
    results = []

    def publish():
        results.append(chord([app.signature("t.add", (1, 1))])(app.signature("t.tsum")))

    thread = threading.Thread(target=publish)
    thread.start()
    thread.join(10)
    assert results[0].get(timeout=20) == 2
    assert app.backend is not results[0].backend  # the thread had a backend of its own
    record = ended(conf["guard"]["store"], results[0].parent.id)
    assert record.state == SUCCEEDED and record.header_ids == [results[0].parent.results[0].id]


def test_a_failed_journal_leaves_the_chord_as_celery_runs_it(make_cluster, tmp_path):
    from prometheus_client import REGISTRY

    from chordguard.guard.state import guard_of

    cluster = make_cluster(REDIS_URL, REDIS_URL, guard_conf(tmp_path))
    cluster.start_worker()
    app = cluster.app
    guard = guard_of(app)
    failures = REGISTRY.get_sample_value("chordguard_journal_failures_total") or 0
    guard.store, store = open_store("redis://127.0.0.1:1/0"), guard.store  # nothing listens
    try:
        body = app.signature("t.tsum")
        result = chord([app.signature("t.add", (1, 1)), app.signature("t.add", (2, 2))])(body)
    finally:
        guard.store = store
    assert "chordguard" not in (body.options.get("headers") or {})  # published unchanged
    assert REGISTRY.get_sample_value("chordguard_journal_failures_total") == failures + 1
    assert result.get(timeout=20) == 6


@pytest.mark.parametrize("shape", ["task", "chain", "group", "chord"])
def test_a_chord_celery_failed_is_closed_at_once_not_failed_again(make_cluster, tmp_path,
                                                                  shape):
    """Redis: a header fails; Celery fails the chord's body itself (for a chord body, on the
    callback's own id, not a task of the body). The journal closes the record as failed at
    once (the deadline is far off: not the reaper), with no dead letter, and no errback runs
    a second time."""
    conf = guard_conf(tmp_path, deadline=600)
    url = conf["guard"]["store"]
    cluster = make_cluster(REDIS_URL, REDIS_URL, conf)
    cluster.start_worker()
    app, key = cluster.app, f"cg:{cluster.namespace}:errbacks"
    collect = app.signature("t.collect")
    body = {"task": collect, "chain": app.signature("t.echo") | collect,
            "group": group(collect, app.signature("t.collect")),
            "chord": chord([collect, app.signature("t.collect")], app.signature("t.collect")),
            }[shape]
    result = chord([app.signature("t.add", (1, 1)), app.signature("t.fail", ("header",))])(
        body.set(link_error=[app.signature("t.note", kwargs={"key": key})]))
    with pytest.raises(Exception, match="header"):
        result.get(timeout=30)
    wait_for(lambda: trace_redis().llen(key) >= 1, 20, what="the errback Celery runs")
    record = ended(url, result.parent.id, timeout=30)
    assert record.state == "failed" and record.reason == "callback FAILURE recorded by Celery"
    assert record.ended_at < record.deadline_at - 500
    assert [d for d in open_store(url).dead_letters() if d.chord_id == result.parent.id] == []
    time.sleep(1)
    assert trace_redis().llen(key) == (2 if shape == "group" else 1)  # Celery's runs only


def test_a_body_chordguard_fails_is_left_to_chordguard_and_one_celery_fails_is_closed(
        make_cluster, tmp_path):
    """``fail_callback`` (chordguard's own failures: revoke, dead letters) leaves the record
    to its caller, who writes its own reason; the same call by Celery closes it."""
    from chordguard._compat import chord_error
    from chordguard.actions.callback import fail_callback

    conf = guard_conf(tmp_path, deadline=600)
    url = conf["guard"]["store"]
    app = make_cluster(REDIS_URL, REDIS_URL, conf).app  # no worker: the header waits
    sent = []

    def keep(body=None, **_):
        sent.append(body[2]["chord"])  # the body as a header message carries it

    after_task_publish.connect(keep, weak=False)
    try:
        result = chord([app.signature("t.add", (1, 1))])(app.signature("t.tsum"))
    finally:
        after_task_publish.disconnect(keep)
    body = app.signature(sent[0])
    assert body.id == result.id and "chordguard" in body.options["headers"]  # stamped
    fail_callback(app, body, chord_error("failed by chordguard"))
    assert result.state == "FAILURE"
    assert open_store(url).chord(result.parent.id).open
    error = chord_error("failed by Celery")
    try:  # as Celery does it: inside the handling of the error
        raise error
    except type(error):
        app.backend.chord_error_from_stack(body, error)
    record = open_store(url).chord(result.parent.id)
    assert record.state == "failed" and record.reason == "callback FAILURE recorded by Celery"


@pytest.mark.parametrize("members", [40, 400])
def test_a_large_group_body_costs_its_messages_no_more_than_a_small_one(
        make_cluster, tmp_path, members):
    """Map → reduce → map: each member of a group body carries the chord's id, not the
    body's result tree (which made the guard quadratic in the body's size), and the
    journal still closes the chord when the last member succeeds."""
    conf = guard_conf(tmp_path)
    cluster = make_cluster(REDIS_URL, REDIS_URL, conf)
    body_queue = f"{cluster.queue}-body"
    cluster.start_worker()
    sig = cluster.app.signature
    result = chord([sig("t.add", (1, i)) for i in range(3)])(
        group(sig("t.tsum").set(queue=body_queue) for _ in range(members)))
    client = trace_redis()
    key = f"{cluster.namespace}:{body_queue}"
    wait_for(lambda: client.llen(key) == members, 30, what="the body's messages queued")
    stamps = [json.loads(raw)["headers"]["chordguard"] for raw in client.lrange(key, 0, -1)]
    assert {s["chord"] for s in stamps} == {result.parent.id}
    assert max(len(json.dumps(s)) for s in stamps) < 200, stamps[0]

    cluster.start_worker(queues=[body_queue])
    assert result.get(timeout=60) == [6] * members
    record = ended(conf["guard"]["store"], result.parent.id)
    assert (record.state, record.reason) == (SUCCEEDED, "callback succeeded")
