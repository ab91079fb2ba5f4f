"""The guard on Redis chords: deadline reaper (counter_lost), journal in the monitor, task
patterns (envelopes, validation, run-once), circuit breaker and the dead-letter CLI."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from celery import chord
from celery.exceptions import ChordError

import chordguard
from chordguard.store import open_store
from chordguard.store.records import DEAD_LETTERED, DLQ_DROPPED, DLQ_REPLAYED
from tests.chordapp import trace_redis
from tests.cluster import REDIS_URL, chordguard_cli, wait_for
from tests.guard_support import ended, letter_for, store_urls


@pytest.fixture
def guarded(make_cluster, tmp_path):
    url = store_urls(tmp_path)["sqlite"]
    guard = {"store": url, "deadline": 30, "reaper_interval": 1, "breaker_failures": 2,
             "breaker_cooldown": 3}
    cluster = make_cluster(REDIS_URL, REDIS_URL, {"guard": guard})
    cluster.start_worker()
    return cluster, url


@pytest.mark.compat
def test_reaper_fails_a_counter_lost_chord_by_its_deadline(guarded):
    cluster, url = guarded
    app = cluster.app
    result = chord([app.signature("t.sleep", (1,)), app.signature("t.add", (1, 1))])(
        chordguard.with_deadline(app.signature("t.tsum"), 5))
    app.backend.client.delete(app.backend.get_key_for_group(result.parent.id, ".s"))

    seen = chordguard.collect(app).find(result.parent.id)
    assert seen is not None and "journal" in seen.sources
    assert seen.kind is chordguard.ChordKind.REDIS and seen.callback_name == "t.tsum"
    assert [p.task_id for p in seen.header] == [r.id for r in result.parent.results]
    assert seen.age is not None and not seen.age.lower_bound and seen.age.seconds < 5
    assert seen.deadline_at is not None

    with pytest.raises(ChordError, match="counter_lost"):
        result.get(timeout=20)
    assert all(r.state == "SUCCESS" for r in result.parent.results)  # the work was done
    record = ended(url, result.parent.id)
    assert record.state == DEAD_LETTERED and record.reason.startswith("counter_lost")
    letter = letter_for(url, result.parent.id)
    assert sorted(letter.inputs) == [1, 2]
    shown = chordguard_cli(cluster, "inspect", result.parent.id, "--json")  # ended: its story
    assert shown.returncode == 0, shown.stderr
    story = json.loads(shown.stdout)["chords"][0]["ended"]
    assert story.startswith("dead_lettered at") and "counter_lost" in story and letter.id in story


def test_header_envelopes_breaker_and_the_dead_letter_cli(guarded):
    cluster, url = guarded
    app = cluster.app
    store = open_store(url)

    def files_chord(fail: bool):
        header = [app.signature("t.files", (1,)), app.signature("t.files", (2,), {"fail": fail})]
        return chord(header)(app.signature("t.guarded_sum"))

    assert files_chord(False).get(timeout=20) == 3
    failing = [files_chord(True) for _ in range(2)]
    for result in failing:  # the envelope reaches the callback, which refuses partial input
        with pytest.raises(ValueError, match="1 header task"):
            result.get(timeout=20)
    wait_for(lambda: store.breaker("t.guarded_sum").state == "open", 10, what="breaker open")
    health = chordguard.health_check(app)
    assert health["breakers"]["t.guarded_sum"] == "open" and health["status"] == "unhealthy"

    blocked = files_chord(False)
    with pytest.raises(chordguard.ChordguardError, match="circuit breaker open"):
        blocked.get(timeout=20)
    letter = letter_for(url, blocked.parent.id)
    assert letter.reason.startswith("circuit open") and letter.inputs == [
        {"successful_files": 1}, {"successful_files": 2}]

    time.sleep(3.2)  # cool-down: the next chord is the half-open probe
    assert files_chord(False).get(timeout=20) == 3
    wait_for(lambda: store.breaker("t.guarded_sum").state == "closed", 10, what="closed")

    listed = chordguard_cli(cluster, "dlq", "list", "--json")
    assert listed.returncode == 1, listed.stderr
    ids = {d["chord_id"]: d["id"] for d in json.loads(listed.stdout)["dead_letters"]}
    assert blocked.parent.id in ids and all(r.parent.id in ids for r in failing)
    shown = chordguard_cli(cluster, "dlq", "show", ids[failing[0].parent.id])
    assert shown.returncode == 0 and "OSError" in shown.stdout and "Traceback" in shown.stdout

    replayed = chordguard_cli(cluster, "dlq", "replay", ids[blocked.parent.id], "--wait", "20",
                              "--json")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert json.loads(replayed.stdout)["replayed"]["result"] == 3
    again = chordguard_cli(cluster, "dlq", "replay", ids[blocked.parent.id])
    assert again.returncode == 1 and "already replayed" in again.stderr

    dropped = chordguard_cli(cluster, "dlq", "drop", ids[failing[1].parent.id], "--reason",
                             "input files were corrupt; re-sent by hand")
    assert dropped.returncode == 0, dropped.stderr
    assert store.dead_letter(ids[failing[1].parent.id]).state == DLQ_DROPPED
    assert store.dead_letter(ids[blocked.parent.id]).state == DLQ_REPLAYED
    assert "re-sent by hand" in chordguard_cli(cluster, "dlq", "show",
                                               ids[failing[1].parent.id]).stdout


@pytest.mark.compat
def test_callback_body_runs_once_when_delivered_twice(guarded):
    cluster, _ = guarded
    app = cluster.app
    key = f"cg:{cluster.namespace}:runs"
    chord_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
    headers = {"chordguard": {"chord": chord_id, "callback": task_id}}
    for _ in range(2):
        app.signature("t.guarded_record", ([{"a": 1}, None], key)).apply_async(
            task_id=task_id, headers=headers)
    other = app.signature("t.guarded_record", ([1], key)).apply_async()
    assert other.get(timeout=20) == 1
    wait_for(lambda: trace_redis().llen(key) >= 2, 10, what="both chords' runs")
    time.sleep(1)
    runs = [json.loads(r) for r in trace_redis().lrange(key, 0, -1)]
    assert runs.count([[{"a": 1}], [{"status": "failed", "error": "a header task returned None",
                                     "type": "NoneResult", "task_id": None}]]) == 1
    assert len(runs) == 2
