"""What only successive snapshots show: unlock poll rates, finished chords and their outcome.

A ``ChordTracker`` is fed every snapshot a long-running process (``serve``) takes. It keeps a
bounded memory of the chords it has seen (at most ``max_chords``, oldest forgotten first) and
turns the differences between snapshots into figures:

- unlock polls: the growth of each chord's unlock retry counters (never the counts a chord
  already had when first seen, so a restart does not look like a burst);
- per-chord poll rates over a sliding window, with a lower bound per retry interval that
  discounts the uncertainty of when, during a collection, each counter was read;
- chords that left the snapshot: their callback's final state is read from the result
  backend, giving completions by callback and outcome, callback failures and durations.

Age and duration use the chord's creation time when a source knows it; otherwise the age
first seen plus the time since, a lower bound.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime

from celery import Celery
from celery.states import READY_STATES

from ..model import Chord, Snapshot
from .sources.results import read_states

log = logging.getLogger(__name__)

DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0,
                    12 * 3600.0, 86400.0, 3 * 86400.0)
UNKNOWN_CALLBACK = "unknown"


@dataclass
class ChordRate:
    """Unlock polls of one chord over the tracker's window."""

    per_second: float
    per_interval_floor: float  # at least this many polls per retry interval
    window_seconds: float


@dataclass
class DurationHistogram:
    """Cumulative counts per bucket upper bound, as Prometheus wants them."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate((*DURATION_BUCKETS, float("inf"))):
            if seconds <= bound:
                self.buckets[i] += 1
        self.total += seconds
        self.count += 1

    def copy(self) -> DurationHistogram:
        return DurationHistogram(list(self.buckets), self.total, self.count)


@dataclass(frozen=True)
class Figures:
    """An immutable view of one snapshot plus the tracker's running totals."""

    snapshot: Snapshot
    rates: dict[str, ChordRate]
    unlock_polls_total: int
    completed: dict[tuple[str, str], int]  # (callback name, outcome) -> chords
    callback_failures: dict[str, int]
    durations: dict[str, DurationHistogram]

    @property
    def max_polls_per_interval(self) -> float:
        return max((r.per_interval_floor for r in self.rates.values()), default=0.0)


@dataclass
class _Seen:
    callback_name: str
    callback_id: str | None
    created_at: datetime | None
    first_seen_at: datetime
    age_at_first_seen: float
    polls: int
    samples: deque[tuple[float, int, float]]  # (taken at, polls, collection seconds)
    vanished_at: datetime | None = None
    resolve_attempts: int = 0


def poll_count(chord: Chord) -> int:
    """Unlock polls made for ``chord`` so far, summed over every unlock chain seen.

    A retry keeps the task id, and a redelivered duplicate chain shares it too, so chains are
    told apart by their retry count: copies with the same id and count are one message seen
    in two places. Copies whose holder does not report retries count through
    ``unlock_retries`` alone.
    """
    chains = {(c.task_id, c.retries) for c in chord.unlock_copies if c.retries is not None}
    return max(sum(retries for _, retries in chains), chord.unlock_retries or 0)


