"""The tracker and the metrics it feeds: poll rates from successive snapshots, finished chords
read back from a real Redis result backend, and the shared snapshot cache's single flight."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from chordguard.model import (
    Chord,
    ChordKind,
    ClusterFacts,
    Duration,
    Snapshot,
    SourceReport,
    UnlockCopy,
)
from chordguard.monitor.metrics import exposition, make_registry
from chordguard.monitor.tracker import ChordTracker
from chordguard.web.snapshots import SnapshotCache
from tests.chordapp import make_app
from tests.cluster import REDIS_URL

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def backend_app():
    """An app on the real Redis result backend, in its own key prefix (deleted after)."""
    namespace = "t" + uuid.uuid4().hex[:10]
    app = make_app(namespace, REDIS_URL, REDIS_URL)
    yield app
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{namespace}:*"):
        client.delete(key)
    app.close()


def snapshot(at: float, *chords: Chord, sources_ok: bool = True) -> Snapshot:
    return Snapshot(taken_at=T0 + timedelta(seconds=at), celery_version="5.7.0",
                    facts=ClusterFacts(now=T0 + timedelta(seconds=at), retry_interval=1.0),
                    chords=list(chords), sources=[SourceReport("unlock_chords", sources_ok, 0.1)])


def unlock_chord(chord_id: str, *retries: int, callback_id: str | None = None) -> Chord:
    return Chord(id=chord_id, kind=ChordKind.UNLOCK, callback_name="t.tsum",
                 callback_id=callback_id, unlock_retries=max(retries),
                 unlock_copies=[UnlockCopy(f"u{i}", r, "worker:w") for i, r in enumerate(retries)])


def test_poll_rates_tell_a_storm_from_a_healthy_chain(backend_app):
    tracker = ChordTracker(backend_app)
    tracker.observe(snapshot(0, unlock_chord("calm", 5000), unlock_chord("storm", 7000, 7000)))
    # 10 s later: the calm chain polled 10 times (one per 1 s interval), the storm's two
    # chains 10 times each.
    figures = tracker.observe(snapshot(10, unlock_chord("calm", 5010),
                                       unlock_chord("storm", 7010, 7010)))
    calm, storm = figures.rates["calm"], figures.rates["storm"]
    assert calm.per_second == pytest.approx(1.0)
    assert calm.per_interval_floor <= 1.0
    assert storm.per_second == pytest.approx(2.0)
    assert storm.per_interval_floor > 1.5
    assert figures.max_polls_per_interval == storm.per_interval_floor
    assert figures.unlock_polls_total == 30  # growth only, never the 19,000 seen at start


def test_finished_chords_counted_from_the_callback_result(backend_app):
    tracker = ChordTracker(backend_app)
    ok_id, bad_id, late_id = (str(uuid.uuid4()) for _ in range(3))
    made = T0 - timedelta(seconds=30)
    chords = [unlock_chord(name, 1, callback_id=cid) for name, cid in
              (("ok", ok_id), ("bad", bad_id), ("late", late_id))]
    chords[0].created_at = made
    chords[1].age = Duration(100.0, "lower bound", lower_bound=True)
    tracker.observe(snapshot(0, *chords))
    assert tracker.observe(snapshot(5, sources_ok=False)).completed == {}  # may be unseen
    backend_app.backend.store_result(ok_id, 6, "SUCCESS")
    backend_app.backend.mark_as_failure(bad_id, TypeError("unsupported operand"))
    figures = tracker.observe(snapshot(10))
    assert figures.completed == {("t.tsum", "success"): 1, ("t.tsum", "failure"): 1}
    assert figures.callback_failures == {"t.tsum": 1}
    hist = figures.durations["t.tsum"]
    assert hist.count == 2
    # "ok": from its creation to its callback's date_done (now); "bad": no creation time, so
    # the 100 s age first seen plus the time since it was first seen (T0).
    now = datetime.now(UTC)
    expected = (now - made).total_seconds() + 100 + (now - T0).total_seconds()
    assert hist.total == pytest.approx(expected, abs=10)
    backend_app.backend.store_result(late_id, 1, "SUCCESS")  # the callback ran later
    assert tracker.observe(snapshot(15)).completed[("t.tsum", "success")] == 2

    text = exposition(make_registry(lambda: figures)).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("chordguard_callback_failures_total", (("callback", "t.tsum"),))] == 1
    assert samples[("chordguard_chord_duration_seconds_count", (("callback", "t.tsum"),))] == 2
    assert samples[("chordguard_chord_duration_seconds_bucket",
                    (("callback", "t.tsum"), ("le", "+Inf")))] == 2
    assert samples[("chordguard_chords_completed_total",
                    (("callback", "t.tsum"), ("outcome", "failure")))] == 1


def test_cache_collects_once_for_many_viewers_off_the_event_loop():
    calls: list[str] = []

    def produce():
        calls.append(threading.current_thread().name)
        time.sleep(0.5)
        return len(calls)

    async def scenario():
        cache = SnapshotCache(produce, fresh_for=10.0)
        ticks = 0

        async def ticker():
            nonlocal ticks
            for _ in range(20):
                await asyncio.sleep(0.02)
                ticks += 1

        results = await asyncio.gather(*(cache.get() for _ in range(50)), ticker())
        again = await cache.get()
        return results[:50], again, ticks

    results, again, ticks = asyncio.run(scenario())
    assert results == [1] * 50 and again == 1
    assert len(calls) == 1 and calls[0] != threading.main_thread().name
    assert ticks == 20  # the loop kept running while the collection slept


def test_cache_hands_a_replaced_value_to_release_off_the_event_loop():
    released: list[tuple[int, str]] = []
    made = iter(range(1, 10))

    async def scenario():
        cache = SnapshotCache(lambda: next(made), fresh_for=0.0,
                              release=lambda v: released.append(
                                  (v, threading.current_thread().name)))
        first = await cache.refresh()
        second = await cache.refresh()
        while not released:
            await asyncio.sleep(0.01)
        return first, second, cache.latest

    first, second, latest = asyncio.run(scenario())
    assert (first, second, latest) == (1, 2, 2)
    assert [v for v, _ in released] == [1]  # the value still served is never released
    assert released[0][1] != threading.main_thread().name
