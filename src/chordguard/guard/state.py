"""The guard installed in one app: its settings, store and part buffer."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery

from .._urls import mask_url
from ..config import GUARD_ATTRIBUTE, Settings
from ..model import ChordKind
from ..store import Store
from .parts import PartBuffer

ATTRIBUTE = GUARD_ATTRIBUTE


@dataclass
class Guard:
    """What ``install(app)`` set up; found again with ``guard_of(app)``."""

    app: Celery
    settings: Settings
    store: Store
    parts: PartBuffer
    kind: ChordKind

    def __repr__(self) -> str:  # never print the store's password
        return (f"Guard(app={self.app.main!r}, kind={self.kind.value}, "
                f"store={mask_url(self.settings.store)!r}, deadline={self.settings.deadline:g})")


def guard_of(app: Celery) -> Guard | None:
    """The guard installed in ``app``, or None."""
    return app.__dict__.get(ATTRIBUTE)
