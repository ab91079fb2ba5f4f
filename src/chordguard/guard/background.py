"""Work taken off a task's path: a daemon thread per worker process runs ``flush`` every
``interval`` (sooner when woken). A forked child starts its own thread on first use and
drops what its parent had queued."""

from __future__ import annotations

import os
import threading


class PeriodicFlush:
    """Subclasses queue under ``lock`` after ``started()`` and implement ``flush``."""

    def __init__(self, interval: float, name: str) -> None:
        self.interval, self.name = interval, name
        self.lock = threading.Lock()
        self._wake = threading.Event()
        self._pid: int | None = None

    def started(self) -> None:
        """Make sure this process's thread runs (``reset`` first, in a new process)."""
        if self._pid == os.getpid():
            return
        with self.lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self.reset()
        threading.Thread(target=self._run, name=self.name, daemon=True).start()

    def wake(self) -> None:
        self._wake.set()

    def reset(self) -> None:
        """Forget what was queued (called under ``lock`` in a new process)."""

    def flush(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()
