"""The reaper: ends barriers past their deadline or stalled, and re-dispatches dead claims.

One reaper is active per app at a time: ``reap`` runs only while it holds the lease
``reaper:<app>`` in the store. ``chordguard reap`` loops with its own holder; the beat task
(``register_beat_task``) uses the holder ``beat``, so it stands aside while a loop runs.

A store outage delays an outcome, never invents one. Time is the store's (``Store.clock``).
The reaper keeps its sight of the store in the store (``reaper-sight:<app>``: since when it
has seen the store without a gap, when it last did). After a gap longer than the lease — an
outage, or passes that failed because the store was unreachable — it only watches for
``chordguard_outage_settle`` seconds, so the completions workers held through the outage land
first; and a stall is counted from the end of the gap, never across it. Only a gap no reaper
saw across counts: one taking the lease over from a holder that died, having reached the store
on each of its own passes meanwhile (its reach kept in this process), judges at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field

from celery import Celery

from ..config import outage_settle, store_url
from ..model import FAILED_STATES
from ..store import Store, open_store, unreachable
from ..store.records import KEEP_SECONDS, Barrier, BarrierState, Policy
from .actions import drop_unfinished_headers
from .barrier import claim_grace
from .dispatch import dispatch, fail_chord

BEAT_TASK = "chordguard.durable.reap"
BEAT_HOLDER = "beat"
logger = logging.getLogger("chordguard.durable")


@dataclass
class ReapReport:
    """What one pass did; ``locked`` is False when another reaper held the lease."""

    locked: bool = True
    failed: dict[str, str] = field(default_factory=dict)  # chord id -> reason
    redispatched: list[str] = field(default_factory=list)
    purged: int = 0  # ended barriers deleted after KEEP_SECONDS
    settling: bool = False  # the store was just out of sight: nothing judged this pass


@dataclass
class Sight:
    """Since when the reaper has seen the store without a gap, when it last did, and until
    when it only watches (store time)."""

    since: float
    last: float
    settle_until: float = 0.0

    def encode(self) -> str:
        return f"{self.since!r} {self.last!r} {self.settle_until!r}"

    @classmethod
    def decode(cls, held: str | None) -> Sight | None:
        try:
            since, last, settle_until = (float(v) for v in (held or "").split())
        except ValueError:
            return None
        return cls(since, last, settle_until)


_blind: set[str] = set()  # holders whose last pass could not read the store
_reached: dict[str, Sight] = {}  # holder -> its own passes' unbroken reach of the store


def reap(app: Celery, store: str | None = None, holder: str | None = None,
         lease: float = 30.0, now: float | None = None, keep_lease: bool = True,
         ) -> ReapReport:
    """One pass over the app's barriers that are due; see the module docstring.

    ``keep_lease=False`` releases the lease after the pass (a one-off run). ``now``
    (tests) replaces the store's clock. Raises the store's error when it is unreachable.
    """
    barriers = open_store(store_url(app, store))
    grace = claim_grace(app.conf)
    looping = keep_lease and holder is not None  # its passes' reach is worth keeping
    name, holder = f"reaper:{app.main}", holder or new_holder()
    try:
        now = barriers.clock() if now is None else now
        locked = barriers.swap_lease(name, (None, holder), holder, lease)  # take or renew
        was_blind, reached_since = holder in _blind, _reach(holder, now, lease, looping)
        if not locked:
            return ReapReport(locked=False)
        try:
            sight = _look(app, barriers, now, lease, was_blind, reached_since, keep_lease)
            if keep_lease and now < sight.settle_until:
                return ReapReport(settling=True)
            report = _pass(app, barriers, now, grace, sight.since)
            report.purged = barriers.purge_barriers(app.main or "", now - KEEP_SECONDS)
            return report
        finally:
            if not keep_lease:
                barriers.swap_lease(name, holder, None, 0)  # release
    except Exception as exc:
        if unreachable(exc) and looping:
            _blind.add(holder)
            _reached.pop(holder, None)
        raise


def _reach(holder: str, now: float, lease: float, looping: bool) -> float:
    """Since when ``holder``'s own passes (in this process) reached the store without a gap
    longer than ``lease`` or a failed pass; ``now`` for a one-off pass."""
    _blind.discard(holder)
    if not looping:
        return now
    reached = _reached.get(holder)
    if reached is None or now - reached.last > lease:
        reached = _reached[holder] = Sight(since=now, last=now)
    reached.last = now
    return reached.since


def _look(app: Celery, barriers: Store, now: float, lease: float, was_blind: bool,
          reached_since: float, record: bool) -> Sight:
    """The reaper's sight of the store (see the module docstring), updated when ``record``
    (a one-off pass neither settles nor vouches for a continuous sight). A gap in the record
    that this reaper's own passes spanned (from ``reached_since`` on) was a handover."""
    name = f"reaper-sight:{app.main}"
    held = barriers.lease_holder(name)
    sight = Sight.decode(held)
    if sight is None:  # never looked (or a day ago): nothing known to have been missed
        sight = Sight(since=now, last=now)
    elif was_blind or reached_since - sight.last > lease:  # out of every reaper's sight
        sight = Sight(since=now, last=now, settle_until=now + outage_settle(app))
    sight.last = now
    if record:
        barriers.swap_lease(name, held, sight.encode(), KEEP_SECONDS)
    return sight


