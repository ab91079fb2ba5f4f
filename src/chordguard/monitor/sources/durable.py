"""Durable chords: in-flight barriers of this app read from chordguard's store — durable_chord's
and the Celery chords the store joins (``fan_in="store"``: kind ``store``).

Every figure is exact: the barrier keeps its creation time, its last progress, its deadline
and its counts. Header parts are listed for chords of at most ``LIST_PARTS`` parts.
"""

from __future__ import annotations

from datetime import UTC, datetime

from celery import Celery
from kombu.utils.json import loads

from ...config import configured_store, default_store_exists, store_url
from ...model import Chord, ChordKind, ClusterFacts, Duration, HeaderPart
from ...store import Barriers, open_store
from ...store.records import FINAL, Barrier, Policy
from . import Source
from .holdings import Holdings

NAME = "durable"
LIST_PARTS = 200


def applies(app: Celery) -> bool:
    """A store is configured, or the default SQLite file exists here."""
    return configured_store(app) is not None or default_store_exists()


def read(app: Celery, facts: ClusterFacts, holdings: Holdings) -> list[Chord]:
    store = open_store(store_url(app))
    now = facts.now.timestamp()
    return [to_chord(store, b, now) for b in store.barriers_in_flight(app.main or "")]


def to_chord(store: Barriers, barrier: Barrier, now: float) -> Chord:
    kind = ChordKind.STORE if barrier.policy is Policy.CELERY else ChordKind.DURABLE
    chord = Chord(id=barrier.id, kind=kind, sources=[NAME],
                  callback_name=barrier.callback_name, callback_id=barrier.callback_id,
                  callback_state=_callback_state(barrier), total=barrier.total,
                  done=barrier.done, failed=barrier.failed,
                  created_at=_when(barrier.created_at), deadline_at=_when(barrier.deadline_at),
                  callback_signature=barrier.callback)
    chord.age = Duration(max(0.0, now - barrier.created_at), "exact: barrier created_at")
    chord.idle = Duration(max(0.0, now - barrier.updated_at),
                          "exact: since the barrier last changed (a part finished)")
    chord.evidence.update({
        "total": f"{barrier.total} header parts (barrier)",
        "done": f"{barrier.done} parts recorded in the barrier",
        "state": f"barrier {barrier.state.value}; on header failure: {barrier.policy.value}",
        "deadline": f"{_when(barrier.deadline_at).isoformat()}; stall timeout "
                    f"{barrier.stall_seconds:g} s",
    })
    if barrier.total <= LIST_PARTS:
        chord.header = _parts(store, barrier)
    return chord


def _parts(store: Barriers, barrier: Barrier) -> list[HeaderPart]:
    full = store.barrier(barrier.id, with_header_ids=True)
    ids = full.header_ids if full else []
    envelopes = store.envelopes(barrier.id, 0, barrier.total)
    parts = []
    for index, (task_id, envelope) in enumerate(zip(ids, envelopes, strict=False)):
        value = loads(envelope) if envelope else None
        parts.append(HeaderPart(task_id=task_id, index=index, state=_part_state(value, barrier),
                                result=None if value is None else value.get("result"),
                                traceback=None if value is None else value.get("error")))
    return parts


def _part_state(envelope: dict | None, barrier: Barrier) -> str:
    if envelope is None:
        return "PENDING"
    if envelope.get("status") != "failed":
        return "SUCCESS"
    # under "continue" a failed part is expected input for the callback, not a broken chord
    return "FAILED_CONTINUED" if barrier.policy is Policy.CONTINUE else "FAILURE"


def _callback_state(barrier: Barrier) -> str:
    return {"waiting": "PENDING", "dispatching": "PENDING", "dispatched": "SENT"}.get(
        barrier.state.value, barrier.state.value.upper())


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def ended(app: Celery, chord_id: str) -> Chord | None:
    """The barrier's story of durable chord ``chord_id`` if it has ended, else None."""
    if not applies(app):
        return None
    store = open_store(store_url(app))
    barrier = store.barrier(chord_id)
    if barrier is None or barrier.state not in FINAL:
        return None
    chord = to_chord(store, barrier, barrier.finished_at or barrier.updated_at)
    chord.age = chord.idle = None
    when = _when(barrier.finished_at or barrier.updated_at).isoformat()
    chord.ended = f"{barrier.state.value} at {when}: {barrier.reason or 'callback finished'}"
    return chord


SOURCE = Source(NAME, applies, read, needs=("store",))