class ChordTracker:
    """Feed it snapshots in order; read ``Figures`` back. Not thread-safe: one feeder."""

    def __init__(self, app: Celery, window: float = 120.0, max_chords: int = 10_000,
                 resolve_per_snapshot: int = 200, resolve_attempts: int = 30) -> None:
        self.app = app
        self.window = window
        self.max_chords = max_chords
        self.resolve_per_snapshot = resolve_per_snapshot
        self.resolve_attempts = resolve_attempts
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self._vanished: OrderedDict[str, _Seen] = OrderedDict()
        self._polls_total = 0
        self._completed: Counter[tuple[str, str]] = Counter()
        self._failures: Counter[str] = Counter()
        self._durations: dict[str, DurationHistogram] = {}

    def observe(self, snapshot: Snapshot) -> Figures:
        """Account for ``snapshot``; may read callback states from the result backend."""
        now = snapshot.taken_at
        stamp = now.timestamp()
        reading = max((r.seconds for r in snapshot.sources), default=0.0)
        rates: dict[str, ChordRate] = {}
        for chord in snapshot.chords:
            polls = poll_count(chord)
            seen = self._seen.get(chord.id)
            if seen is None:
                age = chord.age.seconds if chord.age else 0.0
                seen = _Seen(chord.callback_name or UNKNOWN_CALLBACK, chord.callback_id,
                             chord.created_at, now, age, polls,
                             deque([(stamp, polls, reading)]))
                self._remember(self._seen, chord.id, seen)
                continue
            self._seen.move_to_end(chord.id)
            seen.callback_id = seen.callback_id or chord.callback_id
            if chord.callback_name:
                seen.callback_name = chord.callback_name
            seen.created_at = seen.created_at or chord.created_at
            self._polls_total += max(0, polls - seen.polls)
            seen.polls = polls
            seen.samples.append((stamp, polls, reading))
            while len(seen.samples) > 2 and stamp - seen.samples[1][0] >= self.window:
                seen.samples.popleft()
            if rate := _rate(seen.samples, snapshot.facts.retry_interval):
                rates[chord.id] = rate
        if snapshot.sources and all(s.ok for s in snapshot.sources):
            present = {c.id for c in snapshot.chords}
            for chord_id in [cid for cid in self._seen if cid not in present]:
                seen = self._seen.pop(chord_id)
                if seen.callback_id:
                    seen.vanished_at = now
                    self._remember(self._vanished, chord_id, seen)
        self._resolve(now)
        return Figures(snapshot=snapshot, rates=rates, unlock_polls_total=self._polls_total,
                       completed=dict(self._completed), callback_failures=dict(self._failures),
                       durations={k: v.copy() for k, v in self._durations.items()})

    def _remember(self, table: OrderedDict[str, _Seen], chord_id: str, seen: _Seen) -> None:
        table[chord_id] = seen
        while len(table) > self.max_chords:
            table.popitem(last=False)

    def _resolve(self, now: datetime) -> None:
        """Read the final state of callbacks whose chord left the snapshot (bounded, in one
        batch, never unpickling: ``read_states``)."""
        batch = list(self._vanished)[: self.resolve_per_snapshot]
        if not batch:
            return
        try:
            states, _ = read_states(self.app, [self._vanished[c].callback_id for c in batch])
        except Exception as exc:  # backend down: try again next snapshot
            log.debug("cannot read %d callback(s): %s", len(batch), exc)
            return
        for chord_id in batch:
            seen = self._vanished[chord_id]
            seen.resolve_attempts += 1
            known = states.get(seen.callback_id)
            if known is not None and known.state in READY_STATES:
                del self._vanished[chord_id]
                self._finish(seen, "success" if known.state == "SUCCESS" else "failure",
                             known.date_done or now)
            elif seen.resolve_attempts >= self.resolve_attempts:
                del self._vanished[chord_id]
            else:
                self._vanished.move_to_end(chord_id)

    def _finish(self, seen: _Seen, outcome: str, done_at: datetime) -> None:
        name = seen.callback_name
        self._completed[(name, outcome)] += 1
        if outcome == "failure":
            self._failures[name] += 1
        if seen.created_at is not None:
            seconds = (done_at - seen.created_at).total_seconds()
        else:
            seconds = seen.age_at_first_seen + (done_at - seen.first_seen_at).total_seconds()
        self._durations.setdefault(name, DurationHistogram()).observe(max(0.0, seconds))


def _rate(samples: deque[tuple[float, int, float]], interval: float) -> ChordRate | None:
    """Polls per second between the oldest and newest sample, and a floor per interval.

    A counter is read some time during a collection, not at its timestamp, so the true
    span may be longer by both collections' durations; and a span can hold one poll more
    than span/interval. The floor discounts both: one healthy chain never exceeds 1.
    """
    (t0, p0, d0), (t1, p1, d1) = samples[0], samples[-1]
    span = t1 - t0
    if span <= 0:
        return None
    polls = p1 - p0
    floor = max(0.0, (polls - 1) * interval / (span + d0 + d1))
    return ChordRate(per_second=max(0, polls) / span, per_interval_floor=floor,
                     window_seconds=span)
