"""The reaper and the monitor for durable chords: deadline and stall end a chord failed
(errbacks run), one reaper at a time, and status/inspect show durable chords."""

from __future__ import annotations

import json
import re
import time

import pytest

from chordguard.durable import durable_chord, reap, register_beat_task
from chordguard.durable.reaper import BEAT_HOLDER, BEAT_TASK
from chordguard.errors import DurableChordFailed
from chordguard.store import open_store
from tests.cluster import PG_URL, REDIS_URL, chordguard_cli, wait_for
from tests.durable_helpers import Trace


def conf(store: str) -> dict:
    return {"cg_durable": True, "chordguard_store": store, "task_ignore_result": True}


def test_deadline_is_reaped_by_the_cli_and_the_monitor_shows_the_chord(make_cluster):
    cluster = make_cluster(REDIS_URL, None, conf(REDIS_URL))
    cluster.start_worker()
    app = cluster.app
    errors = Trace()
    callback = app.signature("t.record", kwargs={"key": errors.key})
    callback.link_error(app.signature("t.note", kwargs={"key": errors.key}))
    lost = app.signature("t.echo", (2,)).set(queue=f"nobody-{cluster.namespace}")
    handle = durable_chord([app.signature("t.echo", (1,)), lost], callback, deadline=6)
    assert reap(app, keep_lease=False).failed == {}  # not due yet
    wait_for(lambda: handle.progress.done == 1, what="the first part")

    status = chordguard_cli(cluster, "status", "--json")
    [chord] = [c for c in json.loads(status.stdout)["chords"] if c["id"] == handle.id]
    assert (chord["kind"], chord["total"], chord["done"]) == ("durable", 2, 1)
    assert chord["callback_id"] == handle.callback_id and chord["deadline_at"]
    inspect = chordguard_cli(cluster, "inspect", handle.id, "--json")
    [detail] = json.loads(inspect.stdout)["chords"]
    assert [p["state"] for p in detail["header"]] == ["SUCCESS", "PENDING"]

    time.sleep(max(0.0, handle.barrier().deadline_at - time.time()) + 0.2)
    check = chordguard_cli(cluster, "check", "--json")
    [overdue] = [c for c in json.loads(check.stdout)["chords"] if c["id"] == handle.id]
    assert "durable_overdue" in [d["code"] for d in overdue["diagnoses"]]
    assert check.returncode == 1
    reaped = chordguard_cli(cluster, "reap", "--once", "--json")
    assert "deadline passed while waiting" in json.loads(reaped.stdout)["failed"][handle.id]
    assert handle.state == "failed"
    wait_for(lambda: errors.entries() == [handle.callback_id], what="the errback")
    try:
        handle.get(timeout=1)
    except DurableChordFailed as exc:
        assert "deadline" in exc.reason
    else:
        raise AssertionError("a reaped chord must fail its get()")
    status = chordguard_cli(cluster, "status", "--json")
    assert handle.id not in {c["id"] for c in json.loads(status.stdout)["chords"]}
    errors.close()


def test_stalled_chord_is_reaped_and_one_reaper_holds_the_lease(make_cluster):
    cluster = make_cluster(REDIS_URL, None, conf(PG_URL))  # no worker: nothing progresses
    app = cluster.app
    handle = durable_chord([app.signature("t.echo", (i,)) for i in range(3)],
                           app.signature("t.collect"), deadline=600, stall_timeout=1.0)
    assert reap(app, holder="loop").failed == {}
    register_beat_task(app, interval=5)
    assert app.conf.beat_schedule[BEAT_TASK]["task"] == BEAT_TASK
    time.sleep(1.2)
    assert reap(app, holder=BEAT_HOLDER).locked is False  # the loop holds the lease
    assert app.tasks[BEAT_TASK].apply().get()["locked"] is False
    report = reap(app, holder="loop")
    assert report.failed[handle.id].startswith("stalled: no header part finished")
    assert handle.state == "failed" and handle.progress.done == 0


def test_a_guarded_worker_reaps_durable_chords_by_itself(make_cluster, tmp_path):
    guard = {"store": f"sqlite:///{tmp_path / 'guard.sqlite'}", "reaper_interval": 1}
    cluster = make_cluster(REDIS_URL, None, {"guard": guard, "task_ignore_result": True})
    cluster.start_worker()
    app = cluster.app
    lost = app.signature("t.echo", (2,)).set(queue=f"nobody-{cluster.namespace}")
    handle = durable_chord([app.signature("t.echo", (1,)), lost], app.signature("t.collect"),
                           deadline=3)
    wait_for(lambda: handle.progress.done == 1, what="the first part")
    assert handle.state == "waiting"
    wait_for(lambda: handle.state == "failed", timeout=20,
             what="the guard's reaper thread to fail the overdue durable chord")
    assert "deadline" in handle.barrier().reason


def test_a_reaper_lease_taken_over_from_a_killed_worker_fails_chords_by_their_deadline(
        make_cluster):
    # the worker holding the reaper's lease is SIGKILLed with header parts in hand; the other
    # takes the lease over (10 s) and, having reached the store all along, judges at once:
    # a handover is no store outage (no chordguard_outage_settle wait)
    guard = {"store": REDIS_URL, "reaper_interval": 1}
    cluster = make_cluster(REDIS_URL, None, {**conf(REDIS_URL), "guard": guard,
                                             "chordguard_outage_settle": 30})
    app, parts = cluster.app, f"parts-{cluster.namespace}"
    doomed = cluster.start_worker(queues=[parts])
    store = open_store(REDIS_URL)
    holder = lambda: store.lease_holder(f"reaper:{app.main}") or ""  # noqa: E731
    wait_for(lambda: f":{doomed.process.pid}:" in holder(), what="the doomed worker's lease")
    cluster.start_worker()  # callbacks and errbacks; it stands by for the lease
    errors = Trace()
    handles = []
    for _ in range(3):
        callback = app.signature("t.record", kwargs={"key": errors.key})
        callback.link_error(app.signature("t.note", kwargs={"key": errors.key}))
        header = [app.signature("t.sleep", (60, i)).set(queue=parts) for i in range(2)]
        handles.append(durable_chord(header, callback, deadline=14))
    wait_for(lambda: doomed.output().count("t.sleep[") >= 6, what="the parts received")
    doomed.kill()

    wait_for(lambda: all(h.state == "failed" for h in handles), timeout=30,
             what="the overdue chords failed")
    assert f":{doomed.process.pid}:" not in holder()
    for handle in handles:
        late = re.fullmatch(r"deadline passed while waiting \((\d+) s ago\)",
                            handle.barrier().reason)
        assert late and int(late[1]) <= 3, handle.barrier().reason  # not 30 s of settle
        with pytest.raises(DurableChordFailed):
            handle.get(timeout=1)
    wait_for(lambda: sorted(errors.entries()) == sorted(h.callback_id for h in handles),
             what="each errback once")
    letters = {letter.chord_id for letter in store.dead_letters(limit=100_000)}
    assert {h.id for h in handles} <= letters
    errors.close()
