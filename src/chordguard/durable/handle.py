"""The handle ``durable_chord`` returns: id, state, progress, ``get()``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from kombu.utils.json import loads

from ..config import store_url
from ..errors import DurableChordFailed, UnknownChordError
from ..store import open_store
from ..store.records import FINAL, Barrier, BarrierState
from .actions import fail_durable_chord


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    failed: int


class DurableChord:
    """A durable chord, looked up in its store on every call (no state cached here)."""

    def __init__(self, app: Celery, chord_id: str, callback_id: str | None = None,
                 store: str | None = None) -> None:
        self.app, self.id, self.store = app, chord_id, store
        self.callback_id = callback_id

    def __repr__(self) -> str:
        return f"<DurableChord {self.id}>"

    def barrier(self) -> Barrier:
        barrier = open_store(store_url(self.app, self.store)).barrier(self.id)
        if barrier is None:
            raise UnknownChordError(self.id)
        return barrier

    @property
    def state(self) -> str:
        """``waiting``, ``dispatching``, ``dispatched``, ``succeeded`` or ``failed``."""
        return self.barrier().state.value

    @property
    def progress(self) -> Progress:
        barrier = self.barrier()
        return Progress(barrier.done, barrier.total, barrier.failed)

    def ready(self) -> bool:
        return self.barrier().state in FINAL

    def get(self, timeout: float | None = None, interval: float = 0.05) -> Any:
        """The callback's return value once it has run.

        Raises DurableChordFailed if the chord failed, celery's TimeoutError after
        ``timeout`` seconds. A result too large or not JSON-serialisable to keep in the
        barrier is read from the result backend.
        """
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            barrier = self.barrier()
            if barrier.state is BarrierState.SUCCEEDED:
                if barrier.outcome is not None:
                    return loads(barrier.outcome)
                return self.app.AsyncResult(barrier.callback_id).get(
                    timeout=None if end is None else max(0.1, end - time.monotonic()))
            if barrier.state is BarrierState.FAILED:
                raise DurableChordFailed(self.id, barrier.reason or "unknown reason")
            if end is not None and time.monotonic() >= end:
                raise CeleryTimeoutError(f"durable chord {self.id} still {barrier.state.value} "
                                         f"after {timeout:g} s")
            time.sleep(interval)

    def fail(self, reason: str = "failed by request") -> bool:
        """Fail the chord now (see ``fail_durable_chord``); False if it had already ended."""
        return fail_durable_chord(self.app, self.id, reason, store=self.store) is not None
