"""duplicate_callback: a chord's callback message delivered twice, as Redis redelivers an
unacked acks_late message (kombu's own restore, done here at once instead of after the
visibility timeout). The guard's run-once claim stops and counts the extra delivery
(``inspect``); without it, ``chordguard watch`` sees the callback started twice."""

from __future__ import annotations

import json

from celery import chord

from tests.chordapp import trace_redis
from tests.cluster import PG_BACKEND, REDIS_URL, chordguard_cli, wait_for
from tests.integration.test_watch import read_lines, start_watch


def redeliver_unacked(app) -> int:
    """Put every message the workers hold unacked back in its queue, as kombu does for a
    message unacked past its visibility timeout; return how many."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        tags = channel.client.zrange(channel.unacked_index_key, 0, -1)
        for tag in tags:
            channel.qos.restore_by_tag(tag)
    return len(tags)


def test_a_callback_delivered_twice_is_named_duplicate_callback(make_cluster, tmp_path):
    guard = {"store": f"sqlite:///{tmp_path}/cg.sqlite"}
    cluster = make_cluster(REDIS_URL, PG_BACKEND, {"task_acks_late": True, "guard": guard})
    cluster.start_worker(concurrency=6, extra_args=["-E"])
    app, ns = cluster.app, cluster.namespace
    watch = start_watch(cluster, "--every", "1", "--duration", "60")
    try:
        read_lines(watch, "watching")
        plain = chord([app.signature("t.add", (1, 1))])(
            app.signature("t.slow_record", (20, f"cg:{ns}:plain")))
        once = chord([app.signature("t.add", (2, 2))])(
            app.signature("t.guarded_slow", (20, f"cg:{ns}:once")))
        wait_for(lambda: trace_redis().llen(f"cg:{ns}:plain")
                 and trace_redis().llen(f"cg:{ns}:once"), what="both callbacks running")
        assert redeliver_unacked(app) == 2

        seen: list[dict] = []

        def both_started_twice():  # events: each callback's second delivery started too
            read_lines(watch, "rates", anomalies=seen)
            twice = {a["chord_id"]: a for a in seen if a["code"] == "duplicate_callback"}
            return twice if len(twice) == 2 else None

        twice = wait_for(both_started_twice, interval=0, what="watch to see both start twice")
        assert set(twice) == {plain.parent.id, once.parent.id}
        assert "started 2 times" in twice[plain.parent.id]["summary"]
        assert trace_redis().llen(f"cg:{ns}:plain") == 2  # its body really ran twice
    finally:
        watch.kill()
        watch.wait(10)

    def counted():  # the run-once callback's extra delivery was stopped and counted
        done = chordguard_cli(cluster, "inspect", once.parent.id, "--json")
        found = json.loads(done.stdout)["chords"][0] if done.stdout else {}
        return next((d for d in found.get("diagnoses", [])
                     if d["code"] == "duplicate_callback"), None)

    stopped = wait_for(counted, what="inspect to name the guarded duplicate")
    assert stopped["evidence"]["stopped_by_guard"] == 1 and stopped["severity"] == "warning"
    assert "the guard ran it once" in stopped["summary"]
    assert trace_redis().llen(f"cg:{ns}:once") == 1  # its body ran once
