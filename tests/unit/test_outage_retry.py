"""Writes held through a store outage: what is retried, with what, and until when."""

from __future__ import annotations

import pytest

from chordguard.durable.hook import _own_claim
from chordguard.errors import UnreachableError
from chordguard.store import open_store
from chordguard.store.outage import until_written
from chordguard.store.records import BarrierState, Outcome
from tests.durable_helpers import new_barrier


def flaky(failures: int, error: Exception):
    calls = []

    def call():
        calls.append(1)
        if len(calls) <= failures:
            raise error
        return "first" if len(calls) == 1 else "landed"
    return call, calls


def test_an_unreachable_store_is_retried_with_the_retry_call():
    call, calls = flaky(2, ConnectionError("store down"))
    again = []
    assert until_written(call, float("inf"), lambda: 0.0, "a part",
                         again=lambda: again.append(1) or call()) == "landed"
    assert len(calls) == 3 and len(again) == 2


def test_a_bug_is_raised_at_once_and_an_outage_past_the_deadline_gives_up():
    call, calls = flaky(5, ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        until_written(call, float("inf"), lambda: 0.0, "a part")
    assert len(calls) == 1
    call, calls = flaky(5, ConnectionError("store down"))
    with pytest.raises(UnreachableError, match="before the chord's deadline"):
        until_written(call, 10.0, lambda: 11.0, "a part")
    assert len(calls) == 1


def test_a_retry_that_finds_its_own_lost_claim_acts_on_it():
    store = open_store("memory://own-claim")
    barrier = new_barrier(1, "app")
    store.create_barrier(barrier)
    first = store.complete_part(barrier.id, 0, '{"status": "succeeded", "result": 1}', False,
                                barrier.created_at, "token-1", app="app")
    assert first.outcome is Outcome.DISPATCH  # ... and its reply was lost
    again = store.complete_part(barrier.id, 0, "{}", False, barrier.created_at, "token-1",
                                app="app")
    assert again.outcome is Outcome.DUPLICATE
    resumed = _own_claim(store, barrier.id, again, "token-1")
    assert resumed.outcome is Outcome.DISPATCH and resumed.barrier is not None
    assert resumed.barrier.state is BarrierState.DISPATCHING
    assert resumed.envelopes == ['{"status": "succeeded", "result": 1}']
    assert _own_claim(store, barrier.id, again, "someone-else").outcome is Outcome.DUPLICATE
