"""One snapshot as the dashboard serves it, indexed once in the collecting thread.

Every ``/api/chords`` page carries the health verdict, and a filter walks every chord: at
100,000 chords each such pass costs tens to hundreds of milliseconds. A ``SnapshotView`` makes
the passes that depend only on the snapshot once, off the event loop (the verdict, each
chord's filter fields, an id index), and remembers the matches of the latest filters, so
paging through one filter walks the chords once per snapshot.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ..model import Chord
from ..monitor.api import health_from
from ..monitor.filters import ChordFilter, chord_fields
from ..monitor.tracker import Figures

RELEASE_SLICE = 2000  # chords freed at a time by ``release`` (a few milliseconds' work)


class SnapshotView:
    """``Figures`` plus its health, filter fields and id index. ``matching`` and ``find``
    are for one thread (the event loop)."""

    def __init__(self, figures: Figures, remembered: int = 16) -> None:
        self.figures = figures
        chords = figures.snapshot.chords
        self.health: dict[str, Any] = health_from(figures.snapshot)
        self._fields = [chord_fields(c) for c in chords]
        self._ids: dict[str, Chord] = {}
        for chord in reversed(chords):  # the first chord holding an id wins, as in find()
            if chord.callback_id:
                self._ids[chord.callback_id] = chord
            self._ids[chord.id] = chord
        self._matches: OrderedDict[ChordFilter, list[Chord]] = OrderedDict()
        self._remembered = remembered

    @property
    def chords(self) -> list[Chord]:
        return self.figures.snapshot.chords

    def matching(self, wanted: ChordFilter) -> list[Chord]:
        """The chords ``wanted`` matches, in the snapshot's order (oldest first)."""
        if wanted.empty:
            return self.chords
        found = self._matches.get(wanted)
        if found is None:
            found = [c for c, f in zip(self.chords, self._fields, strict=True)
                     if wanted.matches(f)]
            self._matches[wanted] = found
            while len(self._matches) > self._remembered:
                self._matches.popitem(last=False)
        else:
            self._matches.move_to_end(wanted)
        return found

    def find(self, chord_or_callback_id: str) -> Chord | None:
        """As ``Snapshot.find``, by index."""
        return self._ids.get(chord_or_callback_id)

    def release(self) -> None:
        """Free the chords a slice at a time, once a newer view has replaced this one.

        Freeing 100,000 chords at once holds the GIL for about a third of a second, a stall
        of every request; a slice at a time lets the event loop run in between. Requests
        read a view's chords only before their first ``await``, so none reads them now.
        """
        self._matches.clear()
        self._ids.clear()
        self._fields.clear()
        chords = self.chords
        while chords:
            del chords[-RELEASE_SLICE:]
