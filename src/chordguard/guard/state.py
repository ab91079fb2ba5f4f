"""The guard installed in one app: its settings, store and part buffer."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery

from .._urls import mask_url
from ..config import GUARD_ATTRIBUTE, Settings
from ..coordination import kind_of
from ..model import ChordKind
from ..store import Store
from .body_watch import BodyWatch
from .parts import PartBuffer

ATTRIBUTE = GUARD_ATTRIBUTE


@dataclass
class Guard:
    """What ``install(app)`` set up; found again with ``guard_of(app)``."""

    app: Celery
    settings: Settings
    store: Store
    parts: PartBuffer
    bodies: BodyWatch
    _kind: ChordKind | None = None

    @property
    def kind(self) -> ChordKind:
        """How this app's backend joins chords, read on first use (not at ``install``: in a
        Django project the backend may be made only after ``django.setup()``)."""
        if self._kind is None:
            kind = kind_of(self.app)  # None: cannot tell yet (not cached)
            if kind is None:
                return ChordKind.UNLOCK
            self._kind = kind
        return self._kind

    def __repr__(self) -> str:  # never print the store's password, never make the backend
        kind = self._kind.value if self._kind is not None else "?"
        return (f"Guard(app={self.app.main!r}, kind={kind}, "
                f"store={mask_url(self.settings.store)!r}, deadline={self.settings.deadline:g})")


def guard_of(app: Celery) -> Guard | None:
    """The guard installed in ``app``, or None."""
    return app.__dict__.get(ATTRIBUTE)
