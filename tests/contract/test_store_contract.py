"""The store contract: every backend (memory, SQLite, PostgreSQL, Redis) passes this suite.

Journal (parts counted once, a chord ended once), leases (the one compare-and-set that
serves unlock leases, run-once claims and the reaper lock), dead letters, breakers,
retention, barriers (atomic count-down, exactly one claim under races, duplicates ignored,
failure policies, claim recovery), the record codec through each backend, the scheme
table, and the SQL fork rule. A new backend is done when it passes this file.
"""

from __future__ import annotations

import datetime
import os
import threading
import time
import uuid

import pytest

from chordguard.durable.barrier import failed, succeeded
from chordguard.errors import BarrierExists, ConfigurationError
from chordguard.store import Store, by_url, open_store
from chordguard.store.memory import MemoryStore
from chordguard.store.records import (
    DLQ_DEAD,
    DLQ_DROPPED,
    FAILED,
    KEEP_SECONDS,
    SUCCEEDED,
    BarrierState,
    ChordRecord,
    DeadLetter,
    Outcome,
    PartUpdate,
    Policy,
)
from chordguard.store.redis import keys
from chordguard.store.redis.store import RedisStore
from chordguard.store.sql.store import SqlStore
from tests.contract.conftest import backend_url
from tests.durable_helpers import new_barrier


def record(app: str, deadline_in: float = 60) -> ChordRecord:
    now = time.time()
    return ChordRecord(id=str(uuid.uuid4()), app=app, kind="unlock", callback_name="t.cb",
                       callback_id=str(uuid.uuid4()), header_ids=["a", "b", "c"],
                       created_at=now, deadline_at=now + deadline_in,
                       callback={"task": "t.cb", "options": {}})


def letter(**fields) -> DeadLetter:
    return DeadLetter(**{"id": uuid.uuid4().hex[:16], "chord_id": "c", "app": "a",
                         "callback_name": "t.cb", "callback": {"task": "t.cb"},
                         "reason": "callback_failed", "error": "TypeError()", "traceback": "tb",
                         "inputs": [None, {"n": 1}], "created_at": time.time(), **fields})


# --- journal -------------------------------------------------------------------------------

@pytest.mark.compat
def test_journal_counts_parts_once_and_ends_a_chord_once(store):
    app = "app-" + uuid.uuid4().hex
    chord, late = record(app), record(app, deadline_in=-1)
    store.record_chord(chord)
    store.record_chord(late)
    store.record_chord(chord)  # publishing twice keeps the first record
    now = time.time()
    store.record_parts([PartUpdate(chord.id, "a", "SUCCESS", now),
                        PartUpdate(chord.id, "b", "FAILURE", now + 1)])
    store.record_parts([PartUpdate(chord.id, "a", "SUCCESS", now + 2)])  # redelivered part
    found = store.chord(chord.id)
    assert (found.done, found.failed) == (2, 1)
    assert found.last_progress_at == pytest.approx(now + 1, abs=0.01)
    assert store.parts(chord.id) == {"a": "SUCCESS", "b": "FAILURE"}
    assert {c.id for c in store.open_chords(app=app)} == {chord.id, late.id}
    assert [c.id for c in store.open_chords(app=app, due_before=time.time())] == [late.id]
    assert store.finish_chord(chord.id, SUCCEEDED, "callback succeeded")
    assert not store.finish_chord(chord.id, FAILED, "reaper")  # someone else already won
    assert store.chord(chord.id).state == SUCCEEDED
    assert [c.id for c in store.open_chords(app=app)] == [late.id]


