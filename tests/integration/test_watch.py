"""``chordguard watch``: unlock poll rates and anomalies from a real worker's events, and
memory that stays bounded however many events pass."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tracemalloc
import uuid

from celery import chord

from chordguard.monitor.events import UnlockWatch
from tests.cluster import PG_BACKEND, REDIS_URL, ROOT, wait_for


def start_watch(cluster, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "chordguard", "-A", "tests.chordapp", "watch", "--json", *args],
        env=cluster.env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_lines(process: subprocess.Popen, until: str, timeout: float = 30,
               anomalies: list[dict] | None = None) -> list[dict]:
    """Lines of the watch's JSON stream up to and including the first of type ``until``;
    anomaly lines are also appended to ``anomalies``."""
    lines: list[dict] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        raw = process.stdout.readline()
        if not raw:
            break
        lines.append(json.loads(raw))
        if anomalies is not None and lines[-1]["type"] == "anomaly":
            anomalies.append(lines[-1])
        if lines[-1]["type"] == until:
            return lines
    raise AssertionError(f"no {until!r} line; got {lines}; stderr {process.stderr.read()}")


def rate_of(report: dict, chord_id: str) -> dict | None:
    return next((c for c in report["chords"] if c["chord_id"] == chord_id), None)


def test_watch_reports_unlock_rates_duplicate_chains_and_callback_failures(make_cluster):
    cluster = make_cluster(REDIS_URL, PG_BACKEND)
    cluster.start_worker(extra_args=["-E"])
    app = cluster.app
    watch = start_watch(cluster, "--every", "1", "--window", "6", "--stuck-after", "3",
                        "--duration", "40")
    small = start_watch(cluster, "--every", "1", "--max-chords", "1", "--duration", "40")
    try:
        read_lines(watch, "watching")
        read_lines(small, "watching")
        # A chord whose header sits in a queue nobody consumes: its unlock polls forever.
        stuck = chord([app.signature("t.add", (1, 1), queue=f"nobody-{cluster.namespace}")])(
            app.signature("t.collect"))
        group_id = stuck.parent.id
        # A chord whose callback crashes on a None result (the post-mortem's callback).
        crashing = chord([app.signature("t.none")])(app.signature("t.sum_files"))
        seen: list[dict] = []

        def steady_rate():
            report = read_lines(watch, "rates", anomalies=seen)[-1]
            rate = rate_of(report, group_id)
            return rate if rate and rate["polls_in_window"] >= 5 else None

        single = wait_for(steady_rate, timeout=40, interval=0, what="a steady unlock rate")
        assert 0.5 <= single["polls_per_interval"] <= 1.3, single
        assert single["chains"] == 1

        # A second live unlock chain for the same chord, as a redelivery would leave.
        app.send_task("celery.chord_unlock", task_id=str(uuid.uuid4()), queue=cluster.queue,
                      args=(group_id, _callback(stuck)),
                      kwargs={"interval": None, "max_retries": None,
                              "result": [r.as_tuple() for r in stuck.parent.results]})

        def doubled():
            lines = read_lines(watch, "rates", anomalies=seen)
            rate = rate_of(lines[-1], group_id)
            return rate if rate and rate["polls_per_interval"] >= 1.6 else None

        double = wait_for(doubled, timeout=40, interval=0, what="the doubled unlock rate")
        assert double["polls_per_interval"] <= 2.6, double
        assert double["chains"] == 2
        codes = {(a["code"], a["chord_id"]) for a in seen}
        assert ("duplicate_unlock_chain", group_id) in codes
        assert ("unlock_storm", group_id) in codes
        assert ("stuck", group_id) in codes
        failures = [a for a in seen if a["code"] == "callback_failed"]
        assert [a["chord_id"] for a in failures] == [crashing.parent.id]
        assert "TypeError" in failures[0]["summary"]
        assert len([a for a in seen if a["code"] == "unlock_storm"]) == 1  # reported once

        small_report = read_lines(small, "rates")[-1]
        assert small_report["size"]["chords"] == 1  # two chords polled, one remembered
        assert small_report["size"]["index"] <= 1 * (8 + 1)
    finally:
        for process in (watch, small):
            process.terminate()
            process.wait(10)


def _callback(result) -> dict:
    """The callback signature as chord_unlock receives it (its task id is the result's)."""
    return {"task": "t.collect", "args": [], "kwargs": {},
            "options": {"task_id": result.id, "group_id": result.parent.id},
            "subtask_type": None, "immutable": False}


def unlock_event(chord_id: str, unlock_id: str, retries: int, at: float) -> dict:
    args = (f"('{chord_id}', {{'task': 'cb', 'args': [], 'kwargs': {{}}, "
            f"'options': {{'task_id': 'cb-{chord_id}'}}}})")
    return {"type": "task-received", "name": "celery.chord_unlock", "uuid": unlock_id,
            "retries": retries, "args": args, "timestamp": at}


def test_memory_stays_bounded_however_many_events_pass():
    watch = UnlockWatch(interval=1.0, window=10.0, max_chords=200, max_polls=16, max_chains=4,
                        max_anomalies=50)
    tracemalloc.start()
    peaks = []
    at = 1_000_000.0
    for round_ in range(4):
        for i in range(25_000):
            at += 0.01
            n = round_ * 25_000 + i
            chord_id = f"chord-{n % 5_000}"
            watch.feed(unlock_event(chord_id, f"unlock-{chord_id}-{n % 3}", n // 5_000, at))
            watch.feed({"type": "task-succeeded", "uuid": f"plain-{n}", "timestamp": at})
            if i % 500:
                continue
            size = watch.size()
            assert size["chords"] <= 200 and size["polls"] <= 200 * 16
            assert size["chains"] <= 200 * 4 and size["index"] <= 200 * (4 + 1)
            assert size["anomalies"] <= 50
        peaks.append(tracemalloc.get_traced_memory()[0])
    tracemalloc.stop()
    assert watch.events_seen == 200_000
    assert peaks[-1] < peaks[1] * 1.2, peaks  # no growth after the first rounds fill it


def test_rates_come_from_event_timestamps():
    watch = UnlockWatch(interval=2.0, window=20.0)
    for i in range(10):
        watch.feed(unlock_event("c", "u", i, 100.0 + 2.0 * i))
    (rate,) = watch.rates()
    assert abs(rate.polls_per_second - 0.5) < 1e-9
    assert abs(rate.polls_per_interval - 1.0) < 1e-9
    assert rate.chains == 1 and not watch.anomalies
    for i in range(10, 20):  # a second message with the same id repeats each retries count
        watch.feed(unlock_event("c", "u", i, 100.0 + 2.0 * i))
        watch.feed(unlock_event("c", "u", i, 101.0 + 2.0 * i))
    (rate,) = watch.rates()
    assert rate.chains == 2 and 1.8 < rate.polls_per_interval < 2.2, rate
    assert {a.code for a in watch.anomalies} >= {"duplicate_unlock_chain", "unlock_storm"}
