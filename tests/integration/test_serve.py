"""``chordguard serve`` over HTTP against real clusters: /healthz, /metrics, the JSON API, the
token on actions, and the shipped alert rules and Grafana dashboard against what it exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import redis
import yaml
from celery import chord

from tests.chordapp import trace_redis
from tests.cluster import AMQP_URL, PG_BACKEND, REDIS_URL, ROOT, wait_for
from tests.private_servers import private_redis
from tests.serving import Server, listed

pytest_plugins = ("tests.serve_fixtures",)  # fixtures: served, redis_cluster

TOKEN = "s3cret-token-for-tests"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "chordguard.json"
METRIC_NAME = re.compile(r"\bchordguard_[a-z_]+\b")


def exported_names(server: Server) -> set[str]:
    """Every sample name /metrics can carry, from its TYPE lines (families without samples
    yet included): counters end in _total, histograms add _bucket/_sum/_count."""
    names = set()
    for line in server.get("/metrics").text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def rule_expressions() -> dict[str, str]:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    return {rule["alert"]: rule["expr"] for rule in rules}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_healthy_cluster(redis_cluster, served):
    """Healthy: /healthz 200, the in-flight chord listed with its progress, figures on
    /metrics, the shipped rules and dashboard use only exported names, and a read-only
    server refuses every action."""
    app = redis_cluster.app
    finished = chord([app.signature("t.add", (i, i)) for i in range(3)])(app.signature("t.tsum"))
    assert finished.get(timeout=30) == 6
    slow = chord([app.signature("t.sleep", (0.1,)), app.signature("t.sleep", (60,))])(
        app.signature("t.tsum"))
    gid = slow.parent.id
    server = served(redis_cluster)

    row = wait_for(lambda: (r := listed(server, gid)) and r["done"] == 1 and r,
                   what="the slow chord with one part done")
    assert (row["kind"], row["state"], row["total"], row["diagnoses"]) == \
        ("redis", "running", 2, [])
    assert listed(server, gid, "kind=redis&state=running&callback=") is not None
    assert listed(server, gid, "kind=unlock") is None
    assert listed(server, gid, "state=blocked") is None
    assert listed(server, gid, "callback=no-such-callback") is None
    assert listed(server, gid, "offset=0&limit=1") is not None
    assert listed(server, gid, "offset=1") is None  # paged server-side: one chord in flight

    health = server.get("/healthz")
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "healthy"
    assert health.json()["in_flight_chords"] == 1

    figures = server.metrics()
    assert figures["chordguard_chords_in_flight"][(("kind", "redis"),)] == 1
    assert figures["chordguard_chords_stuck"][(("kind", "redis"),)] == 0
    assert figures["chordguard_source_up"][(("source", "redis_chords"),)] == 1
    assert figures["chordguard_health"][(("chordguard_health", "healthy"),)] == 1
    assert figures["chordguard_health"][(("chordguard_health", "unknown"),)] == 0
    assert figures["chordguard_chord_idle_seconds_max"][(("kind", "redis"),)] < 3600
    assert all("chord" not in dict(labels) and "task_id" not in dict(labels)
               for samples in figures.values() for labels in samples)

    exported = exported_names(server)
    for alert, expr in rule_expressions().items():
        assert set(METRIC_NAME.findall(expr)) <= exported, alert
    for expr in dashboard_expressions():
        assert set(METRIC_NAME.findall(expr)) <= exported, expr
    wanted = {"chordguard_chords_in_flight", "chordguard_chords_stuck",
              "chordguard_chord_diagnoses", "chordguard_chord_duration_seconds_bucket",
              "chordguard_unlock_polls_total", "chordguard_unlock_duplicate_chains",
              "chordguard_callback_failures_total", "chordguard_circuit_breaker_state",
              "chordguard_dead_letters"}
    assert wanted <= exported

    refused = server.post(f"/api/chords/{gid}/fail", headers={"X-Chordguard-Token": TOKEN})
    assert refused.status_code == 403 and "read-only" in refused.json()["error"]
    assert server.get(f"/api/chords/{gid}/fail").status_code == 405
    assert server.get(f"/api/chords/{gid}").json()["chord"]["state"] == "running"

    page = server.get("/")
    assert page.status_code == 200 and "/static/index.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert server.get("/healthz", headers={"host": "evil.example"}).status_code == 400


def test_stuck_chord_and_the_token(redis_cluster, served):
    """A Redis chord whose .s counter is deleted is stuck: /healthz 503 naming the diagnosis,
    /metrics counts it; failing it needs the token, and once failed it is gone."""
    app = redis_cluster.app
    stuck = chord([app.signature("t.add", (1, 1)), app.signature("t.sleep", (2,))])(
        app.signature("t.tsum"))
    gid = stuck.parent.id
    client = redis.Redis.from_url(REDIS_URL)
    prefix = redis_cluster.group_key(gid)
    wait_for(lambda: client.zcard(prefix + ".j") >= 1, what="the first part recorded")
    assert client.delete(prefix + ".s") == 1
    wait_for(lambda: client.zcard(prefix + ".j") == 2, what="the slow part recorded")
    server = served(redis_cluster, TOKEN)

    health = wait_for(lambda: (r := server.get("/healthz")).status_code == 503 and r,
                      what="/healthz 503")
    assert health.json()["diagnoses"].get("counter_lost") == 1
    assert health.json()["stuck_chords"] == 1
    row = listed(server, gid, "diagnosis=counter_lost&state=blocked")
    assert row is not None and row["done"] == 2
    figures = server.metrics()
    assert figures["chordguard_chords_stuck"][(("kind", "redis"),)] == 1
    assert figures["chordguard_chord_diagnoses"][(("code", "counter_lost"),)] == 1

    path = f"/api/chords/{gid}/fail"
    assert server.post(path).status_code == 401
    assert server.post(path, headers={"X-Chordguard-Token": TOKEN + "x"}).status_code == 401
    assert server.post(path, data={"token": "wrong", "reason": "x"}).status_code == 401
    assert client.exists(prefix + ".j") == 1  # nothing was touched
    done = server.post(path, data={"token": TOKEN, "reason": "test: counter lost"})
    assert done.status_code == 200, done.text
    assert done.json()["plan"]["reason"] == "test: counter lost"
    assert client.exists(prefix + ".j") == 0
    assert client.get(prefix + ".c") == b"done"
    assert listed(server, gid) is None
    assert server.get("/healthz").status_code == 200
    assert server.post(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


def test_a_source_past_the_source_timeout_is_down_and_the_verdict_unknown(make_cluster):
    """``serve --source-timeout`` bounds each look of a snapshot: a Redis broker and
    backend that hang past it are down, /healthz 503 unknown, never healthy."""
    with private_redis() as hanging:
        cluster = make_cluster(hanging.url, hanging.url)
        server = Server(cluster, extra=["--source-timeout", "2"])
        try:
            wait_for(lambda: server.get("/healthz").json()["status"] == "healthy",
                     what="healthy before the hang")
            with hanging.hung(30):
                health = wait_for(lambda: (r := server.get("/healthz")).status_code == 503 and r,
                                  timeout=25, what="/healthz 503 while the server hangs")
                assert health.json()["status"] == "unknown"
                assert "did not answer within 2 s" in health.json()["reason"]
                assert server.metrics()["chordguard_source_up"][
                    (("source", "backend"),)] == 0
        finally:
            server.stop()


def test_alert_rules_are_valid_and_fire():
    """promtool accepts the rules, and its unit tests (alerts_test.yml) see each alert fire
    on the series it is meant for and stay quiet on healthy ones."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install prometheus"
    checked = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", str(ALERTS_TEST)], capture_output=True,
                            text=True, timeout=60, cwd=ALERTS_TEST.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert set(rule_expressions()) >= {"ChordStuck", "ChordUnlockRetryStorm",
                                       "ChordDeadLetterQueueGrowing", "ChordCallbackFailureRatio"}