def test_journal_keeps_the_whole_record_and_counts_polls_and_duplicates(store):
    chord = record("app-" + uuid.uuid4().hex)
    chord.callback = {"task": "t.cb", "args": [datetime.datetime(2026, 1, 2, 3, 4, 5)],
                      "kwargs": {"odd": object()}}
    store.record_chord(chord)
    store.count(chord.id, "polls")
    store.count(chord.id, "polls", 2)
    store.count(chord.id, "duplicates")
    store.count(chord.id, "callback_duplicates", 2)
    found = store.chord(chord.id)
    assert (found.polls, found.duplicates, found.callback_duplicates) == (3, 1, 2)
    assert found.header_ids == ["a", "b", "c"]
    assert found.callback["args"] == [datetime.datetime(2026, 1, 2, 3, 4, 5)]  # kombu's JSON
    assert found.callback["kwargs"]["odd"].startswith("<object object")  # else its repr
    assert (found.created_at, found.deadline_at) == (chord.created_at, chord.deadline_at)
    assert store.chord("no-such-chord") is None and store.parts("no-such-chord") == {}


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis", pytest.param(
    "redis-cluster", marks=pytest.mark.distributed)])  # not the shared PostgreSQL
def test_retention_purges_ended_chords(backend, tmp_path):  # database: it would purge others'
    store = open_store(backend_url(backend, tmp_path), retention=10)
    old, live = record("a"), record("a")
    for r in (old, live):
        store.record_chord(r)
    store.finish_chord(old.id, FAILED, "deadline")
    if isinstance(store, RedisStore):  # ended chords expire by themselves
        assert 0 < store.client.ttl(keys.chord(old.id)) <= 10
        assert store.client.ttl(keys.chord(live.id)) == -1
        return
    assert store.purge(now_=time.time() + 60) == 1
    assert store.chord(old.id) is None and store.chord(live.id) is not None


# --- leases --------------------------------------------------------------------------------

def test_lease_moves_only_from_the_expected_token(store):
    chord_id = str(uuid.uuid4())
    assert store.swap_lease(chord_id, None, "t1", 60)
    assert not store.swap_lease(chord_id, None, "other", 60)  # a second first message
    assert store.swap_lease(chord_id, "t1", "t2", 60)
    assert not store.swap_lease(chord_id, "t1", "t3", 60)  # a redelivered older message
    assert store.lease_holder(chord_id) == "t2"


def test_lease_take_renew_release_and_expiry(store):
    name = "lease-" + uuid.uuid4().hex
    assert store.lease_holder(name) is None
    assert store.swap_lease(name, (None, "a"), "a", 0.5)  # take
    assert not store.swap_lease(name, (None, "b"), "b", 0.5)  # held by another
    assert store.swap_lease(name, (None, "a"), "a", 0.5)  # renew by the same holder
    assert not store.swap_lease(name, "b", None, 0)  # only the holder releases
    assert store.swap_lease(name, "a", None, 0)  # released
    assert store.lease_holder(name) is None
    assert store.swap_lease(name, None, "b", 0.3)
    time.sleep(0.5)
    assert store.lease_holder(name) is None  # expired: nobody holds it
    assert not store.swap_lease(name, "b", "c", 5)  # an expired lease is not handed over
    assert store.swap_lease(name, None, "c", 5)  # ... it is free to take
    assert store.lease_holder(name) == "c"


def test_unknown_barrier_and_lease(store, app):
    assert complete(store, new_barrier(1, app), 0).outcome is Outcome.MISSING
    name = "lease-" + uuid.uuid4().hex
    assert store.swap_lease(name, (None, "a"), "a", 0.5)
    assert not store.swap_lease(name, (None, "b"), "b", 0.5)
    assert store.swap_lease(name, (None, "a"), "a", 0.5)
    time.sleep(0.7)
    assert store.swap_lease(name, (None, "b"), "b", 5)


def test_a_claim_is_never_taken_over_and_names_its_holder(store):
    key = "run:" + uuid.uuid4().hex
    assert store.claim(key, "task-1") is None
    assert store.claim(key, "task-2") == "task-1"
    assert store.claim(key, "task-1") == "task-1"  # our own earlier delivery took it
    assert not store.swap_lease(key, None, "task-3", 60)
    assert store.lease_holder(key) == "task-1"


def test_claims_taken_together_leave_a_held_one_to_its_holder(store):
    held, free = "run:" + uuid.uuid4().hex, "run:" + uuid.uuid4().hex
    assert store.claim(held, "task-1") is None
    store.claim_all({held: "chord-a", free: "chord-b"})
    assert (store.lease_holder(held), store.lease_holder(free)) == ("task-1", "chord-b")
    assert store.claim(free, "task-2") == "chord-b"


