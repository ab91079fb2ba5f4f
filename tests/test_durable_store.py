"""Barrier stores against the real services: atomic count-down, exactly one claim under races,
duplicates ignored, failure policies, claim recovery, the reaper lease."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from chordguard.durable.barrier import (
    KEEP_SECONDS,
    BarrierState,
    Outcome,
    Policy,
    failed,
    succeeded,
)
from chordguard.store import open_store
from chordguard.store.redis.keys import BARRIER_PREFIX as PREFIX
from chordguard.store.sql.store import SqlStore
from tests.durable_helpers import STORES, new_barrier


@pytest.fixture(params=[*STORES, "sqlite"])
def store(request, tmp_path):
    url = STORES.get(request.param) or f"sqlite:///{tmp_path}/barriers.sqlite"
    return open_store(url)


@pytest.fixture
def app(store):
    """An app name of this test's own; its barriers are ended and purged afterwards."""
    name = "store-test-" + uuid.uuid4().hex[:8]
    yield name
    for barrier in store.barriers_in_flight(name):
        store.fail_barrier(barrier.id, "test over", time.time(), "cleanup")
    store.purge_barriers(name, time.time() + 1)


def complete(store, barrier, index, ok=True):
    envelope = succeeded(f"h{index}", index) if ok else failed(f"h{index}", RuntimeError("x"))
    return store.complete_part(barrier.id, index, envelope, not ok, time.time(), uuid.uuid4().hex,
                          app=barrier.app)


def test_racing_final_completions_claim_exactly_once(store, app):
    for _ in range(15):
        barrier = new_barrier(2, app)
        store.create_barrier(barrier)
        outcomes: list[Outcome] = []
        start = threading.Barrier(4)

        def finish(index: int, barrier=barrier, start=start, outcomes=outcomes) -> None:
            start.wait()
            outcomes.append(complete(store, barrier, index).outcome)

        threads = [threading.Thread(target=finish, args=(i,)) for i in (0, 1, 0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == sorted([Outcome.DISPATCH, Outcome.COUNTED,
                                           Outcome.DUPLICATE, Outcome.DUPLICATE])
        assert store.barrier(barrier.id).state is BarrierState.DISPATCHING


def test_dispatch_carries_envelopes_in_header_order_and_ignores_duplicates(store, app):
    barrier = new_barrier(3, app)
    store.create_barrier(barrier)
    assert complete(store, barrier, 2).outcome is Outcome.COUNTED
    assert complete(store, barrier, 0).outcome is Outcome.COUNTED
    assert complete(store, barrier, 0).outcome is Outcome.DUPLICATE
    last = complete(store, barrier, 1)
    assert last.outcome is Outcome.DISPATCH
    assert [e and e.count('"result": ') for e in last.envelopes] == [1, 1, 1]
    assert ['"result": 0' in last.envelopes[0], '"result": 2' in last.envelopes[2]] == [True] * 2
    assert complete(store, barrier, 1).outcome is Outcome.DUPLICATE
    assert store.mark_dispatched(barrier.id, last.barrier.claim_token, time.time())
    assert not store.mark_dispatched(barrier.id, "someone-else", time.time())
    assert store.finish_barrier(barrier.id, BarrierState.SUCCEEDED, time.time(), outcome="3")
    assert not store.finish_barrier(barrier.id, BarrierState.FAILED, time.time(), reason="late")
    assert store.barrier(barrier.id).state is BarrierState.SUCCEEDED
    assert barrier.id not in {b.id for b in store.barriers_in_flight(app)}


def test_fail_policy_first_failure_claims_the_failure(store, app):
    barrier = new_barrier(3, app)
    store.create_barrier(barrier)
    assert complete(store, barrier, 0).outcome is Outcome.COUNTED
    first = complete(store, barrier, 1, ok=False)
    assert first.outcome is Outcome.FAIL and first.barrier.state is BarrierState.FAILED
    assert complete(store, barrier, 2, ok=False).outcome is Outcome.LATE
    stored = store.barrier(barrier.id)
    assert (stored.state, stored.failed, stored.remaining) == (BarrierState.FAILED, 2, 0)
    assert store.fail_barrier(barrier.id, "again", time.time(), "tok") is None


def test_continue_policy_counts_failures_and_dispatches(store, app):
    barrier = new_barrier(2, app, policy=Policy.CONTINUE)
    store.create_barrier(barrier)
    assert complete(store, barrier, 0, ok=False).outcome is Outcome.COUNTED
    last = complete(store, barrier, 1)
    assert last.outcome is Outcome.DISPATCH and last.barrier.failed == 1
    assert '"status": "failed"' in last.envelopes[0]


def test_a_dead_claim_is_reclaimed_only_after_the_grace(store, app):
    barrier = new_barrier(1, app)
    store.create_barrier(barrier)
    claim = complete(store, barrier, 0)
    assert claim.outcome is Outcome.DISPATCH
    now = time.time()
    assert store.reclaim_barrier(barrier.id, now, "second", grace=30) is None
    taken = store.reclaim_barrier(barrier.id, now + 31, "second", grace=30)
    assert taken is not None and taken.claim_token == "second"
    assert not store.mark_dispatched(barrier.id, claim.barrier.claim_token, now + 31)
    assert store.mark_dispatched(barrier.id, "second", now + 31)


def test_unknown_barrier_and_lease(store, app):
    assert complete(store, new_barrier(1, app), 0).outcome is Outcome.MISSING
    name = "lease-" + uuid.uuid4().hex
    assert store.swap_lease(name, (None, "a"), "a", 0.5)
    assert not store.swap_lease(name, (None, "b"), "b", 0.5)
    assert store.swap_lease(name, (None, "a"), "a", 0.5)
    time.sleep(0.7)
    assert store.swap_lease(name, (None, "b"), "b", 5)


def test_purge_deletes_ended_barriers_only(store, app):
    ended, running = new_barrier(1, app), new_barrier(1, app)
    store.create_barrier(ended)
    store.create_barrier(running)
    assert store.fail_barrier(ended.id, "over", time.time(), "tok") is not None
    purged = store.purge_barriers(app, time.time() + 1)
    assert store.barrier(running.id) is not None
    if isinstance(store, SqlStore):
        assert purged == 1 and store.barrier(ended.id) is None
    else:  # Redis: the keys expire by themselves
        assert 0 < store.client.ttl(f"{PREFIX}b:{ended.id}") <= KEEP_SECONDS