def test_unlock_polls_of_a_healthy_chain_stay_at_one_per_interval(pg_cluster, served):
    """One chord_unlock chain polling a slow header: polls are counted as they happen, and
    the per-chord rate the storm alert watches stays at or under one per retry interval."""
    app = pg_cluster.app
    slow = chord([app.signature("t.sleep", (14,)), app.signature("t.add", (1, 1))])(
        app.signature("t.tsum"))
    server = served(pg_cluster)
    # the rate is a floor over the polls seen inside the tracker's window: a server that first
    # sees the chain after several polls (a loaded machine) needs a few more in view
    figures = wait_for(lambda: (f := server.metrics())["chordguard_unlock_polls_total"][()] >= 6
                       and f["chordguard_unlock_polls_per_interval_max"][()] > 0.3 and f,
                       timeout=40, what="unlock polls counted, their rate in view")
    rate = figures["chordguard_unlock_polls_per_interval_max"][()]
    assert 0.3 < rate <= 1.0, rate
    row = listed(server, slow.parent.id)
    assert row["unlock_rate"]["per_interval_floor"] <= 1.0
    assert figures["chordguard_unlock_duplicate_chains"][()] == 0
    assert slow.get(timeout=30) == 16
    done = wait_for(lambda: (f := server.metrics()).get("chordguard_chords_completed_total")
                    and f, timeout=20, what="the finished chord counted")
    assert done["chordguard_chords_completed_total"][
        (("callback", "t.tsum"), ("outcome", "success"))] == 1
    assert done["chordguard_chord_duration_seconds_count"][(("callback", "t.tsum"),)] == 1


