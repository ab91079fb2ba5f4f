"""chordguard: make Celery chords safe to run in production.

The public, typed API. Everything not re-exported here is private.
"""

from .collect import collect
from .errors import ChordguardError, ConfigurationError, UnknownChordError, UnreachableError
from .model import (
    Chord,
    ChordKind,
    Diagnosis,
    Duration,
    HeaderPart,
    Severity,
    Snapshot,
)
from .monitor import check_stuck_chords, get_active_chord_unlocks, health_check

__all__ = [
    "Chord",
    "ChordKind",
    "ChordguardError",
    "ConfigurationError",
    "Diagnosis",
    "Duration",
    "HeaderPart",
    "Severity",
    "Snapshot",
    "UnknownChordError",
    "UnreachableError",
    "check_stuck_chords",
    "collect",
    "get_active_chord_unlocks",
    "health_check",
]
