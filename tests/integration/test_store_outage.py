"""A durable store that hangs mid-run (SIGSTOP/SIGCONT of a private server) delays chords,
never loses or duplicates one; a worker's wrong clock never moves a deadline.

The reaper runs the whole time (a ``reap_forever`` loop here, as ``chordguard reap`` does),
with a stall timeout shorter than the hang: a completion held through the outage must not be
mistaken for a stall.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter

import pytest
from celery import chord

from chordguard.config import apply_store_timeouts
from chordguard.durable import durable_chord, reap, reap_forever
from chordguard.store import open_store
from chordguard.store.timeouts import configure, from_environment
from tests.cluster import PG_BACKEND, REDIS_URL, wait_for
from tests.guard_support import ended
from tests.private_servers import private_postgres, private_redis

CHORDS, PARTS, HANG, DEADLINE, STALL = 20, 5, 15.0, 75.0, 10.0
SERVERS = {"redis": private_redis, "postgres": private_postgres}


@pytest.fixture(params=list(SERVERS))
def server(request):
    with SERVERS[request.param]() as running:
        yield running


@pytest.fixture
def short_timeouts():
    yield
    configure(from_environment())


@contextlib.contextmanager
def reaper_loop(app, failed: dict[str, str]):
    """``reap_forever`` every second in a thread for the block (as ``chordguard reap``)."""
    stop = threading.Event()
    thread = threading.Thread(target=reap_forever, args=(app, 1.0), daemon=True,
                              kwargs={"stop": stop, "on_pass": lambda r: failed.update(r.failed)})
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def outage_conf(store: str, **extra) -> dict:
    return {"cg_durable": True, "chordguard_store": store, "task_ignore_result": True,
            "chordguard_store_timeout": 2, "chordguard_store_connect_timeout": 1,
            "chordguard_outage_settle": 3, **extra}


def test_a_store_hung_mid_run_delays_every_chord_and_loses_none(make_cluster, server, trace,
                                                                  short_timeouts):
    cluster = make_cluster(REDIS_URL, None, outage_conf(server.url))
    app = cluster.app
    apply_store_timeouts(app)  # the reaper loop below gets the same client timeouts
    cluster.start_worker(concurrency=8)
    failed: dict[str, str] = {}
    with reaper_loop(app, failed):
        started = time.monotonic()
        handles = [durable_chord(
            [app.signature("t.sleep", (0.5, 10 * c + i)) for i in range(PARTS)],
            app.signature("t.record", kwargs={"key": trace.key}),
            deadline=DEADLINE, stall_timeout=STALL) for c in range(CHORDS)]
        wait_for(lambda: trace.entries(), interval=0.02, what="the first callback")
        with server.hung():
            paused, done_before = time.monotonic() - started, len(trace.entries())
            time.sleep(HANG)
        ends = []
        for handle in handles:
            assert handle.get(timeout=DEADLINE) == PARTS
            ends.append(time.monotonic() - started)
        time.sleep(1)  # a late duplicate (a re-dispatch) would run by now
    assert done_before <= CHORDS - 5, "the hang came too late to be mid-run"
    runs = Counter(values[0] // 10 for values in trace.entries())
    assert runs == Counter(range(CHORDS)), runs
    assert failed == {}
    assert [h.state for h in handles] == ["succeeded"] * CHORDS
    assert open_store(server.url).dead_letters() == []
    print(f"\n{type(server).__name__}: hung from {paused:.1f} s to {paused + HANG:.1f} s "
          f"({done_before} of {CHORDS} callbacks run before); last chord terminal at "
          f"{max(ends):.1f} s after publication (deadline {DEADLINE:g} s)")


def test_a_guarded_callback_waits_out_a_hung_store_and_runs_once(make_cluster, trace,
                                                                   short_timeouts):
    with private_redis() as server:
        cluster = make_cluster(REDIS_URL, REDIS_URL, {
            "guard": {"store": server.url, "deadline": 60, "reaper_interval": 1},
            "chordguard_store_timeout": 1, "chordguard_store_connect_timeout": 1})
        cluster.start_worker(concurrency=4)
        app = cluster.app
        results = [chord([app.signature("t.sleep", (1, 10 * c + i)) for i in range(3)])(
            app.signature("t.guarded_record", kwargs={"key": trace.key})) for c in range(4)]
        with server.hung(6):  # the headers finish and the callbacks start meanwhile
            wait_for(lambda: all(r.parent.completed_count() == 3 for r in results),
                     what="every header")
            time.sleep(2)
        assert [r.get(timeout=30) for r in results] == [3] * 4
        runs = Counter(successes[0] // 10 for successes, _ in trace.entries())
        assert runs == Counter(range(4)), runs
        assert [ended(server.url, r.parent.id).state for r in results] == ["succeeded"] * 4
        journal = open_store(server.url)
        assert journal.dead_letters() == []


def test_deadlines_and_stalls_are_judged_on_the_store_clock(make_cluster, trace, monkeypatch):
    cluster = make_cluster(REDIS_URL, None, outage_conf(REDIS_URL))
    cluster.start_worker(conf={"cg_clock_offset": -30})  # a worker 30 s slow
    app = cluster.app
    handle = durable_chord([app.signature("t.echo", (0,)), app.signature("t.sleep", (3, 1))],
                           app.signature("t.record", kwargs={"key": trace.key}),
                           deadline=20, stall_timeout=10)
    wait_for(lambda: handle.progress.done == 1, what="the first part")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 30)  # and a reaper 30 s fast
    assert reap(app, keep_lease=False).failed == {}
    monkeypatch.undo()
    handle.get(timeout=30)
    assert trace.entries() == [[0, 1]]


def test_a_guarded_unlock_chord_is_judged_on_the_store_clock_not_a_fast_worker(make_cluster):
    guard = {"store": REDIS_URL, "deadline": 20, "unlock_max_interval": 1}
    cluster = make_cluster(REDIS_URL, PG_BACKEND, {"guard": guard})
    cluster.start_worker(conf={"cg_clock_offset": 30})  # its clock reads past the deadline
    app = cluster.app
    result = chord([app.signature("t.sleep", (2, 1)), app.signature("t.echo", (2,))])(
        app.signature("t.tsum"))
    assert result.get(timeout=30) == 3  # not failed at the first poll
