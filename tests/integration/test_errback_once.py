"""An errback Celery already ran for a failure is not run again when the guard ends the chord.

Celery fails a chord in a chord's header by failing the inner body (its errbacks run, the
outer chord's among them, with ``task_allow_error_cb_on_chord_header`` off) and leaves the
outer body PENDING; the guard ends that outer chord at its deadline. celery#9674's shape (a
failed task in a chain in the header) hangs before 5.7; the guard ends it as 5.7 does. Each
errback and body run leaves one Redis list entry; the clusters of a test run side by side,
watched once for longer than the deadline.
"""

from __future__ import annotations

import time

import pytest
from celery import chain, chord, group

from chordguard._compat import INSTALLED
from tests.chordapp import trace_redis
from tests.cluster import PG_BACKEND, REDIS_URL
from tests.guard_support import ended, store_urls

DEADLINE = 5.0
WINDOW = DEADLINE + 20.0
pytestmark = [pytest.mark.compat,
              pytest.mark.filterwarnings("ignore::celery.exceptions.CPendingDeprecationWarning")]


def guard(store: str) -> dict:
    return {"guard": {"store": store, "deadline": DEADLINE, "reaper_interval": 1,
                      "unlock_max_interval": 2}}


def test_a_nested_chord_header_failure_runs_the_outer_errback_once(make_cluster, tmp_path):
    store = store_urls(tmp_path)["sqlite"]
    flag = {"task_allow_error_cb_on_chord_header": False}
    runs = {}
    for mode, conf in (("plain", flag), ("guarded", {**flag, **guard(store)})):
        cluster = make_cluster(REDIS_URL, REDIS_URL, conf)
        cluster.start_worker()
        s = cluster.app.signature
        errbacks, bodies = f"cg:{cluster.namespace}:errback", f"cg:{cluster.namespace}:body"
        inner = chord([s("t.echo", ("t1",)), s("t.fail", ("header",))],
                      s("t.echo", ("t2",), immutable=True))
        outer = chord(group([s("t.echo", ("t3",)), inner]), s("t.record", kwargs={"key": bodies}))
        outer.link_error(s("t.note", kwargs={"key": errbacks}))
        runs[mode] = (outer.delay(), errbacks, bodies)

    time.sleep(WINDOW)
    redis = trace_redis()
    celery_ran = int(INSTALLED.errbacks_reach_header_chords)  # 5.3/5.4: none, it just hangs
    assert {mode: (redis.llen(e), redis.llen(b)) for mode, (_, e, b) in runs.items()} == {
        "plain": (celery_ran, 0), "guarded": (1, 0)}  # the errback once, the body never
    assert runs["plain"][0].state == "PENDING"  # Celery leaves it hanging
    result = runs["guarded"][0]
    assert result.state == "FAILURE"  # the guard ended it, by its deadline
    assert ended(store, result.parent.id, timeout=1).state == "dead_lettered"


def test_a_failed_task_in_a_nested_chain_header_ends_the_chord_as_celery_5_7_does(
        make_cluster, tmp_path):
    """celery#9674: before 5.7 the body stays PENDING for ever. Guarded, every version ends
    it as plain 5.7 does: the body FAILURE, the chord's errback run once for the body, plus
    once for the failed header task that carries it too (``allow_error_cb_on_chord_header``).
    Redis (native join) and PostgreSQL (chord_unlock)."""
    flags = (False, True) if INSTALLED.header_errbacks_reach_chains_with_groups else (False,)
    runs = {}
    for backend, name in ((REDIS_URL, "redis"), (PG_BACKEND, "postgres")):
        cluster = make_cluster(REDIS_URL, backend, guard(store_urls(tmp_path)["sqlite"]))
        cluster.start_worker()
        app, s = cluster.app, cluster.app.signature
        for on_header in flags:
            app.conf.task_allow_error_cb_on_chord_header = on_header
            key = f"cg:{cluster.namespace}:errback:{on_header}"
            nested = chain(s("t.fail", ("header",), immutable=True),
                           group(s("t.echo", (2,), immutable=True),
                                 s("t.echo", (3,), immutable=True)),
                           s("t.echo", (4,), immutable=True))
            outer = chord([s("t.echo", (1,), immutable=True), nested], s("t.collect"))
            outer.link_error(s("t.note", kwargs={"key": key}))
            runs[name, on_header] = (outer.delay(), key)

    time.sleep(WINDOW)
    redis = trace_redis()
    expected = {False: (1, "FAILURE"), True: (2, "FAILURE")}
    assert {run: (redis.llen(key), result.state) for run, (result, key) in runs.items()} == {
        (backend, on_header): expected[on_header]
        for backend in ("redis", "postgres") for on_header in flags}
