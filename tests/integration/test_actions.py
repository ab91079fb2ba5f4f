"""revoke and clean end chords properly: the callback FAILS with ChordError, errbacks run,
nothing else on the broker is touched. Real workers, PostgreSQL backend, both brokers."""

from __future__ import annotations

import json

import pytest
from celery import chord
from sqlalchemy import create_engine, text

from chordguard import check_stuck_chords, get_active_chord_unlocks, health_check
from chordguard.monitor.sources.broker import peek
from tests.cluster import AMQP_URL, PG_BACKEND, PG_URL, REDIS_URL, chordguard_cli, wait_for

BROKERS = [pytest.param(REDIS_URL, id="redis"), pytest.param(AMQP_URL, id="amqp")]
COMPAT_ON_REDIS = [pytest.param(REDIS_URL, id="redis", marks=pytest.mark.compat),
                   pytest.param(AMQP_URL, id="amqp")]  # also in the version matrix


def lost_header_chord(cluster):
    """An unlock chord that polls forever: a finished header's result row is deleted while a
    slower header runs. The callback has an errback whose result id we know."""
    app = cluster.app
    errback = app.signature("t.echo", ("errback-ran",), immutable=True).set(
        task_id=f"errback-{cluster.namespace}")
    header = [app.signature("t.add", (1, 1)), app.signature("t.sleep", (2, 5))]
    result = chord(header)(app.signature("t.tsum").on_error(errback))
    quick = result.parent.results[0].id
    wait_for(lambda: app.AsyncResult(quick).state == "SUCCESS", what="quick header")
    with create_engine(PG_URL).begin() as db:
        db.execute(text("DELETE FROM celery_taskmeta WHERE task_id = :id"), {"id": quick})
    wait_for(lambda: app.AsyncResult(result.parent.results[1].id).state == "SUCCESS",
             what="slow header")
    return result, errback


def cli_json(cluster, *args: str) -> tuple[int, dict]:
    done = chordguard_cli(cluster, *args, "--json")
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def wait_stuck(cluster, group_id: str) -> None:
    def stuck():
        code, document = cli_json(cluster, "check", "--max-hours", "1")
        return code == 1 and group_id in [c["id"] for c in document["chords"]]

    wait_for(stuck, timeout=60, interval=1, what="the chord to be reported stuck")


@pytest.mark.parametrize("broker", COMPAT_ON_REDIS)
def test_revoke_fails_the_callback_and_runs_its_errbacks(make_cluster, broker):
    cluster = make_cluster(broker, PG_BACKEND, {"chordguard_lost_header_grace": 2})
    cluster.start_worker()
    result, errback = lost_header_chord(cluster)
    wait_stuck(cluster, result.parent.id)
    app, group_id = cluster.app, result.parent.id
    assert group_id in [c.id for c in get_active_chord_unlocks(app)]  # the Python API
    wait_for(lambda: group_id in [c.id for c in check_stuck_chords(app, 1.0)],
             what="check_stuck_chords to list the chord")
    wait_for(lambda: health_check(app)["status"] == "unhealthy", what="unhealthy")

    # a bulk revoke looks twice (an unlock message can be in transit during one look)
    _, plan = cli_json(cluster, "revoke", "--max-hours", "1", "--dry-run")
    assert plan["dry_run"] and [p["chord_id"] for p in plan["chords"]] == [result.parent.id]
    assert result.state == "PENDING"  # a dry run changes nothing

    refused = chordguard_cli(cluster, "revoke", "--max-hours", "1")  # bulk, off a terminal
    assert refused.returncode == 2 and "--force" in refused.stderr
    unknown = chordguard_cli(cluster, "revoke", result.parent.id, "no-such-chord")
    assert unknown.returncode == 1 and "unknown chord id(s): no-such-chord" in unknown.stderr
    assert result.state == "PENDING"  # neither changed anything

    code, done = cli_json(cluster, "revoke", "--max-hours", "1", "--force")
    assert code == 0 and [p["chord_id"] for p in done["chords"]] == [result.parent.id]
    wait_for(lambda: result.state == "FAILURE", what="callback FAILURE")
    assert type(result.result).__name__ == "ChordError"
    assert "failed by chordguard" in str(result.result)
    assert cluster.app.AsyncResult(errback.id).get(timeout=30) == "errback-ran"
    wait_for(lambda: cli_json(cluster, "check", "--max-hours", "1")[0] == 0, timeout=30,
             what="the failed chord to leave the stuck list")
    health = health_check(app)
    assert health["status"] == "healthy" and health["stuck_chords"] == 0, health


