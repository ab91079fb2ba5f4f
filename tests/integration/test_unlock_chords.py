"""Polled (chord_unlock) chords on the PostgreSQL result backend, Redis and RabbitMQ brokers.

Every pathology is produced for real by real workers; the monitor is run as a user runs it
(``chordguard -A tests.chordapp ... --json``).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from celery import chord
from sqlalchemy import create_engine, text

from chordguard import collect
from tests.chordapp import trace_redis
from tests.cluster import AMQP_URL, PG_BACKEND, PG_URL, REDIS_URL, chordguard_cli, wait_for

BROKERS = [pytest.param(REDIS_URL, id="redis"), pytest.param(AMQP_URL, id="amqp")]
COMPAT_ON = {  # the broker each test also runs on in the version matrix (-m compat)
    "redis": [pytest.param(REDIS_URL, id="redis", marks=pytest.mark.compat),
              pytest.param(AMQP_URL, id="amqp")],
    "amqp": [pytest.param(REDIS_URL, id="redis"),
             pytest.param(AMQP_URL, id="amqp", marks=pytest.mark.compat)]}


def cli(cluster, *args: str) -> tuple[int, dict]:
    done = chordguard_cli(cluster, *args, "--json")
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def find(document: dict, chord_id: str) -> dict | None:
    return next((c for c in document["chords"] if c["id"] == chord_id), None)


def codes(chord_doc: dict | None) -> list[str]:
    return [d["code"] for d in chord_doc["diagnoses"]] if chord_doc else []


def dispatch(app, header: list, body: str, **options):
    """Start a chord; return (group id, callback id, callback AsyncResult)."""
    result = chord(header)(app.signature(body), **options)
    return result.parent.id, result.id, result


def diagnosed(cluster, chord_id: str, code: str, timeout: float = 40.0,
              also=lambda chord_doc: True) -> tuple[int, dict]:
    """Run ``status`` until the chord shows ``code`` (and ``also`` holds); return that run's
    exit code and JSON."""
    seen: dict = {}

    def attempt():
        seen["run"] = cli(cluster, "status")
        chord_doc = find(seen["run"][1], chord_id)
        return code in codes(chord_doc) and also(chord_doc)

    wait_for(attempt, timeout=timeout, interval=0.5, what=f"{code} on {chord_id}")
    return seen["run"]


def state_of(app, task_id: str) -> str:
    return app.AsyncResult(task_id).state


@pytest.mark.parametrize("broker", BROKERS)
def test_healthy_busy_cluster_is_healthy(make_cluster, broker):
    cluster = make_cluster(broker, PG_BACKEND, {"chordguard_lost_header_grace": 2})
    cluster.start_worker(concurrency=3)
    cluster.start_worker(concurrency=3)
    app = cluster.app
    results = [dispatch(app, [app.signature("t.sleep", (0.2 + (i * 3 + j) % 7 * 0.4,))
                              for j in range(4)], "t.tsum") for i in range(10)]
    time.sleep(2.5)
    code, status = cli(cluster, "status")
    in_flight = [find(status, gid) for gid, _, _ in results]
    assert code == 0, status
    assert status["health"]["status"] == "healthy"
    seen = [c for c in in_flight if c]
    assert len(seen) >= 5, status
    for chord_doc in seen:
        assert chord_doc["kind"] == "unlock" and chord_doc["total"] == 4
        assert chord_doc["callback_name"] == "t.tsum" and chord_doc["diagnoses"] == []
        assert chord_doc["unlock_copies"] and chord_doc["unlock_chains"] == 1
    code, check = cli(cluster, "check", "--max-hours", "1")
    assert code == 0 and check["chords"] == [], check
    assert [r.get(timeout=60) for _, _, r in results]


@pytest.mark.parametrize("broker", COMPAT_ON["redis"])
def test_lost_header_inspected_by_group_and_callback_id(make_cluster, broker):
    cluster = make_cluster(broker, PG_BACKEND, {"chordguard_lost_header_grace": 3})
    cluster.start_worker()
    app = cluster.app
    fast = [app.signature("t.add", (1, 1)), app.signature("t.add", (2, 2))]
    group_id, callback_id, result = dispatch(app, [*fast, app.signature("t.sleep", (25,))],
                                             "t.tsum")
    kept, deleted = (r.id for r in result.parent.results[:2])
    wait_for(lambda: state_of(app, kept) == state_of(app, deleted) == "SUCCESS")
    with create_engine(PG_URL).begin() as db:  # the header's result is gone (expired, deleted)
        db.execute(text("DELETE FROM celery_taskmeta WHERE task_id = :id"), {"id": deleted})

    # on Redis the unlock message's 'retries' header is read from the queue or the unacked
    # hash; a look can miss it while it moves between them (a worker does not report it)
    on_redis = broker == REDIS_URL
    code, status = diagnosed(cluster, group_id, "lost_header",
                             also=lambda c: not on_redis or c["unlock_retries"] is not None)
    chord_doc = find(status, group_id)
    lost = next(d for d in chord_doc["diagnoses"] if d["code"] == "lost_header")
    assert code == 1 and lost["evidence"]["lost"] == [deleted]
    assert chord_doc["callback_id"] == callback_id and chord_doc["done"] == 1
    assert chord_doc["age"]["lower_bound"] and "no creation time" in chord_doc["age"]["basis"]
    if on_redis:
        assert chord_doc["unlock_retries"] >= 3
    code, check = cli(cluster, "check", "--max-hours", "1")
    assert code == 1 and [c["id"] for c in check["chords"]] == [group_id]
    code, inspected = cli(cluster, "inspect", group_id)
    assert code == 1 and "lost_header" in codes(find(inspected, group_id))
    text_view = chordguard_cli(cluster, "inspect", callback_id).stdout  # by callback id too
    assert "lost_header" in text_view and "≥" in text_view and deleted in text_view


@pytest.mark.parametrize("broker", COMPAT_ON["amqp"])
def test_unlock_storm_after_sigkill_under_acks_late(make_cluster, broker):
    conf = {"task_acks_late": True}
    if broker == REDIS_URL:  # Redis redelivers unacked messages after visibility_timeout
        conf["broker_transport_options"] = {"visibility_timeout": 3}
    cluster = make_cluster(broker, PG_BACKEND, conf)
    doomed = cluster.start_worker(conf={"cg_pause_after_retry_of": "celery.chord_unlock"})
    app = cluster.app
    group_id, _, _ = dispatch(app, [app.signature("t.add", (1, 1)),
                                    app.signature("t.sleep", (60,))], "t.tsum")
    paused = f"cg:{cluster.namespace}:paused"
    try:
        # the worker published unlock retry 1 and has not acked retry 0 yet: kill it there
        wait_for(lambda: trace_redis().exists(paused), what="unlock retry published")
        doomed.kill()
        if broker == REDIS_URL:
            time.sleep(4)  # past visibility_timeout: the next worker restores both messages
        cluster.start_worker()
        code, status = diagnosed(cluster, group_id, "unlock_storm")
    finally:
        trace_redis().delete(paused)
    chord_doc = find(status, group_id)
    assert code == 1 and chord_doc["unlock_chains"] >= 2
    assert len(chord_doc["unlock_copies"]) >= 2
    storm = next(d for d in chord_doc["diagnoses"] if d["code"] == "unlock_storm")
    assert storm["evidence"]["chains"] == chord_doc["unlock_chains"]


@pytest.mark.compat
def test_orphaned_body_when_the_unlock_is_revoked(make_cluster):
    cluster = make_cluster(AMQP_URL, PG_BACKEND)
    cluster.start_worker()
    app = cluster.app
    group_id, callback_id, _ = dispatch(app, [app.signature("t.add", (1, 1)),
                                              app.signature("t.sleep", (2,))], "t.tsum",
                                        interval=30)  # polls every 30 s
    chord_doc = wait_for(lambda: (c := find(cli(cluster, "status")[1], group_id))
                         and c["done"] == 2 and c, what="every header done")
    assert chord_doc["diagnoses"] == []
    unlock_id = chord_doc["unlock_copies"][0]["task_id"]
    app.control.revoke(unlock_id)  # the seed guide's advice: it leaves the callback PENDING

    code, status = diagnosed(cluster, group_id, "orphaned_body", timeout=20)
    chord_doc = find(status, group_id)
    assert code == 1 and chord_doc["callback_state"] == "PENDING"
    assert all(c["revoked"] for c in chord_doc["unlock_copies"])


@pytest.mark.parametrize("broker", BROKERS)
def test_no_consumer_for_a_header_routed_to_an_idle_queue(make_cluster, broker):
    nobody = f"cg-nobody-{uuid.uuid4().hex[:8]}"
    cluster = make_cluster(broker, PG_BACKEND, {"task_routes": {"t.echo": {"queue": nobody}}})
    cluster.start_worker()
    app = cluster.app
    try:
        group_id, _, _ = dispatch(app, [app.signature("t.echo", (1,)),
                                        app.signature("t.add", (1, 1))], "t.tsum")
        code, status = diagnosed(cluster, group_id, "no_consumer")
        chord_doc = find(status, group_id)
        diagnosis = next(d for d in chord_doc["diagnoses"] if d["code"] == "no_consumer")
        assert code == 1 and diagnosis["evidence"]["queues"] == [nobody]
        assert f"queue:{nobody}" in [p["held_by"] for p in chord_doc["header"]]
        assert "lost_header" not in codes(chord_doc)
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(nobody)


@pytest.mark.compat
def test_header_failed_while_the_chord_waits(make_cluster):
    cluster = make_cluster(REDIS_URL, PG_BACKEND)
    cluster.start_worker()
    app = cluster.app
    group_id, _, _ = dispatch(app, [app.signature("t.fail", ("disk full",)),
                                    app.signature("t.sleep", (15,))], "t.tsum")
    code, status = diagnosed(cluster, group_id, "header_failed")
    chord_doc = find(status, group_id)
    assert code == 1 and chord_doc["failed"] == 1
    failed = next(p for p in chord_doc["header"] if p["state"] == "FAILURE")
    assert "disk full" in (failed["traceback"] or "")


def test_callback_failed_seen_while_an_unlock_copy_remains(make_cluster):
    """Once its last unlock copy is gone Celery keeps nothing tying a callback to its chord,
    so the monitor sees callback_failed while a copy remains: here a second unlock chain for
    the same chord (as a publisher re-sending the chord leaves), due in 30 s."""
    cluster = make_cluster(AMQP_URL, PG_BACKEND)
    cluster.start_worker()
    app = cluster.app
    header = [app.signature("t.none"), app.signature("t.none")]
    group_id, callback_id, result = dispatch(app, header, "t.sum_files")
    app.backend.fallback_chord_unlock(
        app.GroupResult(group_id, [app.AsyncResult(r.id) for r in result.parent.results]),
        app.signature("t.sum_files", options={"task_id": callback_id}), countdown=30)
    wait_for(lambda: state_of(app, callback_id) == "FAILURE", what="callback raised")

    code, status = diagnosed(cluster, group_id, "callback_failed", timeout=20)
    chord_doc = find(status, group_id)
    assert code == 1 and chord_doc["callback_state"] == "FAILURE" and chord_doc["done"] == 2
    assert chord_doc["callback_name"] == "t.sum_files"


@pytest.mark.parametrize("broker", BROKERS)
def test_peek_neither_consumes_nor_reorders(make_cluster, broker):
    cluster = make_cluster(broker, PG_BACKEND)  # no worker: everything stays queued
    app = cluster.app
    sent = [app.signature("t.add", (i, i)).apply_async().id for i in range(30)]
    group_id, _, _ = dispatch(app, [app.signature("t.add", (1, 1))], "t.tsum")

    snapshot = collect(app)
    assert all(snapshot.facts.queued.get(task_id) == cluster.queue for task_id in sent)
    assert "no_consumer" in snapshot.find(group_id).codes  # the unlock waits, nobody consumes
    code, status = cli(cluster, "status")
    assert code == 1 and find(status, group_id)["unlock_copies"][0]["retries"] == 0

    with app.connection_for_write() as conn:  # drain: every message, in publishing order
        channel = conn.default_channel
        drained = []
        while (message := channel.basic_get(cluster.queue, no_ack=True)) is not None:
            drained.append(message.headers["id"])
    assert drained[:30] == sent and len(drained) == 32  # + the unlock and the header


def test_pickled_unlock_message_is_read_from_its_headers_never_unpickled(make_cluster):
    cluster = make_cluster(REDIS_URL, PG_BACKEND, {
        "task_serializer": "pickle", "accept_content": ["json", "pickle"]})
    app = cluster.app  # no worker: the unlock message stays on the broker
    group_id, callback_id, _ = dispatch(app, [app.signature("t.add", (1, 1))], "t.tsum")

    chord_found = collect(app).find(group_id)
    assert chord_found.callback_id == callback_id and chord_found.unlock_copies[0].retries == 0
    assert "not JSON" in chord_found.evidence["unreadable unlock body"]
    assert [p.task_id for p in chord_found.header] and chord_found.callback_signature is not None


def test_quorum_queues_are_not_peeked(make_cluster):
    """A requeue counts toward a quorum queue's delivery limit: the peek leaves them alone."""
    from kombu import Exchange, Queue

    cluster = make_cluster(AMQP_URL, PG_BACKEND)
    app = cluster.app
    name = f"cg-quorum-{uuid.uuid4().hex[:8]}"
    quorum = Queue(name, Exchange(name), name, queue_arguments={"x-queue-type": "quorum"})
    app.conf.task_queues = [Queue(cluster.queue), quorum]
    try:
        sent = app.signature("t.add", (1, 1)).apply_async(queue=quorum).id
        snapshot = collect(app)
        assert sent not in snapshot.facts.queued and not snapshot.facts.holdings_complete
        with app.connection_for_write() as conn:
            message = conn.default_channel.basic_get(name, no_ack=True)
        assert message.headers["id"] == sent and not message.delivery_info["redelivered"]
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(name)
