"""RabbitMQ cannot show a queue without taking its messages, so a long queue is read in part:
every chord whose parts are accounted for still gets a definite verdict, and the ones that
rest on the unread part say so. Real worker, RabbitMQ broker, Redis result backend."""

from __future__ import annotations

from celery import chord

from chordguard.monitor.api import verdict
from chordguard.monitor.collect import collect
from chordguard.monitor.sources import broker
from tests.cluster import AMQP_URL, REDIS_URL, wait_for

READ = 50  # messages the peek reads per queue in this test (PER_QUEUE_LIMIT, lowered)
FILLER = 100


def test_chords_resting_on_an_unread_queue_say_so(make_cluster, monkeypatch):
    cluster = make_cluster(AMQP_URL, REDIS_URL)
    app, ns = cluster.app, cluster.namespace
    fast, deep = f"fast-{ns}", f"deep-{ns}"
    cluster.start_worker(queues=[fast])
    try:
        running = chord([app.signature("t.add", (1, 1)).set(queue=fast),
                         app.signature("t.sleep", (60,)).set(queue=fast)])(
            app.signature("t.tsum")).parent.id
        early = chord([app.signature("t.add", (i, i)).set(queue=deep) for i in range(2)])(
            app.signature("t.tsum")).parent.id
        for i in range(FILLER):
            app.send_task("t.add", (i, i), queue=deep)
        buried = chord([app.signature("t.add", (i, i)).set(queue=deep) for i in range(2)])(
            app.signature("t.tsum")).parent.id
        monkeypatch.setattr(broker, "PER_QUEUE_LIMIT", READ)

        def settled():
            snapshot = collect(app)
            chord_ = snapshot.find(running)
            return snapshot if chord_ is not None and chord_.done == 1 else None

        snapshot = wait_for(settled, what="the running chord's first part done")
        by_id = {c.id: c for c in snapshot.chords}
        assert by_id[running].unseen is None and not by_id[running].diagnoses  # done + held
        assert by_id[early].unseen is None and by_id[early].codes == ["no_consumer"]
        assert by_id[buried].unseen is not None and not by_id[buried].diagnoses
        assert f"unread queue(s): {deep}" in by_id[buried].unseen
        assert f"{FILLER + 4 - READ:,} of {FILLER + 4:,}" in by_id[buried].unseen
        assert verdict(snapshot)[0] == "unhealthy"  # the early chord is definitely stuck
    finally:
        with app.connection_for_write() as conn:
            for queue in (fast, deep):
                conn.default_channel.queue_delete(queue)
