"""Helpers for the upstream reproductions: one plain and one guarded cluster side by side,
each given the same broken chord; what plain Celery does and what the guard does with it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from celery.exceptions import ChordError
from celery.result import AsyncResult

from chordguard.store.records import DEAD_LETTERED
from tests.cluster import AMQP_URL, PG_BACKEND, Cluster, chordguard_cli, wait_for
from tests.guard_support import ended, letter_for, purge_own_queue, unlock_runs

DEADLINE = 15.0
BASE = {"cg_trace_unlock": True}


@dataclass
class Broken:
    """A chord as a reproduction left it: its callback's result and its errback's task id."""

    result: AsyncResult
    group_id: str
    errback_id: str


def errback_for(cluster: Cluster):
    """An errback with a known task id: its SUCCESS proves the callback's errbacks ran."""
    return cluster.app.signature("t.echo", ("errback-ran",), immutable=True).set(
        task_id=f"errback-{cluster.namespace}")


def pair(make_cluster, store_url: str, broker: str = AMQP_URL) -> tuple[Cluster, Cluster]:
    """A plain and a guarded cluster (deadline ``DEADLINE``) on ``broker`` and PostgreSQL."""
    plain = make_cluster(broker, PG_BACKEND, {**BASE, "chordguard_lost_header_grace": 2})
    guard = {"store": store_url, "deadline": DEADLINE, "unlock_max_interval": 2}
    guarded = make_cluster(broker, PG_BACKEND, {**BASE, "guard": guard})
    return plain, guarded


def status_codes(cluster: Cluster, group_id: str) -> list[str]:
    """Diagnosis codes ``chordguard status --json`` gives the chord (empty if not listed)."""
    done = chordguard_cli(cluster, "status", "--json")
    assert done.returncode in (0, 1), done.stderr
    chord = next((c for c in json.loads(done.stdout)["chords"] if c["id"] == group_id), None)
    return [d["code"] for d in chord["diagnoses"]] if chord else []


def assert_plain_celery_stuck(cluster: Cluster, broken: Broken, code: str) -> list[dict]:
    """The monitor names ``code`` while chord_unlock keeps polling and the callback stays
    PENDING; returns the monitor's diagnoses of it."""
    seen: dict = {}

    def named():
        seen["codes"] = status_codes(cluster, broken.group_id)
        return code in seen["codes"]

    wait_for(named, timeout=40, interval=0.5, what=f"the monitor to name {code}")
    before = len(unlock_runs(cluster, broken.group_id))
    wait_for(lambda: len(unlock_runs(cluster, broken.group_id)) >= before + 2, timeout=10,
             what="chord_unlock to poll again")
    assert broken.result.state == "PENDING", "plain Celery must leave the callback waiting"
    assert cluster.app.AsyncResult(broken.errback_id).state == "PENDING"
    purge_own_queue(cluster)
    return seen["codes"]


def assert_guard_ended_it(cluster: Cluster, broken: Broken, store_url: str,
                          started: float) -> None:
    """Callback FAILURE with ChordError by the deadline (when the backend stored it, since
    ``started``, wall time: the plain cluster's checks ran meanwhile), errbacks run,
    dead-lettered, polling stopped."""
    wait_for(lambda: broken.result.state == "FAILURE", timeout=DEADLINE + 30,
             what="the guard to fail the callback")  # get() would raise a header's error
    assert stored_at(broken.result) - started < DEADLINE + 15, "ended by its deadline, not later"
    assert isinstance(broken.result.result, ChordError), broken.result.result
    assert "deadline" in str(broken.result.result)
    record = ended(store_url, broken.group_id)
    assert record.state == DEAD_LETTERED and record.reason.startswith("deadline"), record
    assert letter_for(store_url, broken.group_id).callback_name == "t.tsum"
    wait_for(lambda: cluster.app.AsyncResult(broken.errback_id).state == "SUCCESS",
             what="the callback's errback to run")
    polls = len(unlock_runs(cluster, broken.group_id))
    time.sleep(4)  # longer than the guard's poll cap (2 s): a live chain would have polled
    assert len(unlock_runs(cluster, broken.group_id)) == polls, "polling must stop"


def stored_at(result: AsyncResult) -> float:
    """When the result backend stored ``result``'s state (epoch seconds; naive is UTC)."""
    done = result.date_done
    if isinstance(done, str):
        done = datetime.fromisoformat(done)
    return (done if done.tzinfo else done.replace(tzinfo=UTC)).timestamp()


def reproduce(make_cluster, store_url: str, build: Callable[[Cluster], Broken], code: str,
              broker: str = AMQP_URL) -> list[str]:
    """Build the broken chord on a plain and a guarded cluster; check both; return the
    monitor's codes for the plain one."""
    plain, guarded = pair(make_cluster, store_url, broker)
    plain.start_worker()
    guarded.start_worker()
    started = time.time()
    on_guarded = build(guarded)
    on_plain = build(plain)
    codes = assert_plain_celery_stuck(plain, on_plain, code)
    assert_guard_ended_it(guarded, on_guarded, store_url, started)
    return codes
