"""The monitor's Python API: the seed guide's functions, done right."""

from __future__ import annotations

from collections import Counter
from typing import Any

from celery import Celery

from .collect import collect
from .model import Chord, ChordKind, Snapshot


def get_active_chord_unlocks(app: Celery) -> list[Chord]:
    """In-flight chords joined by ``celery.chord_unlock``, with every unlock copy seen."""
    return [c for c in collect(app).chords if c.kind is ChordKind.UNLOCK]


def stuck_chords(snapshot: Snapshot) -> list[Chord]:
    """The chords of a snapshot with a blocking diagnosis (``stuck`` included)."""
    return [c for c in snapshot.chords if c.blocking]


def check_stuck_chords(app: Celery, max_runtime_hours: float) -> list[Chord]:
    """Chords idle longer than ``max_runtime_hours`` or with a blocking diagnosis."""
    return stuck_chords(collect(app, stuck_after_hours=max_runtime_hours))


def health_check(app: Celery, max_runtime_hours: float = 1.0) -> dict[str, Any]:
    """Counts of in-flight and stuck chords and ``status``: ``"healthy"`` or ``"unhealthy"``.

    A source that did not answer makes the cluster unhealthy too: we cannot vouch for it.
    """
    return health_from(collect(app, stuck_after_hours=max_runtime_hours))


def health_from(snapshot: Snapshot) -> dict[str, Any]:
    """The ``health_check`` dictionary for an existing snapshot."""
    stuck = stuck_chords(snapshot)
    failed_sources = [s.name for s in snapshot.sources if not s.ok]
    diagnoses = Counter(code for chord in snapshot.chords for code in chord.codes)
    breakers = snapshot.facts.breakers
    tripped = [name for name, state in breakers.items() if state != "closed"]
    return {
        "status": "unhealthy" if stuck or failed_sources or tripped else "healthy",
        "celery_version": snapshot.celery_version,
        "in_flight_chords": len(snapshot.chords),
        "active_chord_unlocks": sum(1 for c in snapshot.chords if c.kind is ChordKind.UNLOCK),
        "stuck_chords": len(stuck),
        "by_kind": dict(Counter(c.kind.value for c in snapshot.chords)),
        "diagnoses": dict(diagnoses),
        "sources_failed": failed_sources,
        "breakers": dict(breakers),  # guard's circuit breakers by callback (journal source)
    }
