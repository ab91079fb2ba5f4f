"""The guard installed in one app: its settings, store and part buffer."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery

from ..model import ChordKind
from ..store.base import Store
from .parts import PartBuffer
from .settings import GuardSettings

ATTRIBUTE = "_chordguard_guard"
STAMP = "chordguard"  # message header on a guarded chord's callback (and its unlock task)


@dataclass
class Guard:
    """What ``install(app)`` set up; found again with ``guard_of(app)``."""

    app: Celery
    settings: GuardSettings
    store: Store
    parts: PartBuffer
    kind: ChordKind


def guard_of(app: Celery) -> Guard | None:
    """The guard installed in ``app``, or None."""
    return app.__dict__.get(ATTRIBUTE)
