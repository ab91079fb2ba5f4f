"""Redis-native chords, seen by the monitor: real workers, Redis result backend, Redis and
RabbitMQ brokers. Each pathology is made for real and read back through the CLI."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis
from celery import Celery, chord, states
from celery.app.task import Context

from chordguard import _compat
from chordguard.monitor.collect import collect
from tests.chordapp import make_app
from tests.cluster import AMQP_URL, REDIS_URL, Cluster, chordguard_cli, wait_for

BROKERS = [pytest.param(REDIS_URL, id="redis-broker"), pytest.param(AMQP_URL, id="amqp-broker")]
COMPAT_ON_REDIS = [pytest.param(REDIS_URL, id="redis-broker", marks=pytest.mark.compat),
                   pytest.param(AMQP_URL, id="amqp-broker")]  # also in the version matrix


@pytest.fixture
def cluster_for(make_cluster):
    """``cluster_for(broker, conf)``: a Redis-backend cluster with one worker (make_cluster
    SIGKILLs its workers and removes its keys and queue at teardown)."""

    def factory(broker: str, conf: dict | None = None) -> Cluster:
        cluster = make_cluster(broker, REDIS_URL, conf)
        cluster.start_worker()
        return cluster

    return factory


def cli_json(cluster: Cluster, *args: str) -> tuple[int, dict]:
    proc = chordguard_cli(cluster, "--json", *args)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def seen(cluster: Cluster, group_id: str, command: str = "status") -> dict | None:
    _, doc = cli_json(cluster, command)
    return next((c for c in doc["chords"] if c["id"] == group_id), None)


def wait_seen(cluster: Cluster, group_id: str, predicate, timeout: float = 30.0,
              what: str = "chord state") -> dict:
    def probe():
        found = seen(cluster, group_id)
        return found if found is not None and predicate(found) else None

    return wait_for(probe, timeout=timeout, interval=0.5, what=what)


def apply_chord(cluster: Cluster, header: list[tuple], body: str = "t.tsum"):
    app = cluster.app
    result = chord([app.signature(name, args) for name, *args in header])(app.signature(body))
    return result.parent.id, result


@pytest.mark.parametrize("broker", COMPAT_ON_REDIS)
def test_healthy_in_flight_chord(cluster_for, broker):
    cluster = cluster_for(broker)
    gid, result = apply_chord(cluster, [("t.sleep", 0.1), ("t.sleep", 0.1), ("t.sleep", 90)])
    found = wait_seen(cluster, gid, lambda c: c["done"] == 2, what="two parts done")
    assert found["kind"] == "redis"
    assert (found["total"], found["done"], found["failed"]) == (3, 2, 0)
    assert found["diagnoses"] == []
    assert sorted(p["state"] for p in found["header"]) == ["SUCCESS", "SUCCESS"]
    assert found["idle"]["seconds"] < 60 and not found["idle"]["lower_bound"]
    assert found["age"]["lower_bound"] and "Celery keeps no creation time" in found["age"]["basis"]
    prefix = cluster.group_key(gid)
    keys = found["redis_keys"]
    written = {".s", ".j", ".d"} & set(_compat.REDIS_CHORD_SUFFIXES_WRITTEN)  # .d: 5.7 only
    assert {prefix + s for s in written} <= set(keys) and len(written) >= 2
    assert all(key.startswith(prefix) for key in keys)
    assert all(0 < ttl <= 86400 for ttl in keys.values())

    code, doc = cli_json(cluster, "check", "--max-hours", "1")
    assert code == 0 and doc["chords"] == []
    time.sleep(1.0)  # idle > 0 for sure
    code, doc = cli_json(cluster, "check", "--max-hours", "0")
    assert code == 1
    stuck = next(c for c in doc["chords"] if c["id"] == gid)
    assert [d["code"] for d in stuck["diagnoses"]] == ["stuck"]

    other = make_app("tother" + cluster.namespace, broker, REDIS_URL)  # another key prefix
    assert collect(other).find(gid) is None
    assert result.state == "PENDING"


def test_no_false_alarm_on_a_busy_cluster(cluster_for):
    cluster = cluster_for(REDIS_URL)
    results = [apply_chord(cluster, [("t.sleep", 0.6 + 0.3 * (i % 3))] * 3)[1]
               for i in range(15)]
    ids = {r.parent.id for r in results}
    looks = 0
    while not all(r.ready() for r in results):
        _, doc = cli_json(cluster, "status")
        ours = [c for c in doc["chords"] if c["id"] in ids]
        assert all(c["diagnoses"] == [] and c["kind"] == "redis" for c in ours), ours
        looks += bool(ours)
    assert looks >= 1
    assert [r.get(timeout=10) for r in results] == \
        pytest.approx([3 * (0.6 + 0.3 * (i % 3)) for i in range(15)])
    _, doc = cli_json(cluster, "status")
    assert not ids & {c["id"] for c in doc["chords"]}, "finished chords are not in flight"


@pytest.mark.parametrize("broker", BROKERS)
def test_counter_lost(cluster_for, broker):
    cluster = cluster_for(broker)
    gid, result = apply_chord(cluster, [("t.sleep", 0.1), ("t.sleep", 30)])
    wait_seen(cluster, gid, lambda c: c["done"] == 1, what="first part done")
    skey = cluster.group_key(gid, ".s")
    assert redis.Redis.from_url(REDIS_URL).delete(skey) == 1

    code, doc = cli_json(cluster, "check", "--max-hours", "1")
    assert code == 1
    lost = next(c for c in doc["chords"] if c["id"] == gid)
    assert "counter_lost" in [d["code"] for d in lost["diagnoses"]]
    assert lost["total"] is None and lost["done"] == 1
    found = seen(cluster, gid, "status")
    assert "counter_lost" in [d["code"] for d in found["diagnoses"]]
    code, doc = cli_json(cluster, "inspect", gid)
    assert code == 1
    inspected = doc["chords"][0]
    assert inspected["redis_keys"][skey] is None
    assert inspected["redis_keys"][skey[:-2] + ".j"] > 0
    assert ".j TTL" in inspected["idle"]["basis"]
    text = chordguard_cli(cluster, "inspect", gid).stdout
    assert "counter_lost" in text and "missing" in text


@pytest.mark.parametrize("broker", COMPAT_ON_REDIS)
def test_counter_expiring_then_lost(cluster_for, broker):
    """A tiny chord expiry and a long header: warned before .s expires; once it has,
    the late part recreates .j without .s, and the chord can never finish."""
    setting = "result_chord_expires" if _compat.RESULT_CHORD_EXPIRES else "result_expires"
    cluster = cluster_for(broker, {setting: 24})
    gid, result = apply_chord(cluster, [("t.sleep", 0.1), ("t.sleep", 32)])
    early = wait_seen(cluster, gid, lambda c: c["done"] == 1, what="first part done")
    assert early["diagnoses"] == []
    warned = wait_seen(cluster, gid, lambda c: c["diagnoses"], timeout=30, what="a diagnosis")
    assert [d["code"] for d in warned["diagnoses"]] == ["counter_expiring"]
    assert warned["diagnoses"][0]["severity"] == "warning"
    assert chordguard_cli(cluster, "check", "--max-hours", "1").returncode == 0  # a warning only
    lost = wait_seen(cluster, gid, lambda c: c["total"] is None, timeout=50,
                     what="the late part recreating .j")
    assert [d["code"] for d in lost["diagnoses"]] == ["counter_lost"]
    assert lost["total"] is None  # every earlier key expired with .s: only the late part is left
    assert [(p["state"], p["result"]) for p in lost["header"]] == [("SUCCESS", 32)]
    time.sleep(1.0)
    assert result.state == "PENDING"


@pytest.mark.parametrize("broker", COMPAT_ON_REDIS)
def test_header_failed(cluster_for, broker):
    cluster = cluster_for(broker)
    gid, result = apply_chord(cluster, [("t.fail", "kaput"), ("t.sleep", 15)])
    found = wait_seen(cluster, gid, lambda c: c["done"] == 1, what="failed part recorded")
    assert found["failed"] == 1 and [d["code"] for d in found["diagnoses"]] == ["header_failed"]
    part = found["header"][0]
    assert part["state"] == "FAILURE" and "kaput" in (part["traceback"] or "")
    code, doc = cli_json(cluster, "check", "--max-hours", "1")
    assert code == 1 and gid in {c["id"] for c in doc["chords"]}
    wait_for(lambda: result.state == "FAILURE", what="callback failed with ChordError")
    assert "kaput" in str(result.result)
    assert seen(cluster, gid) is None, "Celery failed the chord: no longer in flight"


@pytest.mark.compat
def test_orphaned_body(cluster_for):
    """The worker that claimed the callback dispatch (5.7: the .c key) dies before
    publishing it."""
    cluster = cluster_for(REDIS_URL, {"cg_stall_publish_of": "t.tsum",
                                      "broker_connection_timeout": 1,
                                      "task_publish_retry": False})
    gid, result = apply_chord(cluster, [("t.add", 1, 1), ("t.add", 2, 2)])
    ckey = cluster.group_key(gid, ".c")
    claims = ".c" in _compat.REDIS_CHORD_SUFFIXES_WRITTEN
    claimed = wait_seen(cluster, gid, lambda c: c["done"] == 2 and (ckey in c["redis_keys"])
                        == claims, what="both parts done (and dispatch claimed on 5.7)")
    assert claimed["diagnoses"] == []
    cluster.workers[0].kill()
    orphan = wait_seen(cluster, gid, lambda c: c["diagnoses"], timeout=45, what="orphaned_body")
    assert [d["code"] for d in orphan["diagnoses"]] == ["orphaned_body"]
    assert ckey not in orphan["redis_keys"] and orphan["total"] == orphan["done"] == 2
    assert chordguard_cli(cluster, "check").returncode == 1
    assert result.state == "PENDING"


@pytest.mark.compat
def test_list_parts_and_a_prefix_without_separator():
    """result_chord_ordered=False keeps .j as a list; a prefix not ending in ':_-.' gets '_'.
    Made with Celery's own backend calls, as a worker makes them."""
    prefix = "cgtest" + uuid.uuid4().hex[:8]
    app = Celery("list-parts", broker=REDIS_URL, backend=REDIS_URL)
    app.conf.result_backend_transport_options = {"global_keyprefix": prefix,
                                                 "result_chord_ordered": False}
    gid, callback = str(uuid.uuid4()), app.signature("t.tsum")
    callback.freeze()
    try:
        app.backend.set_chord_size(gid, 3)
        for index in (0, 1):
            request = Context(id=str(uuid.uuid4()), group=gid, group_index=index,
                              chord=dict(callback))
            app.backend.on_chord_part_return(request, states.SUCCESS, index * 10)
        found = collect(app).find(gid)
        assert found is not None and (found.total, found.done) == (3, 2)
        assert sorted(p.result for p in found.header) == [0, 10]
        assert all(key.startswith(f"{prefix}_celery-taskset-meta-{gid}.")
                   for key in found.redis_keys)
        assert found.codes == []
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{prefix}_*"):
            client.delete(key)
