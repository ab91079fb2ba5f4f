"""A guarded app: revoke fails the callback in a worker, where Celery would run its
old-style errbacks; what they print or raise never reaches the operator's output."""

from __future__ import annotations

import json

import redis
from celery import chord

from tests.cluster import REDIS_URL, chordguard_cli, wait_for
from tests.guard_support import ended


def test_revoke_runs_old_style_errbacks_in_a_worker(make_cluster, tmp_path):
    store = f"sqlite:///{tmp_path}/cg.sqlite"
    cluster = make_cluster(REDIS_URL, REDIS_URL, {"guard": {"store": store}})
    worker = cluster.start_worker()
    app = cluster.app
    callback = app.signature("t.tsum").on_error(app.signature("t.where_errback")) \
        .on_error(app.signature("t.raising_errback"))
    doomed = chord([app.signature("t.sleep", (300,))])(callback)
    spared = chord([app.signature("t.sleep", (3, 5))])(app.signature("t.tsum"))

    def in_flight():
        done = chordguard_cli(cluster, "status", "--json")
        return doomed.parent.id in [c["id"] for c in json.loads(done.stdout)["chords"]]

    wait_for(in_flight, what="the chord in flight")
    done = chordguard_cli(cluster, "revoke", doomed.parent.id, "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)  # valid JSON
    for text in (done.stdout, done.stderr):
        assert "ERRBACK" not in text and "blew up" not in text, text
    steps = document["chords"][0]["steps"]
    assert any(f"failed in worker {worker.name}" in s for s in steps), steps

    wait_for(lambda: doomed.state == "FAILURE", what="callback FAILURE")
    assert type(doomed.result).__name__ == "ChordError"
    ran = redis.Redis.from_url(REDIS_URL).lrange(f"cg:errback:{doomed.id}", 0, -1)
    assert [json.loads(r)["pid"] for r in ran] == [worker.process.pid]  # in the worker
    assert "RAISING ERRBACK" in worker.output() and "blew up" in worker.output()
    assert spared.get(timeout=30) == 5
    record = ended(store, doomed.parent.id)  # the operator's reason, not "recorded by Celery"
    assert record.state == "failed" and "Celery" not in record.reason, record.reason
