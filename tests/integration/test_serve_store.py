"""``serve`` with the guard installed: the dead-letter queue, journal history and breaker
state from the guard's store, and replay/drop behind the token."""

from __future__ import annotations

from celery import chord

from chordguard.store import open_store
from tests.cluster import REDIS_URL, wait_for
from tests.serving import Server

pytest_plugins = ("tests.serve_fixtures",)

TOKEN = "store-test-token"


def test_dead_letters_journal_and_breakers(make_cluster, served, tmp_path):
    store_url = f"sqlite:///{tmp_path}/guard.sqlite"
    cluster = make_cluster(REDIS_URL, REDIS_URL, {"guard": {"store": store_url}})
    cluster.start_worker()
    app = cluster.app
    result = chord([app.signature("t.files", (3,)), app.signature("t.files", (2,),
                                                                  {"fail": True})])(
        app.signature("t.guarded_sum"))
    gid = result.parent.id
    store = open_store(store_url)
    letter = wait_for(lambda: next((x for x in store.dead_letters() if x.chord_id == gid), None),
                      what="the failed chord dead-lettered")
    server: Server = served(cluster, TOKEN)

    listed = server.get("/api/dead-letters").json()
    assert listed["dead_letters_enabled"] is True
    (shown,) = [x for x in listed["dead_letters"] if x["chord_id"] == gid]
    assert (shown["id"], shown["state"], shown["callback"]) == (letter.id, "dead", "t.guarded_sum")
    figures = server.metrics()
    assert figures["chordguard_dead_letters"][()] == 1
    breaker = figures["chordguard_circuit_breaker_state"]
    assert breaker[(("callback", "t.guarded_sum"),
                    ("chordguard_circuit_breaker_state", "closed"))] == 1

    history = server.get(f"/api/chords/{gid}").json()
    assert history["chord"] is None  # over: only the journal knows it now
    events = {line["event"]: line for line in history["history"]}
    assert events["published"]["detail"].startswith("callback t.guarded_sum")
    assert "dead_lettered" in events

    path = f"/api/dead-letters/{letter.id}"
    assert server.post(f"{path}/replay").status_code == 401
    assert server.post(f"{path}/drop", data={"token": TOKEN}).status_code == 400
    replayed = server.post(f"{path}/replay", headers={"X-Chordguard-Token": TOKEN})
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["result"]["task_id"]
    assert store.dead_letter(letter.id).state == "replayed"
    again = server.post(f"{path}/drop", data={"token": TOKEN, "reason": "fixed upstream"})
    assert again.status_code == 404 and "already replayed" in again.json()["error"]
    after = server.get("/api/dead-letters").json()["dead_letters"]
    assert next(x for x in after if x["id"] == letter.id)["state"] == "replayed"
