"""The reaper: ends barriers past their deadline or stalled, and re-dispatches dead claims.

One reaper is active per app at a time: ``reap`` runs only while it holds the lease
``reaper:<app>`` in the store. ``chordguard reap`` loops with its own holder; the beat task
(``register_beat_task``) uses the holder ``beat``, so it stands aside while a loop runs.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from celery import Celery

from ..config import store_url
from ..store import Store, open_store
from ..store.records import KEEP_SECONDS, BarrierState
from .barrier import claim_grace
from .dispatch import dispatch, fail_chord

BEAT_TASK = "chordguard.durable.reap"
BEAT_HOLDER = "beat"


@dataclass
class ReapReport:
    """What one pass did; ``locked`` is False when another reaper held the lease."""

    locked: bool = True
    failed: dict[str, str] = field(default_factory=dict)  # chord id -> reason
    redispatched: list[str] = field(default_factory=list)
    purged: int = 0  # ended barriers deleted after KEEP_SECONDS


def reap(app: Celery, store: str | None = None, holder: str | None = None,
         lease: float = 30.0, now: float | None = None, keep_lease: bool = True,
         ) -> ReapReport:
    """One pass over the app's barriers that are due; see the module docstring.

    ``keep_lease=False`` releases the lease after the pass (a one-off run).
    """
    barriers = open_store(store_url(app, store))
    grace = claim_grace(app.conf)
    now = time.time() if now is None else now
    name, holder = f"reaper:{app.main}", holder or new_holder()
    if not barriers.swap_lease(name, (None, holder), holder, lease):  # take or renew
        return ReapReport(locked=False)
    try:
        report = _pass(app, barriers, now, grace)
        report.purged = barriers.purge_barriers(app.main or "", now - KEEP_SECONDS)
        return report
    finally:
        if not keep_lease:
            barriers.swap_lease(name, holder, None, 0)  # release


def _pass(app: Celery, barriers: Store, now: float, grace: float) -> ReapReport:
    report = ReapReport()
    for barrier in barriers.due_barriers(app.main or "", now):
        reason = _overdue(barrier.state, barrier.deadline_at, barrier.updated_at,
                          barrier.stall_seconds, now)
        if reason:
            failed = barriers.fail_barrier(barrier.id, reason, now, uuid.uuid4().hex)
            if failed is not None:
                fail_chord(app, barriers, failed, reason)
                report.failed[barrier.id] = reason
        elif barrier.state is BarrierState.DISPATCHING \
                and _redispatch(app, barriers, barrier.id, now, grace):
            report.redispatched.append(barrier.id)
    return report


def _overdue(state: BarrierState, deadline_at: float, updated_at: float, stall: float,
             now: float) -> str | None:
    if now >= deadline_at:
        return f"deadline passed while {state.value} " \
               f"({now - deadline_at:.0f} s ago)"
    if state is BarrierState.WAITING and now - updated_at >= stall:
        return f"stalled: no header part finished for {now - updated_at:.0f} s " \
               f"(stall timeout {stall:g} s)"
    return None


def _redispatch(app: Celery, barriers: Store, chord_id: str, now: float,
                grace: float) -> bool:
    claimed = barriers.reclaim_barrier(chord_id, now, uuid.uuid4().hex, grace)
    if claimed is None:
        return False
    envelopes = None if claimed.by_reference else barriers.envelopes(chord_id, 0, claimed.total)
    dispatch(app, barriers, claimed, envelopes)
    return True


def reap_forever(app: Celery, interval: float = 5.0, store: str | None = None,
                 stop: threading.Event | None = None, on_pass=None) -> None:
    """``reap`` every ``interval`` seconds until ``stop`` is set, holding the lease."""
    stop = stop or threading.Event()
    holder = new_holder()
    while not stop.is_set():
        report = reap(app, store, holder=holder, lease=max(3 * interval, 10.0))
        if on_pass is not None:
            on_pass(report)
        stop.wait(interval)


def register_beat_task(app: Celery, interval: float = 10.0) -> None:
    """Register the reaper task and schedule it with celery beat every ``interval`` s."""
    if BEAT_TASK not in app.tasks:
        @app.task(name=BEAT_TASK, ignore_result=True, shared=False)
        def reap_task() -> dict:
            report = reap(app, holder=BEAT_HOLDER, lease=max(2 * interval, 10.0))
            return {"locked": report.locked, "failed": report.failed,
                    "redispatched": report.redispatched}
    schedule = dict(app.conf.beat_schedule or {})
    schedule[BEAT_TASK] = {"task": BEAT_TASK, "schedule": interval}
    app.conf.beat_schedule = schedule


def new_holder() -> str:
    """A lease holder name unique to this process and call: keep it for a loop's life."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
