"""chordguard: make Celery chords safe to run in production.

The public, typed API. Everything not re-exported here is private. Names are imported on
first use, so ``import chordguard`` (and the CLI's start-up) loads only what is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DurableChord": "durable", "durable_chord": "durable", "fail_durable_chord": "durable",
    "ChordguardError": "errors", "ConfigurationError": "errors",
    "UnknownChordError": "errors", "UnreachableError": "errors",
    "Guard": "guard", "chord_callback": "guard", "guard_of": "guard", "header_task": "guard",
    "install": "guard", "split_results": "guard", "with_deadline": "guard",
    "setup_periodic_monitoring": "guard.periodic",
    "Chord": "model", "ChordKind": "model", "Diagnosis": "model", "Duration": "model",
    "HeaderPart": "model", "Severity": "model", "Snapshot": "model",
    "check_stuck_chords": "monitor.api", "get_active_chord_unlocks": "monitor.api",
    "health_check": "monitor.api", "collect": "monitor.collect",
}

if TYPE_CHECKING:
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
    from .model import Chord, ChordKind, Diagnosis, Duration, HeaderPart, Severity, Snapshot
    from .monitor.api import check_stuck_chords, get_active_chord_unlocks, health_check
    from .monitor.collect import collect

__all__ = [
    "Chord",
    "ChordKind",
    "ChordguardError",
    "ConfigurationError",
    "Diagnosis",
    "DurableChord",
    "Duration",
    "Guard",
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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chordguard' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
