"""Finished header parts, buffered in the worker and written to the journal in batches.

A header task's completion costs one dict append on the task's path; a daemon thread per
process writes the batch every ``flush_interval``. A SIGKILL loses at most one interval of
progress counters, never a chord's record or its terminal state (those are written at once).
"""

from __future__ import annotations

import logging
import os
import threading

from ..store import Store
from ..store.records import PartUpdate

logger = logging.getLogger(__name__)
MAX_BATCH = 5000


class PartBuffer:
    """Collects PartUpdates; a background thread flushes them to ``store``."""

    def __init__(self, store: Store, interval: float) -> None:
        self.store, self.interval = store, interval
        self._pending: list[PartUpdate] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid: int | None = None

    def add(self, update: PartUpdate) -> None:
        if self._pid != os.getpid():
            self._start()
        with self._lock:
            self._pending.append(update)
            full = len(self._pending) >= MAX_BATCH
        if full:
            self._wake.set()

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if batch:
            try:
                self.store.record_parts(batch)
            except Exception:  # the journal must never break the user's tasks
                logger.exception("chordguard: could not journal %d finished part(s)", len(batch))

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._pending = []  # a forked child does not inherit its parent's batch
        threading.Thread(target=self._run, name="chordguard-parts", daemon=True).start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()
