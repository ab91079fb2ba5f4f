"""Helpers shared by the guard's tests: stores per test, traces, result surgery."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import sqlalchemy

from chordguard.store import open_store
from chordguard.store.records import ChordRecord, DeadLetter
from tests.chordapp import trace_redis
from tests.cluster import PG_URL, REDIS_URL, Cluster, wait_for


def store_urls(tmp_path) -> dict[str, str]:
    return {"sqlite": f"sqlite:///{tmp_path}/guard-{uuid.uuid4().hex[:6]}.sqlite",
            "postgres": PG_URL, "redis": REDIS_URL}


def unlock_runs(cluster: Cluster, chord_id: str) -> list[dict]:
    """Every traced celery.chord_unlock run of ``chord_id`` (needs ``cg_trace_unlock``)."""
    raw = trace_redis().lrange(f"cg:{cluster.namespace}:unlock", 0, -1)
    return [run for run in map(json.loads, raw) if run["chord"] == chord_id]


def repeated_retries(runs: list[dict]) -> dict[int, int]:
    """Retry counts (>= 1) seen more than once: the mark of more than one unlock chain."""
    counts = Counter(run["retries"] for run in runs if run["retries"] >= 1)
    return {retries: n for retries, n in counts.items() if n > 1}


def delete_db_result(task_id: str) -> None:
    """Lose a header result the way result expiry / backend_cleanup does."""
    engine = sqlalchemy.create_engine(PG_URL)
    with engine.begin() as conn:
        deleted = conn.execute(sqlalchemy.text("DELETE FROM celery_taskmeta WHERE task_id = :t"),
                               {"t": task_id}).rowcount
    engine.dispose()
    assert deleted == 1, f"no result row for {task_id}"


def ended(store_url: str, chord_id: str, timeout: float = 30.0) -> ChordRecord:
    """Wait until the journal says the chord ended; return its record."""
    store = open_store(store_url)

    def done():
        record = store.chord(chord_id)
        return record if record is not None and not record.open else None

    return wait_for(done, timeout, what=f"chord {chord_id} to end in the journal")


def letter_for(store_url: str, chord_id: str, timeout: float = 10.0) -> DeadLetter:
    """Wait for the dead letter of ``chord_id``; return it."""
    store = open_store(store_url)
    return wait_for(lambda: next((d for d in store.dead_letters() if d.chord_id == chord_id),
                                 None), timeout, what=f"a dead letter for chord {chord_id}")


def purge_own_queue(cluster: Cluster) -> None:
    """Drop what our namespace left in its own queue (unlock messages of plain Celery)."""
    with cluster.app.connection_for_write() as conn:
        conn.default_channel.queue_purge(cluster.queue)
