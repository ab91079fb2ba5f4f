"""Incident 2 of the post-mortem and the annotation trap, on a database backend.

- A worker SIGKILLed while it holds an unlock retry under acks_late: the old message comes
  back while the new one is queued, and two chord_unlock chains poll one chord.
- ``task_annotations={'celery.chord_unlock': {'max_retries': 3}}`` fails any chord > ~3 s.

Each first with plain Celery (observed), then with the guard (contained).
"""

from __future__ import annotations

import time

import pytest
from celery import chord
from celery.exceptions import ChordError

from chordguard import _compat
from chordguard.store.records import SUCCEEDED
from tests.chordapp import trace_redis
from tests.cluster import AMQP_URL, PG_BACKEND, REDIS_URL, wait_for
from tests.guard_support import ended, letter_for, repeated_retries, store_urls, unlock_runs

KILL = {"task_acks_late": True, "cg_trace_unlock": True,
        "cg_pause_after_retry_of": "celery.chord_unlock"}
TRAP = {"task_annotations": {"celery.chord_unlock": {"max_retries": 3}}}


def kill_while_holding_a_retry(cluster, seconds: float = 8):
    """Publish a chord, SIGKILL the worker paused right after publishing an unlock retry,
    start another one. Returns the chord's result."""
    first = cluster.start_worker(concurrency=4)
    app = cluster.app
    result = chord([app.signature("t.sleep", (seconds,))])(app.signature("t.tsum"))
    wait_for(lambda: trace_redis().exists(f"cg:{cluster.namespace}:paused"), 30,
             what="a worker paused after publishing an unlock retry")
    first.kill()
    cluster.start_worker(concurrency=4)
    return result


def test_plain_celery_sigkill_leaves_two_unlock_chains(make_cluster):
    cluster = make_cluster(AMQP_URL, PG_BACKEND, KILL)
    result = kill_while_holding_a_retry(cluster)
    assert result.get(timeout=60) == 8
    runs = unlock_runs(cluster, result.parent.id)
    assert repeated_retries(runs), f"expected two chains (a retry count seen twice): {runs}"


@pytest.mark.compat
def test_guard_stops_the_duplicate_chain(make_cluster, tmp_path):
    url = store_urls(tmp_path)["redis"]
    guard = {"store": url, "deadline": 90, "unlock_max_interval": 2}
    cluster = make_cluster(AMQP_URL, PG_BACKEND, {**KILL, "guard": guard})
    result = kill_while_holding_a_retry(cluster)
    assert result.get(timeout=60) == 8
    record = ended(url, result.parent.id)
    assert record.state == SUCCEEDED
    assert record.duplicates >= 1, "the redelivered copy must notice the lease and stop"
    runs = unlock_runs(cluster, result.parent.id)
    assert not repeated_retries(runs), f"one live chain only: {runs}"
    # bounded by the deadline, not by a retry count: at most one poll a second until the
    # reaper's slack past the deadline (unlock_max_interval + 5 s) — 13 seen under load
    assert record.polls <= 8 + 1 + 5 + 1


@pytest.mark.compat
def test_plain_celery_max_retries_annotation_fails_a_long_chord(make_cluster):
    """5.7 fails the callback when chord_unlock runs out of retries; 5.3 - 5.6 leave it
    PENDING for ever although the header succeeded."""
    cluster = make_cluster(REDIS_URL, PG_BACKEND, {**TRAP, "cg_trace_unlock": True})
    cluster.start_worker()
    app = cluster.app
    result = chord([app.signature("t.sleep", (6,))])(app.signature("t.tsum"))
    if _compat.UNLOCK_GIVE_UP_FAILS_CALLBACK:
        with pytest.raises(ChordError):
            result.get(timeout=30)
        return
    header = result.parent.results[0]
    wait_for(lambda: header.state == "SUCCESS", 30, what="the header to succeed")
    runs = unlock_runs(cluster, result.parent.id)
    assert [run["retries"] for run in runs] == [0, 1, 2, 3], "gave up after 3 retries"
    time.sleep(2)  # two poll intervals: a live unlock would have published the callback
    assert result.state == "PENDING" and len(unlock_runs(cluster, result.parent.id)) == 4


@pytest.mark.compat
def test_guard_ignores_the_count_and_bounds_by_deadline(make_cluster, tmp_path):
    url = store_urls(tmp_path)["sqlite"]
    guard = {"store": url, "deadline": 8, "unlock_max_interval": 1}
    cluster = make_cluster(REDIS_URL, PG_BACKEND, {**TRAP, "guard": guard})
    cluster.start_worker()
    app = cluster.app
    long_ok = chord([app.signature("t.sleep", (5,))])(app.signature("t.tsum"))
    too_long = chord([app.signature("t.sleep", (30,))])(app.signature("t.tsum"))
    started = time.monotonic()
    assert long_ok.get(timeout=30) == 5  # > 3 retries of 1 s: plain Celery failed this one
    # the body's own outcome: get() on a db+ result checks the header between polls, and the
    # revoked header's TaskRevokedError may be seen before the body's ChordError
    failure = too_long.get(timeout=30, propagate=False)
    assert isinstance(failure, ChordError) and "deadline" in str(failure), failure
    assert time.monotonic() - started < 20, "the deadline (8 s) ends it, not the 30 s header"
    record = ended(url, too_long.parent.id)
    # bounded by the deadline, not by a retry count: at most one poll a second until the
    # reaper's slack past the deadline (unlock_max_interval + 5 s) — 13 seen under load
    assert record.polls <= 8 + 1 + 5 + 1
    letter = letter_for(url, too_long.parent.id)
    assert letter.reason.startswith("deadline") and letter.inputs[0]["type"] == "Pending"
