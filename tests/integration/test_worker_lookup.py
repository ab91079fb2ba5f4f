"""The worker look-up stops once every expected worker has answered, and still calls the view
incomplete when an expected worker is missing."""

from __future__ import annotations

import time

from celery import Celery

from chordguard.monitor.api import UNKNOWN, verdict
from chordguard.monitor.collect import collect
from chordguard.monitor.sources import control_listeners, worker_roster
from chordguard.monitor.sources.workers import survey, unanswered
from tests.cluster import AMQP_URL, PG_BACKEND, REDIS_URL
from tests.private_servers import private_redis


def test_a_killed_expected_worker_makes_the_view_incomplete(make_cluster):
    cluster = make_cluster(REDIS_URL, PG_BACKEND)  # the unlock source needs every holding
    kept, doomed = (cluster.start_worker(concurrency=1, wait=False) for _ in range(2))
    for worker in (kept, doomed):  # started side by side
        cluster.wait_ready(worker)
    app = cluster.app
    both = sorted([kept.name, doomed.name])
    first = survey(app)  # nobody expected yet: the whole timeout, then both are remembered
    assert (first.workers, first.failed) == (both, {})
    assert worker_roster.expected(app) == set(both)
    again = survey(app)  # every expected worker answers: complete
    assert (again.workers, again.failed) == (both, {})

    doomed.kill()
    after = survey(app)
    assert after.workers == [kept.name]
    # under load a whole command can fail (its reason in failed[cmd]); the doomed worker is
    # named for every command that got replies
    answered = [cmd for cmd in ("active", "reserved", "scheduled", "active_queues", "revoked")
                if cmd not in after.failed]
    assert answered, after.failed
    assert after.failed["workers"] == f"no reply from {doomed.name} ({', '.join(answered)})"
    status, reason = verdict(collect(app))
    assert status == UNKNOWN and reason.startswith("incomplete view"), reason


def test_a_worker_that_answered_only_some_commands_is_unanswered():
    replies = {"active": {"a@h": [], "b@h": []}, "reserved": {"a@h": []}}
    assert unanswered(frozenset({"a@h", "c@h"}), replies) == {
        "b@h": ["reserved"], "c@h": ["active", "reserved"]}
    assert unanswered(frozenset({"a@h"}), {"active": {"a@h": []}}) == {}


def test_workers_a_redis_broker_counts_end_a_look_up_nobody_expected(make_cluster):
    """A private broker, so no other test's workers share its database. One worker runs with
    Celery's defaults (gossip: a second pattern subscription), one without gossip: only
    pidbox listeners are counted."""
    with private_redis() as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        cluster = make_cluster(url, url)
        app = cluster.app
        assert control_listeners.count(app) == 0
        empty = survey(app, timeout=30)  # nobody listens: nothing to wait for
        assert (empty.workers, empty.failed) == ([], {})
        workers = [cluster.start_worker(concurrency=1, wait=False, celery_defaults=defaults)
                   for defaults in (True, False)]
        for worker in workers:
            cluster.wait_ready(worker)
        assert control_listeners.count(app) == 2
        other = make_cluster(url, url)  # another app's worker on the same database
        other.start_worker(concurrency=1, celery_defaults=True)
        assert control_listeners.count(app) == 2 and control_listeners.count(other.app) == 1
        assert worker_roster.expected(app) == set()
        # nobody expected, yet the look-up ends once both counted workers answered: with a
        # 30 s reply timeout, a look-up that waited it out would take 30 s
        began = time.monotonic()
        found = survey(app, timeout=30)
        assert time.monotonic() - began < 20
        assert (found.workers, found.failed) == (sorted(w.name for w in workers), {})


def test_rabbitmq_workers_are_not_counted():
    assert control_listeners.count(Celery(broker=AMQP_URL)) is None
    assert control_listeners.count(Celery(broker="redis://127.0.0.1:1/0")) is None  # refused
