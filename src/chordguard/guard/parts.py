"""Finished header parts, buffered in the worker and written to the journal in batches.

A header task's completion costs one list append on the task's path; a daemon thread per
process writes the batch every ``flush_interval``. A SIGKILL loses at most one interval of
progress counters, never a chord's record or its terminal state (those are written at once).
"""

from __future__ import annotations

import logging

from ..store import Store
from ..store.records import PartUpdate
from .background import PeriodicFlush

logger = logging.getLogger(__name__)
MAX_BATCH = 5000


class PartBuffer(PeriodicFlush):
    """Collects PartUpdates; a background thread flushes them to ``store``."""

    def __init__(self, store: Store, interval: float) -> None:
        super().__init__(interval, "chordguard-parts")
        self.store = store
        self._pending: list[PartUpdate] = []

    def add(self, update: PartUpdate) -> None:
        self.started()
        with self.lock:
            self._pending.append(update)
            full = len(self._pending) >= MAX_BATCH
        if full:
            self.wake()

    def reset(self) -> None:
        self._pending = []  # a forked child does not inherit its parent's batch

    def flush(self) -> None:
        with self.lock:
            batch, self._pending = self._pending, []
        if batch:
            try:
                self.store.record_parts(batch)
            except Exception:  # the journal must never break the user's tasks
                logger.exception("chordguard: could not journal %d finished part(s)", len(batch))