def test_racing_takers_get_a_lease_exactly_once(store):
    name = "race-" + uuid.uuid4().hex
    won: list[str] = []
    start = threading.Barrier(6)

    def take(holder: str) -> None:
        start.wait()
        if store.swap_lease(name, None, holder, 60):
            won.append(holder)

    threads = [threading.Thread(target=take, args=(f"h{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and store.lease_holder(name) == won[0]


# --- dead letters and breakers ---------------------------------------------------------------

def test_claims_dead_letters_and_breakers(store):
    key = "run:" + uuid.uuid4().hex
    assert store.claim(key, "task-1") is None
    assert store.claim(key, "task-2") == "task-1"
    dead = letter()
    store.add_dead_letter(dead)
    assert store.dead_letter(dead.id[:10]).inputs == [None, {"n": 1}]
    assert dead.id in {d.id for d in store.dead_letters(state=DLQ_DEAD)}
    assert store.settle_dead_letter(dead.id, DLQ_DROPPED, "bad input")
    assert not store.settle_dead_letter(dead.id, DLQ_DROPPED, "twice")
    assert store.dead_letter(dead.id).note == "bad input"
    name = "t.cb-" + uuid.uuid4().hex
    for at in (1.0, 2.0):
        store.update_breaker(name, lambda b, at=at: (b.failures.append(at), b)[1])
    assert store.breaker(name).failures == [1.0, 2.0]
    assert name in {b.name for b in store.breakers()}


def test_dead_letters_newest_first_whole_and_by_unique_prefix(store):
    first = letter(created_at=time.time() - 10, inputs="a plain string")
    second = letter(id=first.id[:8] + uuid.uuid4().hex[:8])  # shares an 8-character prefix
    store.add_dead_letter(first)
    store.add_dead_letter(second)
    store.add_dead_letter(letter(id=first.id, reason="a second letter, same id"))  # ignored
    ids = [d.id for d in store.dead_letters()]
    assert ids.index(second.id) < ids.index(first.id)
    assert store.dead_letter(first.id) == first  # every field back as it was
    assert store.dead_letter(first.id[:8]) is None  # ambiguous prefix
    assert store.dead_letter(second.id[:12]).id == second.id
    assert store.dead_letter("no-such-letter") is None


def test_breaker_changes_are_compare_and_set(store):
    name = "t.cb-" + uuid.uuid4().hex
    assert store.breaker(name).version == 0
    stale = store.breaker(name)
    changed = store.update_breaker(name, lambda b: (b.failures.append(1.0), b)[1])
    assert changed.version == 1 and store.breaker(name) == changed
    stale_new = store.breaker(name)
    stale_new.failures = [9.0]
    stale_new.version = 1
    assert not store.replace_breaker(stale, stale_new)  # someone changed it meanwhile
    assert store.breaker(name).failures == [1.0]


# --- barriers ------------------------------------------------------------------------------

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
    return store.complete_part(barrier.id, index, envelope, not ok, time.time(),
                               uuid.uuid4().hex, app=barrier.app)


def test_racing_final_completions_claim_exactly_once(store, app):
    for _ in range(15):
        barrier = new_barrier(2, app)
        store.create_barrier(barrier)
        completions: list = []
        start = threading.Barrier(4)

        def finish(index: int, barrier=barrier, start=start, completions=completions) -> None:
            start.wait()
            completions.append(complete(store, barrier, index))

        threads = [threading.Thread(target=finish, args=(i,)) for i in (0, 1, 0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        outcomes = [c.outcome for c in completions]
        assert sorted(outcomes) == sorted([Outcome.DISPATCH, Outcome.COUNTED,
                                           Outcome.DUPLICATE, Outcome.DUPLICATE])
        assert store.barrier(barrier.id).state is BarrierState.DISPATCHING
        claimed = next(c for c in completions if c.outcome is Outcome.DISPATCH)
        # the racing part's envelope too, though it landed after the claim's statement began
        assert [f'"result": {i}' in e for i, e in enumerate(claimed.envelopes)] == [True, True]


def test_a_grown_barrier_waits_for_its_added_part_and_hands_it_on_last(store, app):
    barrier = new_barrier(2, app)
    store.create_barrier(barrier)
    assert complete(store, barrier, 0).outcome is Outcome.COUNTED
    assert store.grow_barrier(barrier.id) == 2
    assert complete(store, barrier, 1).outcome is Outcome.COUNTED
    last = complete(store, barrier, 2)
    assert last.outcome is Outcome.DISPATCH and last.barrier.total == 3
    assert ['"result": 2' in e for e in last.envelopes] == [False, False, True]
    assert store.grow_barrier(barrier.id) is None  # no longer waiting
    assert store.grow_barrier("no-such-barrier") is None


def test_a_second_barrier_with_the_same_id_is_refused_and_changes_nothing(store, app):
    barrier = new_barrier(2, app)
    store.create_barrier(barrier)
    assert complete(store, barrier, 0).outcome is Outcome.COUNTED
    again = new_barrier(3, app)
    again.id = barrier.id
    with pytest.raises(BarrierExists):
        store.create_barrier(again)
    stored = store.barrier(barrier.id, with_header_ids=True)
    assert (stored.total, stored.remaining, stored.header_ids) == (2, 1, barrier.header_ids)
    assert complete(store, barrier, 1).outcome is Outcome.DISPATCH


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


def test_a_claimed_or_sent_callback_is_due_at_its_deadline_not_later(store, app):
    """A claim is looked at after its grace or at the deadline, whichever comes first; a
    sent callback at its deadline only (never every pass before it, never past it)."""
    soon, later = new_barrier(1, app, deadline=5), new_barrier(1, app, deadline=100)
    for barrier in (soon, later):
        store.create_barrier(barrier)
    claims = {b.id: complete(store, b, 0) for b in (soon, later)}
    now = time.time()
    assert [b.id for b in store.due_barriers(app, now + 6)] == [soon.id]
    for barrier in (soon, later):
        assert store.mark_dispatched(barrier.id, claims[barrier.id].barrier.claim_token, now)
    assert [b.id for b in store.due_barriers(app, now + 6)] == [soon.id]
    assert [b.id for b in store.due_barriers(app, now + 60)] == [soon.id]
    assert {b.id for b in store.due_barriers(app, now + 101)} == {soon.id, later.id}


def test_purge_deletes_ended_barriers_only(store, app):
    ended, running = new_barrier(1, app), new_barrier(1, app)
    store.create_barrier(ended)
    store.create_barrier(running)
    assert store.fail_barrier(ended.id, "over", time.time(), "tok") is not None
    purged = store.purge_barriers(app, time.time() + 1)
    assert store.barrier(running.id) is not None
    if isinstance(store, RedisStore):  # the keys expire by themselves
        assert 0 < store.client.ttl(keys.barrier(ended.id)[0]) <= KEEP_SECONDS
    else:
        assert purged == 1 and store.barrier(ended.id) is None


def test_a_barrier_reads_back_whole_and_is_due_when_the_reaper_must_look(store, app):
    barrier = new_barrier(2, app, deadline=60, stall=30)
    barrier.callback["args"] = [datetime.datetime(2026, 1, 2)]
    barrier.by_reference, barrier.store = True, "redis://elsewhere/1"
    store.create_barrier(barrier)
    found = store.barrier(barrier.id, with_header_ids=True)
    assert found == barrier  # every field, header ids included, through the codec
    assert store.barrier(barrier.id).header_ids == []  # only when asked
    assert store.envelopes(barrier.id, 0, 2) == [None, None]
    assert [b.id for b in store.barriers_in_flight(app)] == [barrier.id]
    assert store.due_barriers(app, time.time()) == []
    assert [b.id for b in store.due_barriers(app, time.time() + 31)] == [barrier.id]
    assert complete(store, barrier, 1).outcome is Outcome.COUNTED
    assert store.envelopes(barrier.id, 0, 2)[0] is None
    dispatch = complete(store, barrier, 0)
    assert dispatch.outcome is Outcome.DISPATCH and dispatch.envelopes is None  # by reference
    assert store.due_barriers(app, time.time()) == []  # the claim's grace runs
    assert [b.id for b in store.due_barriers(app, time.time() + 31)] == [barrier.id]


def test_a_barrier_whose_parts_keep_coming_is_due_a_stall_after_the_last_one(store, app):
    barrier = new_barrier(2, app, deadline=600, stall=30)
    store.create_barrier(barrier)
    start = barrier.created_at
    done = store.complete_part(barrier.id, 0, succeeded("h0", 0), False, start + 20, "t",
                               app=app)
    assert done.outcome is Outcome.COUNTED
    assert store.due_barriers(app, start + 31) == []  # not stalled: a part came at +20
    assert store.due_barriers(app, start + 31) == []  # (asked twice: still not)
    assert [b.id for b in store.due_barriers(app, start + 51)] == [barrier.id]


# --- the factory ---------------------------------------------------------------------------

def test_one_store_object_per_url_and_scheme_table(tmp_path):
    sqlite_url = f"sqlite:///{tmp_path}/one.sqlite"
    assert open_store(sqlite_url) is open_store(sqlite_url)
    assert isinstance(open_store("memory://one"), MemoryStore)
    assert open_store("memory://one") is not open_store("memory://two")
    for url, cls in [("sqlite:///x.sqlite", SqlStore), ("postgresql+psycopg://h/db", SqlStore),
                     ("redis://h:6379/0", RedisStore), ("rediss://h:6380/0", RedisStore),
                     ("unix:///tmp/redis.sock", RedisStore), ("memory://", MemoryStore)]:
        assert by_url(url) is cls
    for url in ("mysql://u:secret@h/db", "chordguard.sqlite", "db+sqlite:///x"):
        with pytest.raises(ConfigurationError, match="unknown store URL") as error:
            open_store(url)
        assert "secret" not in str(error.value) and "\n" not in str(error.value)
    assert all(Store in cls.__mro__ for cls in (SqlStore, RedisStore, MemoryStore))


# --- the SQL fork rule (on PostgreSQL, where a session shows its backend pid) -----------

def test_a_forked_child_never_reuses_the_parents_connections(tmp_path):
    store = open_store(backend_url("postgres", tmp_path))
    name = "fork-" + uuid.uuid4().hex
    assert store.swap_lease(name, None, "parent", 60)  # on the thread's own connection
    store.record_chord(record("fork"))  # on a pooled one
    parent = _sessions(store)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: sessions of its own, and the store works
        code = b"1"
        try:
            works = store.lease_holder(name) == "parent" and store.claim(name + "c", "c") is None
            code = b"0" if works and not _sessions(store) & parent else b"2"
        finally:
            os.write(write, code)
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 8) == b"0"
    assert store.lease_holder(name) == "parent"  # the parent's sessions still work
    assert store.lease_holder(name + "c") == "c"


def _sessions(store) -> set[int]:
    """The PostgreSQL backends serving this process: its pooled and its own connection."""
    from sqlalchemy import text

    query = text("SELECT pg_backend_pid()")
    return {store._transaction(lambda conn: conn.execute(query).scalar()),
            store._run(lambda conn: conn.execute(query).scalar())}


def test_a_journal_made_before_a_counter_existed_gets_its_column(tmp_path):
    import sqlite3

    old = tmp_path / "old.sqlite"
    SqlStore(f"sqlite:///{old}").record_chord(record("app-old"))
    with sqlite3.connect(old) as db:  # as an earlier chordguard left it
        db.execute("ALTER TABLE chordguard_journal DROP COLUMN callback_duplicates")
    store = SqlStore(f"sqlite:///{tmp_path}/./old.sqlite")  # a new engine, as after an upgrade
    chord = record("app-old")
    store.record_chord(chord)
    store.count(chord.id, "callback_duplicates")
    assert store.chord(chord.id).callback_duplicates == 1
    assert [c.app for c in store.open_chords(app="app-old")] == ["app-old", "app-old"]


def test_the_store_clock_reads_epoch_seconds(store):
    # every service here runs on this host: its clock agrees with ours to within a second
    assert abs(store.clock() - time.time()) < 1.0
