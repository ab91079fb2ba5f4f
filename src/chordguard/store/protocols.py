"""The store interface: five small protocols, one object per store URL implementing them all.

- ``Journal``: every guarded chord from publication to its end, its finished parts;
- ``Barriers``: durable chords' barriers, counted down one atomic operation at a time;
- ``Leases``: named leases behind one compare-and-set primitive (``swap_lease``), which
  serves the unlock lease, run-once claims and the durable reaper's lock;
- ``DeadLetters``: chords that could not end well, with their inputs, for replay or drop;
- ``Breakers``: one circuit breaker per callback task name.

Every write that decides who ends a chord, who polls it, who runs its callback or who
reaps is a compare-and-set in one store operation, so concurrent workers agree. Backends
(``sql``, ``redis``, ``memory``) subclass ``Store``, which supplies the few methods built
on the others; ``tests/contract`` is the suite each one passes.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Protocol

from .records import (
    CLAIM_GRACE,
    IN_FLIGHT,
    Barrier,
    BarrierState,
    Breaker,
    ChordRecord,
    Completion,
    DeadLetter,
    PartUpdate,
)

DEFAULT_RETENTION = 30 * 86400.0
COUNTERS = ("polls", "duplicates", "callback_duplicates")  # ChordRecord's journal counters


class Journal(Protocol):
    """Guarded chords: one record each, finished parts counted once, ended once."""

    retention: float  # seconds an ended chord (and a run-once claim) is kept

    @abstractmethod
    def record_chord(self, record: ChordRecord) -> None:
        """Insert ``record`` unless a chord with its id is already journaled."""

    @abstractmethod
    def record_parts(self, updates: list[PartUpdate]) -> None:
        """Count finished header parts (batched); a part reported twice keeps its first."""

    @abstractmethod
    def chord(self, chord_id: str) -> ChordRecord | None:
        """The record with its progress (done, failed, last progress), or None."""

    @abstractmethod
    def parts(self, chord_id: str) -> dict[str, str]:
        """Finished header parts of a chord: task id -> state."""

    @abstractmethod
    def open_chords(self, app: str | None = None, due_before: float | None = None,
                    limit: int = 10000) -> list[ChordRecord]:
        """Chords not ended yet (of ``app``; with a deadline before ``due_before``), oldest
        first."""

    @abstractmethod
    def finish_chord(self, chord_id: str, state: str, reason: str) -> bool:
        """End an open chord; False when it had already ended (someone else won)."""

    @abstractmethod
    def count(self, chord_id: str, name: str, n: int = 1) -> None:
        """Add ``n`` to one of a chord's ``COUNTERS``."""

    @abstractmethod
    def purge(self, now_: float | None = None) -> int:
        """Delete chords ended, leases expired and dead letters settled longer than
        ``retention`` ago; how many (backends whose keys expire by themselves count less)."""


class Barriers(Protocol):
    """Durable chords' barriers. Every method is one atomic operation on the store."""

    @abstractmethod
    def create_barrier(self, barrier: Barrier) -> None:
        """Record a new barrier (and its header ids). Raises BarrierExists (writing
        nothing) when a barrier with its id is already there."""

    @abstractmethod
    def complete_part(self, barrier_id: str, index: int, envelope: str, failed: bool,
                      now: float, token: str, app: str = "", grace: float = CLAIM_GRACE,
                      reason: str = "") -> Completion:
        """Record part ``index`` once and count down, in one round trip.

        The completion that brings ``remaining`` to zero claims the dispatch with ``token``
        (DISPATCH, with every envelope unless by reference); with policy ``fail`` the first
        failed part claims the failure (FAIL, recording ``reason``). ``app`` names the
        creating app (Redis keeps one reaper index per app); ``grace`` is how long a
        dispatch claim may stay unpublished.
        """

    @abstractmethod
    def grow_barrier(self, barrier_id: str) -> int | None:
        """One more part for a ``waiting`` barrier (``total`` and ``remaining`` + 1): the new
        part's index, or None when the barrier is not waiting (or unknown)."""

    @abstractmethod
    def envelopes(self, barrier_id: str, start: int, stop: int) -> list[str | None]:
        """Parts ``start``..``stop - 1`` in header order (None: not recorded)."""

    @abstractmethod
    def mark_dispatched(self, barrier_id: str, token: str, now: float) -> bool:
        """``dispatching`` -> ``dispatched`` if ``token`` still holds the claim."""

    @abstractmethod
    def move_barrier(self, barrier_id: str, sources: tuple[BarrierState, ...],
                     target: BarrierState, now: float, token: str | None = None,
                     reason: str | None = None, outcome: str | None = None,
                     due: float | None = None, stale_before: float | None = None,
                     app: str | None = None) -> Barrier | None:
        """One transition: a barrier in one of ``sources`` (with ``stale_before``: claimed
        before it) moves to ``target`` at ``now``; ``token`` takes the claim, ``reason`` and
        ``outcome`` are recorded when given. In flight it is due at ``due`` (default
        ``now``); final, it is finished at ``now`` and leaves the reaper's index. The
        barrier after, or None when it was not in a source state. ``app`` (the creating
        app's name) saves a Redis store one read when given."""

    def finish_barrier(self, barrier_id: str, state: BarrierState, now: float,
                       outcome: str | None = None, reason: str | None = None,
                       app: str | None = None) -> bool:
        """``dispatched`` (or ``dispatching``) -> ``succeeded``/``failed``: the callback
        ended."""
        return self.move_barrier(barrier_id, (BarrierState.DISPATCHED, BarrierState.DISPATCHING),
                                 state, now, reason=reason, outcome=outcome,
                                 app=app) is not None

    def fail_barrier(self, barrier_id: str, reason: str, now: float,
                     token: str) -> Barrier | None:
        """Any in-flight state -> ``failed``; the failed barrier, or None if already final."""
        return self.move_barrier(barrier_id, IN_FLIGHT, BarrierState.FAILED, now, token=token,
                                 reason=reason)

    def reclaim_barrier(self, barrier_id: str, now: float, token: str,
                        grace: float = CLAIM_GRACE) -> Barrier | None:
        """Take over a ``dispatching`` claim older than ``grace`` (its claimer died)."""
        return self.move_barrier(barrier_id, (BarrierState.DISPATCHING,),
                                 BarrierState.DISPATCHING, now, token=token,
                                 due=now + grace, stale_before=now - grace)

    @abstractmethod
    def barrier(self, barrier_id: str, with_header_ids: bool = False) -> Barrier | None:
        """The barrier, or None."""

    @abstractmethod
    def barriers_in_flight(self, app: str) -> list[Barrier]:
        """Every in-flight barrier created by app ``app``."""

    @abstractmethod
    def due_barriers(self, app: str, now: float, limit: int = 500) -> list[Barrier]:
        """In-flight barriers of ``app`` the reaper must look at now, most overdue first."""

    @abstractmethod
    def purge_barriers(self, app: str, before: float) -> int:
        """Delete ``app``'s barriers that ended before ``before``; how many (Redis: their keys
        expire by themselves, 0)."""


