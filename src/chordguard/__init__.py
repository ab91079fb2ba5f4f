"""chordguard: make Celery chords safe to run in production.

The public, typed API. Everything not re-exported here is private.
"""

from .durable import DurableChord, durable_chord, fail_durable_chord
from .errors import ChordguardError, ConfigurationError, UnknownChordError, UnreachableError
from .guard import (
    Guard,
    chord_callback,
    guard_of,
    header_task,
    install,
    split_results,
    with_deadline,
)
from .guard.periodic import setup_periodic_monitoring
from .model import (
    Chord,
    ChordKind,
    Diagnosis,
    Duration,
    HeaderPart,
    Severity,
    Snapshot,
)
from .monitor.api import check_stuck_chords, get_active_chord_unlocks, health_check
from .monitor.collect import collect

__all__ = [
    "Chord",
    "ChordKind",
    "ChordguardError",
    "Guard",
    "ConfigurationError",
    "Diagnosis",
    "Duration",
    "DurableChord",
    "HeaderPart",
    "Severity",
    "Snapshot",
    "UnknownChordError",
    "UnreachableError",
    "check_stuck_chords",
    "chord_callback",
    "collect",
    "durable_chord",
    "fail_durable_chord",
    "get_active_chord_unlocks",
    "guard_of",
    "header_task",
    "health_check",
    "install",
    "setup_periodic_monitoring",
    "split_results",
    "with_deadline",
]
