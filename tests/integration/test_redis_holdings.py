"""Plain Redis chords (no guard) seen through their header messages: the callback,
``no_consumer``, ``lost_header``, and ``revoke CHORD_ID`` failing one properly. Real workers,
Redis broker and Redis result backend."""

from __future__ import annotations

import json

import redis
from celery import chord, states

from tests.cluster import REDIS_URL, chordguard_cli, wait_for


def cli_json(cluster, *args: str) -> tuple[int, dict]:
    done = chordguard_cli(cluster, *args, "--json")
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def codes_by_chord(document: dict) -> dict[str, list[str]]:
    return {c["id"]: [d["code"] for d in c["diagnoses"]] for c in document["chords"]}


def test_unconsumed_lost_and_revoked_redis_chords(make_cluster):
    cluster = make_cluster(REDIS_URL, REDIS_URL, {"chordguard_lost_header_grace": 2})
    cluster.start_worker()
    app, ns = cluster.app, cluster.namespace
    gpu, hold, gone = f"gpu-{ns}", f"hold-{ns}", f"gone-{ns}"
    errback = app.signature("t.echo", ("errback-ran",), immutable=True).set(
        task_id=f"errback-{ns}")
    doomed = chord([app.signature("t.add", (1, 1)).set(queue=gpu),
                    (app.signature("t.add", (2, 2)) | app.signature("t.add", (3,)))
                    .set(queue=gpu)])(app.signature("t.tsum").on_error(errback))
    spared = chord([app.signature("t.add", (5, 5)).set(queue=hold)])(app.signature("t.tsum"))
    lost = chord([app.signature("t.add", (7, 7)).set(queue=gone)])(app.signature("t.tsum"))
    assert redis.Redis.from_url(REDIS_URL).delete(f"{ns}:{gone}") == 1  # its header message
    ids = (doomed.parent.id, spared.parent.id, lost.parent.id)

    def diagnosed():
        code, document = cli_json(cluster, "check", "--max-hours", "1")
        return (code, document) if codes_by_chord(document).get(lost.parent.id) else None

    code, document = wait_for(diagnosed, timeout=30, interval=0.5, what="lost_header")
    codes = codes_by_chord(document)
    assert code == 1
    assert [codes.get(i) for i in ids] == [["no_consumer"], ["no_consumer"], ["lost_header"]]
    unknowable = next(c for c in document["chords"] if c["id"] == lost.parent.id)
    assert unknowable["callback_name"] is None
    assert unknowable["evidence"]["callback"].startswith("unknown: no header message")

    code, document = cli_json(cluster, "inspect", doomed.parent.id)
    seen = document["chords"][0]
    assert (seen["callback_name"], seen["callback_id"]) == ("t.tsum", doomed.id)
    assert [e["options"]["task_id"] for e in seen["callback_signature"]["options"]["link_error"]] \
        == [errback.id]
    assert sorted(p["held_by"].split(" ")[0] for p in seen["header"]) == [f"queue:{gpu}"] * 2
    assert "embed 'chord' of header message" in seen["evidence"]["callback"]

    code, plan = cli_json(cluster, "revoke", doomed.parent.id, "--dry-run")
    assert code == 0 and plan["dry_run"]
    assert doomed.id in plan["chords"][0]["callback"]
    client = redis.Redis.from_url(REDIS_URL)
    counter = cluster.group_key(doomed.parent.id, ".s")
    assert client.exists(counter) and doomed.state == "PENDING"  # a dry run changes nothing

    code, done = cli_json(cluster, "revoke", doomed.parent.id, "--force")
    assert code == 0 and [p["chord_id"] for p in done["chords"]] == [doomed.parent.id]
    wait_for(lambda: doomed.state == "FAILURE", what="callback FAILURE")
    assert type(doomed.result).__name__ == "ChordError"
    assert app.AsyncResult(errback.id).get(timeout=30) == "errback-ran"  # run by a worker
    assert not client.exists(counter)
    assert spared.state == "PENDING" and client.exists(cluster.group_key(spared.parent.id, ".s"))

    cluster.start_worker(queues=[gpu, hold])  # a fresh worker: it never heard of the revoke
    assert spared.get(timeout=30) == 10  # the other chord was untouched and completes
    late = doomed.parent.results[0]  # REVOKED (Celery 5.7 stores it) or run: either way ready
    wait_for(lambda: client.llen(f"{ns}:{gpu}") == 0 and late.state in states.READY_STATES,
             what="the fresh worker to take the failed chord's late headers")
    stored = json.loads(client.get(app.backend.get_key_for_task(doomed.id)))
    assert stored["status"] == "FAILURE", "a late header must not fire the callback"
