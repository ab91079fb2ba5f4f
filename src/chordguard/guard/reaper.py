"""The reaper: chords past their deadline are ended, whatever their kind.

Redis chords have no unlock task to notice a deadline (and a ``counter_lost`` chord never
fires), and an unlock chain can die with its message; so a thread in each guarded worker
looks every ``reaper_interval`` for journaled chords of its app past their deadline. A chord
whose body already finished (every task Celery waits on for it: the callback, a chain's last
step, each member of a group) is closed with that outcome; any other is dead-lettered
(callback FAILURE with ChordError, pending header tasks revoked, a Redis chord disarmed).
Unlock chords get ``unlock_max_interval`` of slack, since their own chain acts first. The same
thread runs the durable chords' reaper (one worker at a time, through its lease), so a guarded
app needs neither ``chordguard reap`` nor a beat task for them.
"""

from __future__ import annotations

import logging
import threading
import time

from ..durable.reaper import new_holder
from ..durable.reaper import reap as reap_durable
from ..model import FAILED_STATES, ChordKind
from ..store.records import FAILED, SUCCEEDED, ChordRecord
from .body import UnknownBody, body_outcome, result_tree
from .ending import dead_letter, header_inputs
from .state import Guard

logger = logging.getLogger(__name__)
PURGE_EVERY = 3600.0
FAILED_BY_CELERY = "callback FAILURE recorded by Celery"


def reap(guard: Guard, now: float | None = None) -> list[str]:
    """End this app's chords past their deadline; return the ids ended here."""
    now = now or guard.store.clock()  # deadlines are judged on the store's clock
    slack = guard.settings.unlock_max_interval + 5.0
    ended = []
    for record in guard.store.open_chords(app=guard.app.main or "", due_before=now):
        if record.kind == ChordKind.UNLOCK.value and (record.deadline_at or 0) > now - slack:
            continue
        if _end(guard, record, now):
            ended.append(record.id)
    return ended


def _end(guard: Guard, record: ChordRecord, now: float) -> bool:
    outcome = recorded_outcome(guard, record)
    if outcome == "SUCCESS":
        return guard.store.finish_chord(record.id, SUCCEEDED, "callback succeeded (reaper)")
    if outcome == "FAILURE":
        return guard.store.finish_chord(record.id, FAILED, FAILED_BY_CELERY)
    inputs, states = header_inputs(guard, record.header_ids)
    why = "deadline"
    if record.kind == ChordKind.REDIS.value and _counter_lost(guard, record):
        why = "counter_lost"
    unfinished = sum(1 for s in states.values() if s not in ("SUCCESS", "FAILURE"))
    reason = (f"{why}: {unfinished} of {len(states)} header task(s) unfinished, body "
              f"{outcome or 'unknown'}, {now - record.created_at:.0f} s after publication")
    return dead_letter(guard, record, reason, inputs, header_states=states) is not None


def recorded_outcome(guard: Guard, record: ChordRecord) -> str | None:
    """SUCCESS/FAILURE once every task Celery waits on for the body is ready, or FAILURE
    when Celery itself failed the callback (a failed header: Celery marks the callback's own
    id, which for a chord body is not a task of the body); else PENDING, or None when
    neither the body nor the callback id is known."""
    outcome = None
    if record.callback:
        try:
            outcome = body_outcome(guard.app, result_tree(record.callback)) or "PENDING"
        except UnknownBody:
            outcome = None
    if outcome in ("SUCCESS", "FAILURE"):
        return outcome
    if record.callback_id:
        state = guard.app.AsyncResult(record.callback_id).state
        if state in FAILED_STATES:
            return "FAILURE"
        return outcome or state
    return outcome


def _counter_lost(guard: Guard, record: ChordRecord) -> bool:
    backend = guard.app.backend
    key = backend.get_key_for_group(record.id, ".s")
    return not backend.client.exists(key)


def start(guard: Guard) -> threading.Thread:
    """Run ``reap`` every ``reaper_interval`` (and purge old records hourly) in a thread."""

    def loop() -> None:
        last_purge = 0.0
        holder, lease = new_holder(), max(3 * guard.settings.reaper_interval, 10.0)
        while True:
            time.sleep(guard.settings.reaper_interval)
            try:
                durable = reap_durable(guard.app, holder=holder, lease=lease)
                ended = reap(guard) + list(durable.failed)
                if ended:
                    logger.warning("chordguard: reaper ended %d chord(s): %s", len(ended),
                                   ", ".join(ended))
                if time.monotonic() - last_purge > PURGE_EVERY:
                    guard.store.purge()
                    last_purge = time.monotonic()
            except Exception:
                logger.exception("chordguard: reaper pass failed")

    thread = threading.Thread(target=loop, name="chordguard-reaper", daemon=True)
    thread.start()
    return thread
