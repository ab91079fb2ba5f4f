"""One shared, briefly cached snapshot for every viewer, collected off the event loop.

Collection (brokers, backends, worker inspection) blocks for up to seconds, so it runs in a
worker thread, one at a time: concurrent requests wait for the same collection instead of
starting their own. A snapshot younger than ``fresh_for`` is served as it is; an older one
younger than ``stale_for`` is served at once while a new one is collected behind it; anything
older waits for the new one. A background loop refreshes every ``interval`` so the tracker
sees chords even when nobody looks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from ..monitor.tracker import Figures

log = logging.getLogger(__name__)


class SnapshotCache:
    """Single-flight, stale-while-revalidate holder of the latest ``Figures``."""

    def __init__(self, produce: Callable[[], Figures], fresh_for: float = 2.0,
                 stale_for: float = 30.0, interval: float = 15.0) -> None:
        self._produce = produce
        self.fresh_for, self.stale_for, self.interval = fresh_for, stale_for, interval
        self._latest: Figures | None = None
        self._taken = 0.0  # monotonic time the latest collection finished
        self._running: asyncio.Future[Figures] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self.collections = 0

    @property
    def latest(self) -> Figures | None:
        """The latest figures without waiting (None before the first collection)."""
        return self._latest

    async def get(self) -> Figures:
        """Figures fresh enough to show, collecting only when needed."""
        age = time.monotonic() - self._taken
        if self._latest is not None and age <= self.fresh_for:
            return self._latest
        if self._latest is not None and age <= self.stale_for:
            self._start()
            return self._latest
        return await self.refresh()

    async def refresh(self) -> Figures:
        """Collect now (or join the collection already running) and return its figures."""
        return await asyncio.shield(self._start())

    def _start(self) -> asyncio.Future[Figures]:
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._collect())
        return self._running

    async def _collect(self) -> Figures:
        figures = await asyncio.to_thread(self._produce)
        self._latest, self._taken = figures, time.monotonic()
        self.collections += 1
        return figures

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a failing collection must not end the loop
                log.exception("snapshot collection failed")
            await asyncio.sleep(self.interval)

    def start_background(self) -> None:
        self._loop_task = asyncio.ensure_future(self._loop())

    async def stop_background(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
