"""The worker look-up stops once every expected worker has answered, and still calls the view
incomplete when an expected worker is missing."""

from __future__ import annotations

from chordguard.monitor.api import UNKNOWN, verdict
from chordguard.monitor.collect import collect
from chordguard.monitor.sources import worker_roster
from chordguard.monitor.sources.workers import survey, unanswered
from tests.cluster import PG_BACKEND, REDIS_URL


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
    assert after.failed["workers"].startswith(f"no reply from {doomed.name} (active, ")
    status, reason = verdict(collect(app))
    assert status == UNKNOWN and reason.startswith("incomplete view"), reason


def test_a_worker_that_answered_only_some_commands_is_unanswered():
    replies = {"active": {"a@h": [], "b@h": []}, "reserved": {"a@h": []}}
    assert unanswered(frozenset({"a@h", "c@h"}), replies) == {
        "b@h": ["reserved"], "c@h": ["active", "reserved"]}
    assert unanswered(frozenset({"a@h"}), {"active": {"a@h": []}}) == {}
