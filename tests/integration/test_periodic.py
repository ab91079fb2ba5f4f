"""``setup_periodic_monitoring``: a real worker running celery beat (-B) checks every second,
logs each problem once, exports the figures and fails chords past ``auto_fail_after``."""

from __future__ import annotations

import time

import pytest
import redis
from celery import Celery

from chordguard.errors import ConfigurationError
from chordguard.guard.periodic import TASK_NAME, setup_periodic_monitoring
from tests.cluster import REDIS_URL, lost_counter_chord, wait_for


@pytest.fixture
def make_redis_cluster(make_cluster):
    """Redis-backend clusters (cleaned up by make_cluster)."""

    def factory(conf: dict):
        return make_cluster(REDIS_URL, REDIS_URL, conf)

    return factory


def start_beat_worker(cluster, tmp_path, n: int = 0):
    return cluster.start_worker(extra_args=["-B", "-s", str(tmp_path / f"beat-{n}")])


def problem_lines(worker, gid: str, code: str) -> list[str]:
    return [line for line in worker.output().splitlines()
            if f"chord {gid}" in line and f" {code}: " in line]


def checks_run(worker) -> int:
    return worker.output().count(f"Task {TASK_NAME}[") // 2  # received + succeeded lines


def test_each_problem_is_logged_once_and_figures_are_exported(make_redis_cluster, tmp_path):
    textfile = tmp_path / "chordguard.prom"
    cluster = make_redis_cluster({"cg_periodic": {"every": 1.0, "stuck_after": 3600,
                                                  "textfile": str(textfile)}})
    worker = start_beat_worker(cluster, tmp_path)
    gid = lost_counter_chord(cluster)
    wait_for(lambda: problem_lines(worker, gid, "counter_lost"), timeout=30,
             what="the counter_lost warning")
    runs = checks_run(worker)
    wait_for(lambda: checks_run(worker) >= runs + 3, timeout=30, what="three more checks")
    assert len(problem_lines(worker, gid, "counter_lost")) == 1, worker.output()[-3000:]
    exported = textfile.read_text()
    assert 'chordguard_chords_stuck{kind="redis"} 1.0' in exported
    assert 'chordguard_chord_diagnoses{code="counter_lost"} 1.0' in exported
    assert 'chordguard_source_up{source="redis_chords"} 1.0' in exported
    assert "\nchordguard_dead_letters " not in exported  # no store configured: no sample
    client = redis.Redis.from_url(REDIS_URL)
    assert client.get(cluster.group_key(gid, ".c")) is None  # not failed


def test_chords_past_auto_fail_after_are_failed_once(make_redis_cluster, tmp_path):
    store = f"sqlite:///{tmp_path / 'store.sqlite'}"
    textfile = tmp_path / "chordguard.prom"
    cluster = make_redis_cluster({"chordguard_store": store, "cg_periodic": {
        "every": 1.0, "stuck_after": 1.0, "auto_fail_after": 2.0, "textfile": str(textfile)}})
    workers = [start_beat_worker(cluster, tmp_path, n) for n in range(2)]  # two beats
    gid = lost_counter_chord(cluster)
    client = redis.Redis.from_url(REDIS_URL)
    claim = cluster.group_key(gid, ".c")
    wait_for(lambda: client.get(claim) == b"done", timeout=40, what="the chord failed")
    failed = [line for w in workers for line in w.output().splitlines()
              if f"failed chord {gid}" in line]
    assert len(failed) == 1, failed
    time.sleep(3)  # more checks by both workers: nothing logged twice (the store remembers)
    logged = [line for w in workers for line in problem_lines(w, gid, "counter_lost")]
    assert len(logged) == 1, logged
    assert "\nchordguard_dead_letters 0.0" in textfile.read_text()  # read from the store


def test_setup_registers_a_beat_task():
    app = Celery("periodic-setup", broker=REDIS_URL, backend=REDIS_URL)
    app.conf.beat_schedule = {"other": {"task": "x", "schedule": 60}}
    monitor = setup_periodic_monitoring(app, every=30, stuck_after=600, auto_fail_after=7200)
    entry = app.conf.beat_schedule[TASK_NAME]
    assert entry["task"] == TASK_NAME and entry["schedule"] == 30.0
    assert "other" in app.conf.beat_schedule
    assert TASK_NAME in app.tasks and monitor.auto_fail_after == 7200
    with pytest.raises(ConfigurationError):
        setup_periodic_monitoring(app, stuck_after=600, auto_fail_after=60)
