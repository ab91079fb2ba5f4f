"""The monitor's Python API: the seed guide's functions, done right."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import celery
from celery import Celery

from ..errors import UnknownChordError, UnreachableError
from ..model import Chord, ChordKind, Snapshot
from .collect import cluster_facts, collect
from .diagnose import AFTER_END
from .sources import durable, journal, unlock_chords

RELOOK_PAUSE = 0.1  # seconds before a second look for one polled chord (a transit is ms)


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
    how and why) without waiting. Raises UnknownChordError, or UnreachableError when no
    source answered.
    """
    for source in (journal, durable):
        over = source.ended(app, chord_id)
        if over is not None:
            facts = cluster_facts(app)
            over.diagnoses = [d for rule in AFTER_END if (d := rule(over, facts)) is not None]
            return Snapshot(taken_at=datetime.now(UTC), celery_version=celery.__version__,
                            facts=facts, chords=[over]), over
    looks = 2 if unlock_chords.SOURCE.applies(app) else 1
    for look in range(looks):
        if look:
            time.sleep(RELOOK_PAUSE)
        snapshot = collect(app)
        chord = snapshot.find(chord_id)
        if chord is not None:
            return snapshot, chord
        if snapshot.sources and not any(s.ok for s in snapshot.sources):
            details = "; ".join(f"{s.name}: {s.detail}" for s in snapshot.sources)
            raise UnreachableError(f"no source answered ({details})")
    raise UnknownChordError(chord_id)


def stuck_chords(snapshot: Snapshot) -> list[Chord]:
    """The chords of a snapshot with a blocking diagnosis (``stuck`` included)."""
    return [c for c in snapshot.chords if c.blocking]


def check_stuck_chords(app: Celery, max_runtime_hours: float) -> list[Chord]:
    """Chords idle longer than ``max_runtime_hours`` or with a blocking diagnosis."""
    return stuck_chords(collect(app, stuck_after_hours=max_runtime_hours))


HEALTHY, UNHEALTHY, UNKNOWN = "healthy", "unhealthy", "unknown"
CHORD_SOURCES = ("redis_chords", "unlock")  # one of them reads the chords of any backend


def health_check(app: Celery, max_runtime_hours: float = 1.0) -> dict[str, Any]:
    """Counts of in-flight and stuck chords, ``status`` and a one-line ``reason``.

    ``status`` is ``"healthy"``, ``"unhealthy"`` (a stuck chord or an open breaker) or
    ``"unknown"``: a source failed, the view is incomplete, or no source reads the chords of
    the app's result backend. Never "healthy" on what it could not see.
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
    failed = [f"{s.name}: {s.detail}" for s in snapshot.sources if not s.ok]
    if failed:
        return UNKNOWN, "source failed: " + "; ".join(failed)
    applied = {s.name for s in snapshot.sources}
    if not applied & set(CHORD_SOURCES):
        return UNKNOWN, "no source reads the chords of this app's result backend"
    looked = "unlock" in applied or any(c.kind is ChordKind.REDIS for c in snapshot.chords)
    if looked and not snapshot.facts.holdings_complete:
        return UNKNOWN, "incomplete view: a worker did not answer or a queue was not read"
    return HEALTHY, f"{len(snapshot.chords)} chord(s) in flight, none stuck"


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
