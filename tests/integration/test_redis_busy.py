"""A busy, healthy cluster gets a definite verdict: thousands of Redis chords whose header
messages one live worker is working through (more than the old 5,000-message peek read)."""

from __future__ import annotations

import json

import redis
from celery import chord

from chordguard._compat import publish_batch
from chordguard.monitor.api import verdict
from chordguard.monitor.collect import collect
from chordguard.monitor.sources import holdings
from tests.cluster import REDIS_URL, chordguard_cli

CHORDS = 2600  # 5,200 header messages queued
WORKING_THROUGH = 5000  # the queue must still hold more than this when check has answered


def test_busy_healthy_cluster_is_healthy(make_cluster):
    cluster = make_cluster(REDIS_URL, REDIS_URL)
    app = cluster.app
    with app.producer_or_acquire() as producer, publish_batch(producer):
        for i in range(CHORDS):
            parts = [app.signature("t.sleep", (0.05, i)), app.signature("t.sleep", (0.05, i))]
            chord(parts)(app.signature("t.tsum"), producer=producer)
    client = redis.Redis.from_url(REDIS_URL)
    queue = f"{cluster.namespace}:{cluster.queue}"
    cluster.start_worker(concurrency=2)
    before = client.llen(queue)
    proc = chordguard_cli(cluster, "--json", "check", "--limit", "5")
    after = client.llen(queue)
    document = json.loads(proc.stdout)
    health = document["health"]
    assert after > WORKING_THROUGH, f"the worker drained the queue ({after} left): not busy"
    assert after < before or health["in_flight_chords"] < CHORDS, "the worker made no progress"
    assert health["status"] == "healthy", health["reason"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert health["in_flight_chords"] > WORKING_THROUGH // 2
    assert document["chords"] == []  # nothing stuck, nothing resting on what was not seen


def test_a_failed_look_leaves_the_verdict_unknown(make_cluster, monkeypatch):
    """Parts are accounted for only by a look: when it fails, no chord is vouched for."""
    cluster = make_cluster(REDIS_URL, REDIS_URL)
    app = cluster.app
    gid = chord([app.signature("t.add", (1, 1))])(app.signature("t.tsum")).parent.id

    def blind(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(holdings, "observe", blind)
    snapshot = collect(app)
    found = snapshot.find(gid)
    assert found is not None and "look at workers and queues failed" in found.unseen
    assert "broker unreachable" in found.evidence["holdings"]
    status, reason = verdict(snapshot)
    assert status == "unknown" and gid in reason