def test_revoke_by_id_fails_exactly_that_chord(make_cluster):
    """No guard in the workers: an old-style errback would run in the operator's process, so
    revoke refuses (nothing done) unless --in-process, which captures what it prints."""
    cluster = make_cluster(REDIS_URL, PG_BACKEND)
    cluster.start_worker()
    app = cluster.app
    doomed = chord([app.signature("t.sleep", (300,))])(
        app.signature("t.tsum").on_error(app.signature("t.loud_errback")))
    spared = chord([app.signature("t.sleep", (4, 5))])(app.signature("t.tsum"))
    wait_for(lambda: doomed.parent.id in [c.id for c in get_active_chord_unlocks(app)],
             what="the chord in flight")

    refused = chordguard_cli(cluster, "revoke", doomed.parent.id, "--json")
    assert refused.returncode == 1 and refused.stdout == "", refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "old-style errback(s) t.loud_errback" in refused.stderr
    assert "--in-process" in refused.stderr and "LOUD" not in refused.stderr
    assert doomed.state == "PENDING"  # nothing was done

    loud = chordguard_cli(cluster, "revoke", doomed.parent.id, "--json", "--in-process")
    assert loud.returncode == 0, loud.stderr
    done = json.loads(loud.stdout)  # still valid JSON: what the errback printed is captured
    assert [p["chord_id"] for p in done["chords"]] == [doomed.parent.id]
    assert "LOUD" not in loud.stderr
    assert any("failed in this process; its errbacks printed: LOUD ERRBACK" in step
               for step in done["chords"][0]["steps"])
    wait_for(lambda: doomed.state == "FAILURE", what="callback FAILURE")
    assert "failed on request" in str(doomed.result)
    assert spared.get(timeout=30) == 5  # the other chord ran on, untouched


@pytest.mark.parametrize("broker", COMPAT_ON_REDIS)
def test_clean_purges_only_unlock_messages_and_fails_their_chords(make_cluster, broker):
    cluster = make_cluster(broker, PG_BACKEND, {"chordguard_lost_header_grace": 2})
    side = f"side-{cluster.namespace}"
    cluster.conf["task_routes"] = {"t.none": {"queue": side}}  # makes the queue known
    cluster.app.conf.task_routes = cluster.conf["task_routes"]
    cluster.start_worker()
    result, _ = lost_header_chord(cluster)
    wait_stuck(cluster, result.parent.id)
    for i in range(3):  # ordinary messages nobody consumes: clean must leave them, in order
        cluster.app.signature("t.echo", (f"keep-{i}",)).apply_async(queue=side)

    refused = chordguard_cli(cluster, "clean")
    assert refused.returncode == 2 and "--force" in refused.stderr
    code, dry = cli_json(cluster, "clean", "--dry-run")
    assert [p["chord_id"] for p in dry["failed_chords"]] == [result.parent.id]
    assert result.state == "PENDING"

    code, cleaned = cli_json(cluster, "clean", "--force")
    assert code == 0 and not cleaned["dry_run"]
    wait_for(lambda: result.state == "FAILURE", what="callback FAILURE after clean")
    assert "purged by chordguard clean" in str(result.result)
    view = peek(cluster.app, {side, cluster.queue})
    kept = [m.args[0] for m in view.messages if m.queue == side]
    assert kept == ["keep-0", "keep-1", "keep-2"]
    assert not [m for m in view.messages if m.name == "celery.chord_unlock" and not m.held]
    wait_for(lambda: not cli_json(cluster, "status")[1]["chords"], timeout=30,
             what="no chord left in flight")


def test_a_bulk_view_keeps_a_chord_only_the_second_look_saw(make_cluster, monkeypatch):
    """Bulk ``revoke`` and ``fix`` look twice when chord_unlock joins the app's chords: a
    chord the first look missed (here: published right after it, as a chord whose unlock
    message was in transit looks to the monitor) is in the view they act on."""
    from chordguard.monitor import api

    cluster = make_cluster(REDIS_URL, PG_BACKEND)
    cluster.start_worker()
    app = cluster.app
    real, firsts = api.collect, []

    def first_look_then_a_chord(*args, **kwargs):
        snapshot = real(*args, **kwargs)
        if not firsts:
            firsts.append({c.id for c in snapshot.chords})
            header = app.signature("t.add", (1, 1)).set(queue=f"nobody-{cluster.namespace}")
            firsts.append(chord([header])(app.signature("t.tsum")).parent.id)
            wait_for(lambda: real(app).find(firsts[1]) is not None, what="the new chord seen")
        return snapshot

    monkeypatch.setattr(api, "collect", first_look_then_a_chord)
    view = api.look_twice(app, stuck_after_hours=0)
    first, group_id = firsts
    assert group_id not in first
    found = view.find(group_id)
    assert found is not None and "no_consumer" in found.codes
    assert group_id in [c.id for c in api.stuck_chords(view)]
