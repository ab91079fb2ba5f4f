"""The guard's journal: chords as recorded when they were published, any kind.

It knows what Celery does not keep: the exact creation time (so age is exact, not a lower
bound), every header task id and the callback of Redis chords too, the chord's deadline and
kind. Chords whose callback already finished in the result backend are left out (the
journal's terminal write may lag, or the callback ran on an unguarded worker). It also reads
the circuit breakers into ``facts.breakers``.

Applies when a store is configured: ``chordguard_store`` in the app's configuration (set by
``chordguard.install``) or ``CHORDGUARD_STORE`` in the environment.
"""

from __future__ import annotations

from datetime import UTC, datetime

from celery import Celery
from celery.states import READY_STATES

from ...config import configured_store, store_url
from ...model import Chord, ChordKind, ClusterFacts, Duration, HeaderPart
from ...store import open_store
from ...store.records import ChordRecord
from . import Source
from .holdings import Holdings
from .read_backend import read_backend
from .results import read_states

NAME = "journal"
URL_APP = "chordguard-monitor"  # appctx's app built from URLs: it shows every app's chords
CALLBACK_CHECK_LIMIT = 2000
DEAD_LETTER_LOOKUP = 10_000  # newest letters searched for an ended chord's letter


def applies(app: Celery) -> bool:
    return configured_store(app) is not None


def read(app: Celery, facts: ClusterFacts, holdings: Holdings) -> list[Chord]:
    store = open_store(store_url(app))
    facts.breakers = {b.name: b.state for b in store.breakers()}
    records = store.open_chords(app=None if app.main == URL_APP else app.main)
    finished = _finished_callbacks(app, [r.callback_id for r in records if r.callback_id])
    now = facts.now.timestamp()
    return [to_chord(r, now) for r in records if r.callback_id not in finished]


def to_chord(record: ChordRecord, now: float) -> Chord:
    """The model of one journal record (pure)."""
    try:
        kind = ChordKind(record.kind)
    except ValueError:
        kind = ChordKind.UNLOCK
    created = datetime.fromtimestamp(record.created_at, UTC)
    last = record.last_progress_at or record.created_at
    chord = Chord(id=record.id, kind=kind, callback_name=record.callback_name,
                  callback_id=record.callback_id, total=len(record.header_ids) or None,
                  done=record.done, failed=record.failed, created_at=created,
                  age=Duration(max(0.0, now - record.created_at),
                               "journal: time the chord was published"),
                  idle=Duration(max(0.0, now - last),
                                "journal: last finished header part" if record.last_progress_at
                                else "journal: no part finished since publication"),
                  header=[HeaderPart(task_id=t, index=i) for i, t in
                          enumerate(record.header_ids)],
                  callback_signature=record.callback, sources=[NAME])
    if record.deadline_at:
        chord.deadline_at = datetime.fromtimestamp(record.deadline_at, UTC)
    chord.evidence.update({"created_at": "journal (chordguard store), exact",
                           "header": "journal: every header task id, recorded at publication",
                           "callback": "journal: recorded at publication"})
    if record.callback_duplicates:
        chord.callback_duplicates = record.callback_duplicates
        chord.evidence["callback deliveries"] = (
            f"journal: {record.callback_duplicates} extra delivery(ies) stopped by the "
            "run-once claim")
    if record.polls or record.duplicates:
        chord.evidence["unlock polls"] = (f"journal: {record.polls} guarded poll(s), "
                                          f"{record.duplicates} duplicate chain(s) stopped")
    return chord


def _finished_callbacks(app: Celery, callback_ids: list[str]) -> set[str]:
    """The callbacks among ``callback_ids`` that the result backend says are finished."""
    if not callback_ids or len(callback_ids) > CALLBACK_CHECK_LIMIT:
        return set()
    backend = read_backend(app)
    if hasattr(backend, "mget") and hasattr(backend, "get_key_for_task"):
        raw = backend.mget([backend.get_key_for_task(i) for i in callback_ids])
        metas = [backend.decode_result(r) if r else {} for r in raw]
        return {i for i, m in zip(callback_ids, metas, strict=True)
                if m.get("status") in READY_STATES}
    states, _ = read_states(app, callback_ids)  # a database: one SELECT, nothing unpickled
    return {i for i, known in states.items() if known.state in READY_STATES}


def ended(app: Celery, chord_id: str) -> Chord | None:
    """The journal's story of ``chord_id`` (a group id) if it has ended, else None: when it
    ended, how, why, and its dead letter."""
    if not applies(app):
        return None
    store = open_store(store_url(app))
    record = store.chord(chord_id)
    if record is None or record.open:
        return None
    chord = to_chord(record, record.ended_at or record.created_at)
    chord.age = chord.idle = None  # ages of an ended chord would only mislead
    when = datetime.fromtimestamp(record.ended_at, UTC).isoformat() if record.ended_at else "?"
    letter = next((d for d in store.dead_letters(limit=DEAD_LETTER_LOOKUP)
                   if d.chord_id == record.id), None)
    chord.ended = (f"{record.state} at {when}: {record.reason or 'no reason recorded'}"
                   + (f"; dead letter {letter.id} ({letter.state})" if letter else ""))
    chord.evidence["ended"] = "journal: terminal state written when the chord ended"
    return chord


SOURCE = Source(NAME, applies, read, needs=("store", "backend"))