class Leases(Protocol):
    """Named leases: who holds ``name`` (a holder string) until when.

    One primitive, ``swap_lease``, is every operation: take (``expect=None``), renew
    (``expect=holder, new=holder``), take-or-renew (``expect=(None, holder)``), hand over
    (``expect=old, new=new``), release (``new=None``); ``lease_holder`` reads it back.
    """

    retention: float

    @abstractmethod
    def swap_lease(self, name: str, expect: str | None | tuple[str | None, ...],
                   new: str | None, ttl: float) -> bool:
        """Compare-and-set lease ``name``: when its live holder is ``expect`` (None: nobody
        — never taken, released or expired; a tuple: any of those), ``new`` holds it for
        ``ttl`` seconds from now (``new`` None: it is released). True when it did."""

    @abstractmethod
    def lease_holder(self, name: str) -> str | None:
        """The live holder of lease ``name``; None when nobody holds it."""

    def claim(self, key: str, holder: str) -> str | None:
        """Take the run-once claim ``key`` for ``holder`` (kept ``retention`` seconds, never
        handed to another holder). None when this call took it; else the holder found —
        ``holder`` itself when it had taken it before."""
        if self.swap_lease(key, None, holder, self.retention):
            return None
        return self.lease_holder(key) or "?"

    def claim_all(self, holders: Mapping[str, str]) -> None:
        """Take each claim (key -> holder) nobody holds, in as few round trips as the store
        allows; a claim already held stays its holder's."""
        for key, holder in holders.items():
            self.claim(key, holder)


class DeadLetters(Protocol):
    """Chords that could not end well: what the callback was given and why."""

    @abstractmethod
    def add_dead_letter(self, letter: DeadLetter) -> None:
        """Keep ``letter`` (a second letter with its id is ignored)."""

    @abstractmethod
    def dead_letters(self, state: str | None = None, limit: int = 1000) -> list[DeadLetter]:
        """Newest first."""

    @abstractmethod
    def dead_letter(self, letter_id: str) -> DeadLetter | None:
        """By id, or by a unique id prefix."""

    @abstractmethod
    def settle_dead_letter(self, letter_id: str, state: str, note: str) -> bool:
        """Move a ``dead`` letter to ``state`` with ``note``; False if it was not dead."""


class Breakers(Protocol):
    """One circuit breaker per callback task name, changed by optimistic compare-and-set."""

    @abstractmethod
    def breaker(self, name: str) -> Breaker:
        """The stored breaker, or a new closed one (version 0)."""

    @abstractmethod
    def breakers(self) -> list[Breaker]:
        """Every stored breaker, by name."""

    @abstractmethod
    def replace_breaker(self, old: Breaker, new: Breaker) -> bool:
        """Write ``new`` if the stored breaker still has ``old.version``."""

    def update_breaker(self, name: str, change: Callable[[Breaker], Breaker]) -> Breaker:
        """Apply ``change`` atomically (optimistic retry) and return the stored result."""
        while True:
            old = self.breaker(name)
            new = change(Breaker(**{**old.__dict__, "failures": list(old.failures)}))
            if new == old:
                return old
            new.version = old.version + 1
            if self.replace_breaker(old, new):
                return new


class Store(Journal, Barriers, Leases, DeadLetters, Breakers, Protocol):
    """Everything chordguard keeps, in one store reached by one URL (``open_store``)."""

    url: str

    def clock(self) -> float:
        """The store's own time (Redis ``TIME``, PostgreSQL ``clock_timestamp()``; this
        host's for SQLite and memory), in epoch seconds: deadlines and stalls are judged on
        it, never on a worker's clock."""
        return time.time()

    def describe(self) -> str:
        """The URL, password masked: fit to print."""
        from .._urls import mask_url

        return mask_url(self.url)
