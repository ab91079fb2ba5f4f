"""``/api/chords`` pages and filters server-side, against a real cluster and ``serve``: pages
of one snapshot split its list in order, filters combine with pages, the page size is
capped, and a chord is found by group or callback id."""

from __future__ import annotations

import redis
from celery import chord

from tests.cluster import REDIS_URL, wait_for
from tests.serving import Server

pytest_plugins = ("tests.serve_fixtures",)  # fixtures: served, redis_cluster

CHORDS = 7


def page(server: Server, query: str = "") -> dict:
    response = server.get(f"/api/chords?{query}")
    assert response.status_code == 200, response.text
    return response.json()


def pages_of_one_snapshot(server: Server, query: str, size: int
                          ) -> tuple[list[dict], dict] | None:
    """Every page of ``query`` at ``size`` rows and the unpaged list, or None when a new
    snapshot came between them."""
    found = [page(server, f"{query}&limit={size}&offset=0")]
    while found[-1]["offset"] + size < found[-1]["matched"]:
        found.append(page(server, f"{query}&limit={size}&offset={found[-1]['offset'] + size}"))
    whole = page(server, query)
    return (found, whole) if len({p["taken_at"] for p in [*found, whole]}) == 1 else None


def test_pages_and_filters(redis_cluster, served):
    app = redis_cluster.app
    results = [chord([app.signature("t.add", (i, i)), app.signature("t.sleep", (60,))])(
        app.signature("t.tsum")) for i in range(CHORDS)]
    gids = {r.parent.id for r in results}
    client = redis.Redis.from_url(REDIS_URL)
    lost = results[0].parent.id
    wait_for(lambda: client.zcard(redis_cluster.group_key(lost, ".j")) >= 1,
             what="the first chord's first part recorded")
    assert client.delete(redis_cluster.group_key(lost, ".s")) == 1  # counter_lost: blocked
    server = served(redis_cluster)

    whole = wait_for(lambda: page(server, "state=blocked")["matched"] == 1 and page(server),
                     what="the chord without its counter blocked")
    assert (whole["total"], whole["matched"], whole["offset"], whole["limit"]) == \
        (CHORDS, CHORDS, 0, 500)
    assert {row["id"] for row in whole["chords"]} == gids

    pages, unpaged = wait_for(lambda: pages_of_one_snapshot(server, "kind=redis", 3),
                              what="three pages and the list from one snapshot")
    assert [len(p["chords"]) for p in pages] == [3, 3, 1]
    assert [row["id"] for p in pages for row in p["chords"]] == \
        [row["id"] for row in unpaged["chords"]]
    assert len({row["id"] for p in pages for row in p["chords"]}) == CHORDS

    beyond = page(server, f"offset={CHORDS}")
    assert (beyond["matched"], beyond["chords"]) == (CHORDS, [])
    assert page(server, "limit=100000")["limit"] == 1000  # capped, and said so
    assert page(server, "limit=nonsense")["limit"] == 500

    blocked = page(server, "state=blocked&diagnosis=counter_lost")
    assert [row["id"] for row in blocked["chords"]] == [lost]
    assert blocked["total"] == CHORDS
    assert page(server, "diagnosis=counter_lost&limit=1&offset=1")["chords"] == []
    running = page(server, "state=running&limit=2")
    assert running["matched"] == CHORDS - 1 and len(running["chords"]) == 2
    assert lost not in {row["id"] for row in running["chords"]}
    assert page(server, "kind=unlock")["matched"] == 0
    assert page(server, "callback=no-such-callback")["matched"] == 0

    assert server.get(f"/api/chords/{lost}").json()["chord"]["id"] == lost
    assert server.get("/api/chords/no-such-chord").status_code == 404


def test_callback_filter_and_lookup_by_callback_id(pg_cluster, served):
    """chord_unlock chords carry their callback: the callback filter matches a substring of
    its name in any case, and the chord is found by its callback id."""
    app = pg_cluster.app
    slow = chord([app.signature("t.sleep", (30,)), app.signature("t.add", (1, 1))])(
        app.signature("t.tsum"))
    server = served(pg_cluster)
    listed = wait_for(lambda: page(server, "callback=TSUM")["chords"],
                      what="the chord listed under its callback's name")
    assert [(row["id"], row["callback_id"]) for row in listed] == [(slow.parent.id, slow.id)]
    assert page(server, "callback=tsum-not")["matched"] == 0
    found = server.get(f"/api/chords/{slow.id}").json()["chord"]
    assert (found["id"], found["callback_name"]) == (slow.parent.id, "t.tsum")
