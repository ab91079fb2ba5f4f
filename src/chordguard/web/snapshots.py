"""One shared, briefly cached snapshot for every viewer, collected off the event loop.

Collection (brokers, backends, worker inspection) blocks for up to seconds, so it runs in a
worker thread, one at a time: concurrent requests wait for the same collection instead of
starting their own. A snapshot younger than ``fresh_for`` is served as it is; an older one
younger than ``stale_for`` is served at once while a new one is collected behind it; anything
older waits for the new one. A background loop refreshes every ``interval`` so the tracker
sees chords even when nobody looks.

A snapshot stays fresh at least as long as its collection took, so a slow collection (100,000
chords take seconds) is not restarted as soon as it ends: collecting takes at most about half
of the process's time, and requests are answered from the snapshot in between; and it is
served stale (not waited for) for up to twice that time when that is longer than
``stale_for``. A value replaced by a newer one is handed to ``release`` in a worker thread,
so dropping a big one does not stall the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)


T = TypeVar("T")


class SnapshotCache(Generic[T]):
    """Single-flight, stale-while-revalidate holder of the latest value of ``produce``."""

    def __init__(self, produce: Callable[[], T], fresh_for: float = 2.0,
                 stale_for: float = 30.0, interval: float = 15.0,
                 release: Callable[[T], None] | None = None) -> None:
        self._produce, self._release = produce, release
        self.fresh_for, self.stale_for, self.interval = fresh_for, stale_for, interval
        self._latest: T | None = None
        self._taken = 0.0  # monotonic time the latest collection finished
        self._took = 0.0  # seconds the latest collection took
        self._running: asyncio.Future[T] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._releasing: set[asyncio.Future[None]] = set()
        self.collections = 0

    @property
    def latest(self) -> T | None:
        """The latest value without waiting (None before the first collection)."""
        return self._latest

    async def get(self) -> T:
        """A value fresh enough to show, collecting only when needed."""
        age = time.monotonic() - self._taken
        if self._latest is not None and age <= max(self.fresh_for, self._took):
            return self._latest
        if self._latest is not None and age <= max(self.stale_for, 2 * self._took):
            self._start()
            return self._latest
        return await self.refresh()

    async def refresh(self) -> T:
        """Collect now (or join the collection already running) and return its value."""
        return await asyncio.shield(self._start())

    def _start(self) -> asyncio.Future[T]:
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._collect())
        return self._running

    async def _collect(self) -> T:
        started = time.monotonic()
        value = await asyncio.to_thread(self._produce)
        old, self._latest, self._taken = self._latest, value, time.monotonic()
        self._took = self._taken - started
        self.collections += 1
        if old is not None and self._release is not None:
            releasing = asyncio.ensure_future(asyncio.to_thread(self._release, old))
            self._releasing.add(releasing)
            releasing.add_done_callback(self._releasing.discard)
        return value

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
