"""The store interface the guard writes to and the monitor and CLI read from.

Implementations: ``sql_store.SqlStore`` (SQLite file by default, PostgreSQL) and
``redis_store.RedisStore``. Every write that decides who ends a chord, who polls it or who
runs its callback is a compare-and-set, so concurrent workers agree.
"""

from __future__ import annotations

import functools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

from .connections import is_redis
from .records import Breaker, ChordRecord, DeadLetter, PartUpdate

DEFAULT_RETENTION = 30 * 86400.0


class Store(ABC):
    """Journal, finished parts, dead letters, unlock leases, run-once claims, breakers."""

    url: str
    retention: float = DEFAULT_RETENTION  # seconds an ended chord is kept

    # journal
    @abstractmethod
    def record_chord(self, record: ChordRecord) -> None:
        """Insert ``record`` unless a chord with its id is already journaled."""

    @abstractmethod
    def record_parts(self, updates: list[PartUpdate]) -> None:
        """Count finished header parts (batched) and remember each one's state."""

    @abstractmethod
    def chord(self, chord_id: str) -> ChordRecord | None: ...

    @abstractmethod
    def parts(self, chord_id: str) -> dict[str, str]:
        """Finished header parts of a chord: task id -> state."""

    @abstractmethod
    def open_chords(self, app: str | None = None, due_before: float | None = None,
                    limit: int = 10000) -> list[ChordRecord]:
        """Chords not ended yet (of ``app``; with deadline before ``due_before``)."""

    @abstractmethod
    def finish_chord(self, chord_id: str, state: str, reason: str) -> bool:
        """End an open chord; False when it had already ended (someone else won)."""

    @abstractmethod
    def count(self, chord_id: str, name: str, n: int = 1) -> None:
        """Add ``n`` to a chord's ``polls`` or ``duplicates`` counter."""

    # unlock leases
    @abstractmethod
    def swap_lease(self, chord_id: str, expect: str | None, new: str, ttl: float) -> bool:
        """Hand the chord's unlock lease from token ``expect`` (None: no lease) to ``new``."""

    @abstractmethod
    def lease(self, chord_id: str) -> str | None: ...

    # run-once claims
    @abstractmethod
    def claim(self, key: str, holder: str) -> str | None:
        """Take ``key`` for ``holder``; return None on success, else the current holder."""

    # dead letters
    @abstractmethod
    def add_dead_letter(self, letter: DeadLetter) -> None: ...

    @abstractmethod
    def dead_letters(self, state: str | None = None, limit: int = 1000) -> list[DeadLetter]:
        """Newest first."""

    @abstractmethod
    def dead_letter(self, letter_id: str) -> DeadLetter | None:
        """By id, or by a unique id prefix."""

    @abstractmethod
    def settle_dead_letter(self, letter_id: str, state: str, note: str) -> bool:
        """Move a ``dead`` letter to ``state`` with ``note``; False if it was not dead."""

    # circuit breakers
    @abstractmethod
    def breaker(self, name: str) -> Breaker: ...

    @abstractmethod
    def breakers(self) -> list[Breaker]: ...

    @abstractmethod
    def _replace_breaker(self, old: Breaker, new: Breaker) -> bool:
        """Write ``new`` if the stored breaker still has ``old.version``."""

    def update_breaker(self, name: str, change: Callable[[Breaker], Breaker]) -> Breaker:
        """Apply ``change`` atomically (optimistic retry) and return the stored result."""
        while True:
            old = self.breaker(name)
            new = change(Breaker(**{**old.__dict__, "failures": list(old.failures)}))
            if new == old:
                return old
            new.version = old.version + 1
            if self._replace_breaker(old, new):
                return new

    # retention
    @abstractmethod
    def purge(self, now: float | None = None) -> int:
        """Delete chords ended longer than ``retention`` ago, and settled dead letters."""

    def describe(self) -> str:
        from ..urls import mask_url

        return mask_url(self.url)


def now() -> float:
    return time.time()


@functools.cache
def open_store(url: str, retention: float = DEFAULT_RETENTION) -> Store:
    """The store for ``url`` (one per process and URL); tables are created on first use."""
    if is_redis(url):
        from .redis.store import RedisStore

        store: Store = RedisStore(url)
    else:
        from .sql.store import SqlStore

        store = SqlStore(url)
    store.retention = retention
    return store