def test_unlock_storm_exported(make_cluster, served):
    """Duplicate chord_unlock chains made for real (a worker SIGKILLed after publishing a
    retry, before acking, under acks_late): the storm shows on /metrics and in the list."""
    cluster = make_cluster(AMQP_URL, PG_BACKEND, {"task_acks_late": True})
    doomed = cluster.start_worker(conf={"cg_pause_after_retry_of": "celery.chord_unlock"})
    app = cluster.app
    storm = chord([app.signature("t.add", (1, 1)), app.signature("t.sleep", (60,))])(
        app.signature("t.tsum"))
    paused = f"cg:{cluster.namespace}:paused"
    try:
        wait_for(lambda: trace_redis().exists(paused), what="unlock retry published")
        doomed.kill()  # RabbitMQ redelivers the unacked retry 0 beside the published retry 1
        cluster.start_worker()
        server = served(cluster)
        storm_code = (("code", "unlock_storm"),)
        figures = wait_for(lambda: (f := server.metrics()).get(
            "chordguard_chord_diagnoses", {}).get(storm_code) and f, timeout=60,
            what="unlock_storm exported")
        assert figures["chordguard_unlock_duplicate_chains"][()] >= 1
        assert listed(server, storm.parent.id, "diagnosis=unlock_storm")["unlock_chains"] >= 2
    finally:
        trace_redis().delete(paused)
        for worker in cluster.workers:
            worker.kill()
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(cluster.queue)


def test_an_oversized_post_is_refused_before_it_is_read(make_cluster, served):
    """413 on a declared Content-Length over 64 KB, and on a chunked body once 64 KB have
    streamed in; the server's memory does not grow with what the client sends."""
    cluster = make_cluster(REDIS_URL, REDIS_URL)
    server = served(cluster, TOKEN)
    form = {"content-type": "application/x-www-form-urlencoded"}
    declared = server.post("/api/chords/x/fail", content=b"reason=" + b"a" * 200_000,
                           headers=form)
    assert declared.status_code == 413 and "at most 65536" in declared.json()["error"]

    def chunks():
        for _ in range(200):  # 20 MB if it were all read
            yield b"b" * 100_000

    before = _rss_kb(server.process.pid)
    streamed = server.post("/api/chords/x/fail", content=chunks(), headers=form)
    assert streamed.status_code == 413 and "over 65536" in streamed.json()["error"]
    assert _rss_kb(server.process.pid) - before < 10_000
    small = server.post("/api/chords/x/fail", data={"reason": "r"})
    assert small.status_code in (401, 403)  # read, parsed, and refused for want of a token


def _rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("VmRSS")))