def _pass(app: Celery, barriers: Store, now: float, grace: float,
          seen_since: float) -> ReapReport:
    report = ReapReport()
    for barrier in barriers.due_barriers(app.main or "", now):
        reason = _overdue(barrier.state, barrier.deadline_at,
                          max(barrier.updated_at, seen_since), barrier.stall_seconds, now)
        if reason and (ended := _callback_ended(app, barrier)) is not None:
            barriers.finish_barrier(barrier.id, ended, now, app=barrier.app,
                                    reason="callback ended (reaper)")
        elif reason:
            failed = barriers.fail_barrier(barrier.id, reason, now, uuid.uuid4().hex)
            if failed is not None:
                fail_chord(app, barriers, failed, reason)
                report.failed[barrier.id] = reason
                _drop_headers(app, barriers, barrier.id)
        elif barrier.state is BarrierState.DISPATCHING \
                and _redispatch(app, barriers, barrier.id, now, grace):
            report.redispatched.append(barrier.id)
    return report


def _callback_ended(app: Celery, barrier: Barrier) -> BarrierState | None:
    """How the callback of a store-joined chord (policy ``celery``) ended, as the result
    backend stored it, when its own end never reached the store (a ``Task.replace``d
    callback, a write lost at the deadline); None: not ended, or not such a chord."""
    if barrier.policy is not Policy.CELERY or barrier.state is not BarrierState.DISPATCHED \
            or not barrier.callback_id:
        return None
    state = app.AsyncResult(barrier.callback_id).state
    if state == "SUCCESS":
        return BarrierState.SUCCEEDED
    return BarrierState.FAILED if state in FAILED_STATES else None


def _drop_headers(app: Celery, barriers: Store, chord_id: str) -> None:
    """The chord is failed: its unfinished headers should not run later (best effort)."""
    try:
        drop_unfinished_headers(app, barriers, chord_id)
    except Exception:  # a broker hiccup leaves the chord failed all the same
        logger.exception("durable chord %s: its unfinished headers were not revoked/removed",
                         chord_id)


def _overdue(state: BarrierState, deadline_at: float, updated_at: float, stall: float,
             now: float) -> str | None:
    if now >= deadline_at:
        return f"deadline passed while {state.value} " \
               f"({now - deadline_at:.0f} s ago)"
    if state is BarrierState.WAITING and now - updated_at >= stall:
        return f"stalled: no header part finished for {now - updated_at:.0f} s in sight " \
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
        try:
            report = reap(app, store, holder=holder, lease=max(3 * interval, 10.0))
        except Exception as exc:
            if not unreachable(exc):
                raise
            logger.warning("durable reaper: the store is unreachable (%r); nothing judged", exc)
        else:
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
