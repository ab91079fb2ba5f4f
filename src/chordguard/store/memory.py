"""The store in this process's memory (``memory://`` or ``memory://name``): unit tests and
the demo. Nothing outlives the process and no other process sees it.

Records are kept as the codec's JSON (as the other backends keep them: what cannot be
stored there fails here too), and one lock makes every method atomic, so the semantics
are those of the SQL and Redis stores — ``tests/contract`` holds all three to one suite.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ..errors import BarrierExists
from ..model import FAILED_STATES
from .protocols import COUNTERS, DEFAULT_RETENTION, Store
from .records import (
    CLAIM_GRACE,
    DLQ_DEAD,
    FINAL,
    OPEN,
    TERMINAL,
    Barrier,
    BarrierState,
    Breaker,
    ChordRecord,
    Completion,
    DeadLetter,
    Outcome,
    PartUpdate,
    Policy,
    from_json,
    to_json,
)

T = TypeVar("T")


@dataclass
class _BarrierEntry:
    data: str  # the barrier's JSON
    parts: dict[int, str] = field(default_factory=dict)  # index -> envelope
    due: float | None = None  # when the reaper must look; None once final


class MemoryStore(Store):
    """Every protocol of the store, in dicts guarded by one lock."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.retention = DEFAULT_RETENTION
        self._lock = threading.RLock()
        self._chords: dict[str, str] = {}  # id -> ChordRecord JSON
        self._parts: dict[str, dict[str, tuple[str, float]]] = {}  # first report kept
        self._leases: dict[str, tuple[str, float]] = {}  # name -> (holder, expires_at)
        self._letters: dict[str, str] = {}  # id -> DeadLetter JSON
        self._breakers: dict[str, str] = {}  # name -> Breaker JSON
        self._barriers: dict[str, _BarrierEntry] = {}

    def _locked(self, fn: Callable[[], T]) -> T:
        with self._lock:
            return fn()

    # journal
    def record_chord(self, record: ChordRecord) -> None:
        with self._lock:
            self._chords.setdefault(record.id, to_json(record))

    def record_parts(self, updates: list[PartUpdate]) -> None:
        with self._lock:
            for u in updates:
                self._parts.setdefault(u.chord_id, {}).setdefault(u.task_id, (u.state, u.at))

    def _chord(self, chord_id: str) -> ChordRecord | None:
        data = self._chords.get(chord_id)
        if data is None:
            return None
        finished = list(self._parts.get(chord_id, {}).values())
        return from_json(ChordRecord, data, done=len(finished),
                         failed=sum(1 for state, _ in finished if state in FAILED_STATES),
                         last_progress_at=max((at for _, at in finished), default=None))

    def chord(self, chord_id: str) -> ChordRecord | None:
        return self._locked(lambda: self._chord(chord_id))

    def parts(self, chord_id: str) -> dict[str, str]:
        with self._lock:
            return {task: state for task, (state, _) in self._parts.get(chord_id, {}).items()}

    def open_chords(self, app: str | None = None, due_before: float | None = None,
                    limit: int = 10000) -> list[ChordRecord]:
        with self._lock:
            found = [c for c in map(self._chord, list(self._chords)) if c is not None
                     and c.open and (app is None or c.app == app)
                     and (due_before is None
                          or (c.deadline_at is not None and c.deadline_at < due_before))]
        return sorted(found, key=lambda c: c.created_at)[:limit]

    def _update_chord(self, chord_id: str, change: Callable[[ChordRecord], bool]) -> bool:
        """Apply ``change`` to the stored record (under the lock); keep it if it said so."""
        with self._lock:
            data = self._chords.get(chord_id)
            if data is None:
                return False
            record = from_json(ChordRecord, data)
            if not change(record):
                return False
            self._chords[chord_id] = to_json(record)
            return True

    def finish_chord(self, chord_id: str, state: str, reason: str) -> bool:
        assert state in TERMINAL, state

        def end(record: ChordRecord) -> bool:
            if not record.open:
                return False
            record.state, record.reason, record.ended_at = state, reason, time.time()
            return True

        return self._update_chord(chord_id, end)

    def count(self, chord_id: str, name: str, n: int = 1) -> None:
        assert name in COUNTERS, name

        def add(record: ChordRecord) -> bool:
            setattr(record, name, getattr(record, name) + n)
            return True

        self._update_chord(chord_id, add)

    def purge(self, now_: float | None = None) -> int:
        cutoff = (now_ or time.time()) - self.retention
        with self._lock:
            ended = [i for i, data in self._chords.items()
                     if (r := from_json(ChordRecord, data)).state != OPEN
                     and r.ended_at is not None and r.ended_at < cutoff]
            for chord_id in ended:
                del self._chords[chord_id]
                self._parts.pop(chord_id, None)
            for name in [n for n, (_, until) in self._leases.items() if until < cutoff]:
                del self._leases[name]
            for letter in [from_json(DeadLetter, d) for d in self._letters.values()]:
                if letter.state != DLQ_DEAD and letter.updated_at is not None \
                        and letter.updated_at < cutoff:
                    del self._letters[letter.id]
            return len(ended)

    # leases
    def swap_lease(self, name: str, expect: str | None | tuple[str | None, ...],
                   new: str | None, ttl: float) -> bool:
        expected = expect if isinstance(expect, tuple) else (expect,)
        with self._lock:
            if self._holder(name) not in expected:
                return False
            if new is None:
                self._leases.pop(name, None)
            else:
                self._leases[name] = (new, time.time() + ttl)
            return True

    def _holder(self, name: str) -> str | None:
        holder, until = self._leases.get(name, (None, 0.0))
        return holder if until >= time.time() else None

    def lease_holder(self, name: str) -> str | None:
        return self._locked(lambda: self._holder(name))

    # dead letters
    def add_dead_letter(self, letter: DeadLetter) -> None:
        with self._lock:
            self._letters.setdefault(letter.id, to_json(letter))

    def _all_letters(self) -> list[DeadLetter]:
        letters = [from_json(DeadLetter, d) for d in self._letters.values()]
        return sorted(letters, key=lambda d: d.created_at, reverse=True)

    def dead_letters(self, state: str | None = None, limit: int = 1000) -> list[DeadLetter]:
        with self._lock:
            letters = self._all_letters()
        return [d for d in letters if state is None or d.state == state][:limit]

    def dead_letter(self, letter_id: str) -> DeadLetter | None:
        with self._lock:
            if letter_id in self._letters:
                return from_json(DeadLetter, self._letters[letter_id])
            matches = [i for i in self._letters if i.startswith(letter_id)]
            return from_json(DeadLetter, self._letters[matches[0]]) if len(matches) == 1 \
                else None

    def settle_dead_letter(self, letter_id: str, state: str, note: str) -> bool:
        with self._lock:
            letter = self.dead_letter(letter_id)
            if letter is None or letter.state != DLQ_DEAD:
                return False
            letter.state, letter.note, letter.updated_at = state, note, time.time()
            self._letters[letter.id] = to_json(letter)
            return True

    # breakers
    def breaker(self, name: str) -> Breaker:
        with self._lock:
            data = self._breakers.get(name)
        return Breaker(name) if data is None else from_json(Breaker, data)

    def breakers(self) -> list[Breaker]:
        with self._lock:
            return [from_json(Breaker, self._breakers[name]) for name in sorted(self._breakers)]

    def replace_breaker(self, old: Breaker, new: Breaker) -> bool:
        with self._lock:
            if self.breaker(new.name).version != old.version:
                return False
            self._breakers[new.name] = to_json(new)
            return True

    # barriers
    def create_barrier(self, barrier: Barrier) -> None:
        with self._lock:
            if barrier.id in self._barriers:
                raise BarrierExists(barrier.id)
            self._barriers[barrier.id] = _BarrierEntry(to_json(barrier), due=barrier.due_at())

    def grow_barrier(self, barrier_id: str) -> int | None:
        with self._lock:
            barrier = self._barrier(barrier_id)
            if barrier is None or barrier.state is not BarrierState.WAITING:
                return None
            barrier.total, barrier.remaining = barrier.total + 1, barrier.remaining + 1
            self._barriers[barrier_id].data = to_json(barrier)
            return barrier.total - 1

    def _barrier(self, barrier_id: str, with_header_ids: bool = True) -> Barrier | None:
        entry = self._barriers.get(barrier_id)
        if entry is None:
            return None
        found = from_json(Barrier, entry.data)
        if not with_header_ids:
            found.header_ids = []
        return found

    def _save(self, barrier: Barrier, due: float | None) -> Barrier:
        entry = self._barriers[barrier.id]
        entry.data, entry.due = to_json(barrier), due
        barrier.header_ids = []  # as the other stores answer: header ids only when asked
        return barrier

    def complete_part(self, barrier_id: str, index: int, envelope: str, failed: bool,
                      now: float, token: str, app: str = "", grace: float = CLAIM_GRACE,
                      reason: str = "") -> Completion:
        with self._lock:
            barrier = self._barrier(barrier_id)
            if barrier is None:
                return Completion(Outcome.MISSING)
            entry = self._barriers[barrier_id]
            if index in entry.parts:
                return Completion(Outcome.DUPLICATE)
            entry.parts[index] = envelope
            barrier.remaining -= 1
            barrier.failed += int(failed)
            barrier.updated_at = now
            due = entry.due
            if barrier.state is not BarrierState.WAITING:
                self._save(barrier, due)
                return Completion(Outcome.LATE)
            if failed and barrier.policy is Policy.FAIL:
                barrier.state, barrier.finished_at = BarrierState.FAILED, now
                barrier.claim_token, barrier.claimed_at = token, now
                barrier.reason = reason or f"header part {index} failed"
                return Completion(Outcome.FAIL, self._save(barrier, None))
            if barrier.remaining <= 0:
                barrier.state = BarrierState.DISPATCHING
                barrier.claim_token, barrier.claimed_at = token, now
                envelopes = None if barrier.by_reference else \
                    [entry.parts.get(i) for i in range(barrier.total)]
                claim_due = min(barrier.deadline_at, now + grace)
                return Completion(Outcome.DISPATCH, self._save(barrier, claim_due), envelopes)
            self._save(barrier, min(barrier.deadline_at, now + barrier.stall_seconds))
            return Completion(Outcome.COUNTED)

    def envelopes(self, barrier_id: str, start: int, stop: int) -> list[str | None]:
        with self._lock:
            entry = self._barriers.get(barrier_id)
            found = entry.parts if entry is not None else {}
            return [found.get(i) for i in range(start, stop)]

    def move_barrier(self, barrier_id: str, sources: tuple[BarrierState, ...],
                     target: BarrierState, now: float, token: str | None = None,
                     reason: str | None = None, outcome: str | None = None,
                     due: float | None = None, stale_before: float | None = None,
                     app: str | None = None) -> Barrier | None:
        with self._lock:
            barrier = self._barrier(barrier_id)
            if barrier is None or barrier.state not in sources:
                return None
            if stale_before is not None and not (barrier.claimed_at or 0.0) < stale_before:
                return None
            barrier.state, barrier.updated_at = target, now
            if token is not None:
                barrier.claim_token, barrier.claimed_at = token, now
            barrier.reason = barrier.reason if reason is None else reason
            barrier.outcome = barrier.outcome if outcome is None else outcome
            if target in FINAL:
                barrier.finished_at = now
                return self._save(barrier, None)
            return self._save(barrier, now if due is None else due)

    def mark_dispatched(self, barrier_id: str, token: str, now: float) -> bool:
        with self._lock:
            barrier = self._barrier(barrier_id)
            if barrier is None or barrier.claim_token != token:
                return False
            return self.move_barrier(barrier_id, (BarrierState.DISPATCHING,),
                                     BarrierState.DISPATCHED, now,
                                     due=barrier.deadline_at) is not None

    def barrier(self, barrier_id: str, with_header_ids: bool = False) -> Barrier | None:
        return self._locked(lambda: self._barrier(barrier_id, with_header_ids))

    def _app_barriers(self, app: str, now: float | None = None) -> list[tuple[float, Barrier]]:
        out = []
        for barrier_id, entry in self._barriers.items():
            if entry.due is None or (now is not None and entry.due > now):
                continue
            found = self._barrier(barrier_id, with_header_ids=False)
            if found is not None and found.app == app:
                out.append((entry.due, found))
        return sorted(out, key=lambda pair: pair[0])

    def barriers_in_flight(self, app: str) -> list[Barrier]:
        with self._lock:
            return [b for _, b in self._app_barriers(app)]

    def due_barriers(self, app: str, now: float, limit: int = 500) -> list[Barrier]:
        with self._lock:
            return [b for _, b in self._app_barriers(app, now)][:limit]

    def purge_barriers(self, app: str, before: float) -> int:
        with self._lock:
            ended = [i for i in self._barriers
                     if (b := self._barrier(i)) is not None and b.app == app
                     and b.finished_at is not None and b.finished_at < before]
            for barrier_id in ended:
                del self._barriers[barrier_id]
            return len(ended)
