"""The monitor's Python API: the seed guide's functions, done right."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import celery
from celery import Celery

from ..errors import CannotVouchError, UnknownChordError
from ..model import Chord, ChordKind, Snapshot
from .collect import cluster_facts, collect
from .diagnose import AFTER_END
from .sources import durable, journal, unlock_chords

RELOOK_PAUSE = 0.1  # seconds before a second look for polled chords (a transit is ms)


def get_active_chord_unlocks(app: Celery) -> list[Chord]:
    """In-flight chords joined by ``celery.chord_unlock``, with every unlock copy seen."""
    return [c for c in collect(app).chords if c.kind is ChordKind.UNLOCK]


def find_chord(app: Celery, chord_id: str) -> tuple[Snapshot, Chord]:
    """The chord whose group id or callback id is ``chord_id``, and the snapshot it is in.

    A polled chord is seen only through its chord_unlock message, which can be in transit
    (between a retry's publish and a worker's receipt, milliseconds) at the instant of a look;
    so when chord_unlock joins this app's chords, a chord not seen is looked for once more,
    ``RELOOK_PAUSE`` after the first look ended, before it is called unknown. A chord that has
    ended is found in the guard's journal or the durable store (``Chord.ended`` tells when,
    how and why) without waiting. Raises UnknownChordError, or CannotVouchError when it
    is not seen and the view is not whole (``verdict`` unknown).
    """
    for source in (journal, durable):
        try:
            over = source.ended(app, chord_id)
        except Exception:  # noqa: BLE001 - the store is down: collect's probe names it
            continue
        if over is not None:
            facts = cluster_facts(app)
            over.diagnoses = [d for rule in AFTER_END if (d := rule(over, facts)) is not None]
            return Snapshot(taken_at=datetime.now(UTC), celery_version=celery.__version__,
                            facts=facts, chords=[over]), over
    snapshot, (chord,) = find_each(app, collect(app), [chord_id])
    if chord is not None:
        return snapshot, chord
    status, why = verdict(snapshot)
    if status == UNKNOWN:
        raise CannotVouchError(f"chord {chord_id} not seen, and the view cannot vouch "
                               f"that it is not there: {why}")
    raise UnknownChordError(chord_id)


def find_each(app: Celery, snapshot: Snapshot, chord_ids: list[str],
              stuck_after_hours: float | None = None,
              ) -> tuple[Snapshot, list[Chord | None]]:
    """Each of ``chord_ids`` (group or callback id) in ``snapshot``, None where not seen. When
    chord_unlock joins this app's chords, those not seen are looked for once more,
    ``RELOOK_PAUSE`` later (their unlock message may have been in transit, as ``find_chord``
    explains); the snapshot returned is the last one taken."""
    found = [snapshot.find(i) for i in chord_ids]
    if all(found) or not unlock_chords.SOURCE.applies(app):
        return snapshot, found
    time.sleep(RELOOK_PAUSE)
    again = collect(app, stuck_after_hours=stuck_after_hours)
    return again, [chord or again.find(i) for chord, i in zip(found, chord_ids, strict=True)]


def look_twice(app: Celery, stuck_after_hours: float | None = None) -> Snapshot:
    """A bulk action's view: ``collect``, and when chord_unlock joins this app's chords, the
    chords a second look ``RELOOK_PAUSE`` later sees that the first missed (an unlock message
    in transit, as ``find_chord`` explains). A chord only the first look saw stays: it was
    there a moment ago, as in a single look."""
    snapshot = collect(app, stuck_after_hours=stuck_after_hours)
    if not unlock_chords.SOURCE.applies(app):
        return snapshot
    time.sleep(RELOOK_PAUSE)
    again = collect(app, stuck_after_hours=stuck_after_hours)
    seen = {chord.id for chord in snapshot.chords}
    snapshot.chords += [chord for chord in again.chords if chord.id not in seen]
    return snapshot


def stuck_chords(snapshot: Snapshot) -> list[Chord]:
    """The chords of a snapshot with a blocking diagnosis (``stuck`` included)."""
    return [c for c in snapshot.chords if c.blocking]


def check_stuck_chords(app: Celery, max_runtime_hours: float) -> list[Chord]:
    """Chords idle longer than ``max_runtime_hours`` or with a blocking diagnosis."""
    return stuck_chords(collect(app, stuck_after_hours=max_runtime_hours))


HEALTHY, UNHEALTHY, UNKNOWN = "healthy", "unhealthy", "unknown"
CHORD_SOURCES = ("redis_chords", "unlock", "django_chords")  # one reads any backend's chords


def health_check(app: Celery, max_runtime_hours: float = 1.0) -> dict[str, Any]:
    """Counts of in-flight and stuck chords, ``status`` and a one-line ``reason``.

    ``status`` is ``"healthy"``, ``"unhealthy"`` (a stuck chord or an open breaker) or
    ``"unknown"``: a source failed, a chord has parts the look could not account for
    (``Chord.unseen``), chord_unlock chords are joined and the view is incomplete, or no
    source reads the chords of the app's result backend. Never "healthy" on what it could not see.
    """
    return health_from(collect(app, stuck_after_hours=max_runtime_hours))


def verdict(snapshot: Snapshot) -> tuple[str, str]:
    """``(status, reason)`` for a snapshot (see ``health_check``)."""
    stuck = stuck_chords(snapshot)
    tripped = sorted(n for n, state in snapshot.facts.breakers.items() if state != "closed")
    if stuck or tripped:
        parts = [f"{len(stuck)} stuck chord(s)"] if stuck else []
        parts += [f"circuit open for {', '.join(tripped)}"] if tripped else []
        return UNHEALTHY, "; ".join(parts)
    unseen = blind_spot(snapshot)
    if unseen:
        return UNKNOWN, unseen
    return HEALTHY, f"{len(snapshot.chords)} chord(s) in flight, none stuck"


def blind_spot(snapshot: Snapshot) -> str | None:
    """What the snapshot could not see that a verdict needs (a place or source that failed,
    an incomplete look, a backend no source reads), or None when it saw it all."""
    failed = [f"{s.name}: {s.detail}" for s in snapshot.sources if not s.ok]
    if failed:
        return "cannot read " + "; ".join(failed)
    applied = {s.name for s in snapshot.sources}
    if not applied & set(CHORD_SOURCES):
        why = snapshot.facts.unread_join
        return "no source reads the chords of this app's result backend" + \
            (f" ({why})" if why else "")
    if applied & {"unlock", "django_chords"} and not snapshot.facts.holdings_complete:
        return ("incomplete view: a worker did not answer or a queue was not read, and "
                "chord_unlock and django-db chords are seen only through their messages")
    if resting := [c for c in snapshot.chords if c.unseen]:
        return (f"{len(resting)} chord(s) rest on what the look could not see, first "
                f"{resting[0].id}: {resting[0].unseen}")
    return None


def health_from(snapshot: Snapshot) -> dict[str, Any]:
    """The ``health_check`` dictionary for an existing snapshot."""
    status, reason = verdict(snapshot)
    diagnoses = Counter(code for chord in snapshot.chords for code in chord.codes)
    return {
        "status": status,
        "reason": reason,
        "celery_version": snapshot.celery_version,
        "in_flight_chords": len(snapshot.chords),
        "active_chord_unlocks": sum(1 for c in snapshot.chords if c.kind is ChordKind.UNLOCK),
        "stuck_chords": len(stuck_chords(snapshot)),
        "by_kind": dict(Counter(c.kind.value for c in snapshot.chords)),
        "diagnoses": dict(diagnoses),
        "sources_failed": [s.name for s in snapshot.sources if not s.ok],
        "breakers": dict(snapshot.facts.breakers),  # guard's circuit breakers by callback
    }
