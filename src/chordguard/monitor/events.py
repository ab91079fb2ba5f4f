"""Following Celery events live: unlock poll rates per chord and anomalies as they happen.

Every poll of ``celery.chord_unlock`` is one delivery, and each delivery sends a
``task-received`` event carrying the group id (``args[0]``), the callback signature and the
``retries`` count. ``UnlockWatch.feed`` turns those events into per-chord poll rates over a
sliding window and reports, once per chord:

- ``unlock_storm``: polls arrive faster than one per ``result_chord_retry_interval``;
- ``duplicate_unlock_chain``: two unlock task ids poll one chord, or one id's ``retries``
  count stops increasing (a second message with the same id is alive: acks_late redelivery);
- ``callback_failed``: the callback named in the unlock arguments failed;
- ``unlock_failed``: the unlock task itself failed (e.g. ``max_retries`` ran out);
- ``duplicate_callback``: the callback named in the unlock arguments started twice (its
  message was delivered twice: acks_late redelivery, visibility timeout);
- ``stuck``: the unlock has been polling longer than ``stuck_after`` (``retries`` x interval,
  a lower bound that counts polls made before the watch started).

Memory is bounded however long it runs and however many tasks pass: at most ``max_chords``
chords are remembered (least recently polled forgotten first), each with at most
``max_polls`` poll timestamps and ``max_chains`` unlock task ids; the index of unlock and
callback ids holds at most ``max_chords * (max_chains + 1)`` entries, and at most
``max_anomalies`` recent anomalies are kept. Events of other tasks leave no state behind.
Times come from the events' own timestamps, so rates do not depend on when events arrive.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError

from ..errors import UnreachableError

UNLOCK_TASKS = frozenset({"celery.chord_unlock"})
STORM_FACTOR = 1.5  # polls per interval above which a chord is storming
MIN_POLLS_FOR_RATE = 5
_GROUP_ID = re.compile(r"^\(\s*'([^']+)'")
_CALLBACK_ID = re.compile(r"'task_id':\s*'([^']+)'")
_CALLBACK_NAME = re.compile(r"\{'task':\s*'([^']+)'")


@dataclass
class Anomaly:
    """Something wrong seen in the event stream, reported once per chord and code."""

    code: str
    chord_id: str
    summary: str
    at: float  # event timestamp (Unix time)


@dataclass
class UnlockRate:
    """One chord's unlock polling over the window."""

    chord_id: str
    callback_name: str | None
    polls_per_second: float
    polls_per_interval: float
    chains: int  # distinct unlock ids seen, or more when retries counts repeat
    retries: int  # the highest retries count seen
    polls_in_window: int


@dataclass
class _ChordState:
    callback_id: str | None = None
    callback_name: str | None = None
    polls: deque = field(default_factory=deque)  # event timestamps, newest last
    chains: dict[str, int] = field(default_factory=dict)  # unlock id -> last retries seen
    repeats: int = 0  # deliveries whose retries count did not increase
    callback_starts: int = 0  # task-started events of the callback
    retries: int = 0
    reported: set[str] = field(default_factory=set)
    finished: bool = False


class UnlockWatch:
    """Bounded per-chord state fed with Celery event dictionaries (see the module docstring).

    ``interval`` is the app's ``result_chord_retry_interval``; ``window`` the sliding window
    for rates, in seconds; ``stuck_after`` in seconds, None to never report ``stuck``.
    """

    def __init__(self, interval: float = 1.0, window: float = 30.0,
                 stuck_after: float | None = 3600.0, max_chords: int = 10_000,
                 max_polls: int = 128, max_chains: int = 8, max_anomalies: int = 1000,
                 unlock_tasks: frozenset[str] = UNLOCK_TASKS) -> None:
        self.interval, self.window, self.stuck_after = interval, window, stuck_after
        self.max_chords, self.max_polls, self.max_chains = max_chords, max_polls, max_chains
        self.unlock_tasks = unlock_tasks
        self.chords: OrderedDict[str, _ChordState] = OrderedDict()
        self.index: dict[str, tuple[str, str]] = {}  # unlock/callback id -> (chord id, role)
        self.anomalies: deque[Anomaly] = deque(maxlen=max_anomalies)
        self.now = 0.0  # newest event timestamp seen
        self.events_seen = 0

    def feed(self, event: Mapping[str, Any]) -> list[Anomaly]:
        """Take one event; return the anomalies it revealed (each reported only once)."""
        self.events_seen += 1
        at = float(event.get("timestamp") or self.now)
        self.now = max(self.now, at)
        kind = event.get("type")
        if kind == "task-received" and event.get("name") in self.unlock_tasks:
            return self._poll(event, at)
        if kind == "task-started" and self.index.get(event.get("uuid") or "", ("", ""))[1] \
                == "callback":
            return self._started(event["uuid"], at)
        if kind == "task-failed" and event.get("uuid") in self.index:
            return self._failed(event, at)
        if kind == "task-succeeded" and event.get("uuid") in self.index:
            chord_id, role = self.index[event["uuid"]]
            if role == "unlock" and chord_id in self.chords:
                self.chords[chord_id].finished = True
        return []

    def rates(self) -> list[UnlockRate]:
        """Chords polled within the window, fastest first."""
        out = []
        for chord_id, state in self.chords.items():
            self._expire(state)
            if state.finished or not state.polls:
                continue
            per_second = self._rate(state)
            out.append(UnlockRate(chord_id, state.callback_name, per_second,
                                  per_second * self.interval, self._chains(state),
                                  state.retries, len(state.polls)))
        return sorted(out, key=lambda r: -r.polls_per_second)

    def size(self) -> dict[str, int]:
        """What the watch holds now: chords, poll timestamps, chain ids, index entries."""
        return {"chords": len(self.chords),
                "polls": sum(len(s.polls) for s in self.chords.values()),
                "chains": sum(len(s.chains) for s in self.chords.values()),
                "index": len(self.index), "anomalies": len(self.anomalies)}

    def _poll(self, event: Mapping[str, Any], at: float) -> list[Anomaly]:
        args = str(event.get("args") or "")
        match = _GROUP_ID.match(args)
        unlock_id = str(event.get("uuid") or "")
        if match is None or not unlock_id:
            return []
        chord_id = match.group(1)
        state = self._state(chord_id)
        if state.callback_id is None and (callback := _CALLBACK_ID.search(args)):
            state.callback_id = callback.group(1)
            self._index(state.callback_id, chord_id, "callback")
            name = _CALLBACK_NAME.search(args)
            state.callback_name = name.group(1) if name else None
        retries = int(event.get("retries") or 0)
        previous = state.chains.get(unlock_id)
        if previous is not None and retries <= previous:
            state.repeats += 1
        if previous is not None or len(state.chains) < self.max_chains:
            state.chains[unlock_id] = max(retries, previous or 0)
            self._index(unlock_id, chord_id, "unlock")
        state.retries = max(state.retries, retries)
        state.finished = False
        state.polls.append(at)
        while len(state.polls) > self.max_polls:
            state.polls.popleft()
        self._expire(state)
        return self._judge(chord_id, state, at)

    def _judge(self, chord_id: str, state: _ChordState, at: float) -> list[Anomaly]:
        found = []
        chains = self._chains(state)
        if chains > 1:
            found.append(self._report(chord_id, state, "duplicate_unlock_chain", at,
                                      f"{chains} unlock chains poll chord {chord_id}"))
        if len(state.polls) >= MIN_POLLS_FOR_RATE:
            per_interval = self._rate(state) * self.interval
            if per_interval > STORM_FACTOR:
                found.append(self._report(
                    chord_id, state, "unlock_storm", at,
                    f"chord {chord_id} is polled {per_interval:.1f} times per "
                    f"{self.interval:g} s interval (expected at most 1)"))
        if self.stuck_after is not None and state.retries * self.interval > self.stuck_after:
            found.append(self._report(
                chord_id, state, "stuck", at,
                f"chord {chord_id} has been polling for at least "
                f"{state.retries * self.interval:.0f} s ({state.retries} retries)"))
        return [a for a in found if a is not None]

    def _started(self, callback_id: str, at: float) -> list[Anomaly]:
        chord_id, _ = self.index[callback_id]
        state = self.chords.get(chord_id)
        if state is None:
            return []
        state.callback_starts += 1
        if state.callback_starts < 2:
            return []
        summary = (f"callback {state.callback_name or ''} ({callback_id}) of chord {chord_id} "
                   f"started {state.callback_starts} times")
        return [a for a in [self._report(chord_id, state, "duplicate_callback", at, summary)]
                if a is not None]

    def _failed(self, event: Mapping[str, Any], at: float) -> list[Anomaly]:
        chord_id, role = self.index[event["uuid"]]
        state = self.chords.get(chord_id)
        if state is None:
            return []
        state.finished = True
        error = str(event.get("exception") or "an exception")
        if role == "callback":
            summary = f"callback {state.callback_name or ''} of chord {chord_id} raised {error}"
            return [a for a in [self._report(chord_id, state, "callback_failed", at, summary)]
                    if a is not None]
        summary = f"chord_unlock of chord {chord_id} failed: {error}"
        return [a for a in [self._report(chord_id, state, "unlock_failed", at, summary)]
                if a is not None]

    def _report(self, chord_id: str, state: _ChordState, code: str, at: float,
                summary: str) -> Anomaly | None:
        if code in state.reported:
            return None
        state.reported.add(code)
        anomaly = Anomaly(code, chord_id, summary, at)
        self.anomalies.append(anomaly)
        return anomaly

    def _state(self, chord_id: str) -> _ChordState:
        state = self.chords.get(chord_id)
        if state is None:
            state = self.chords[chord_id] = _ChordState()
            while len(self.chords) > self.max_chords:
                self._forget(*self.chords.popitem(last=False))
        else:
            self.chords.move_to_end(chord_id)
        return state

    def _forget(self, chord_id: str, state: _ChordState) -> None:
        for task_id in [*state.chains, state.callback_id]:
            if task_id is not None and self.index.get(task_id, ("",))[0] == chord_id:
                del self.index[task_id]

    def _index(self, task_id: str, chord_id: str, role: str) -> None:
        self.index[task_id] = (chord_id, role)

    def _expire(self, state: _ChordState) -> None:
        horizon = self.now - self.window
        while state.polls and state.polls[0] < horizon:
            state.polls.popleft()

    def _rate(self, state: _ChordState) -> float:
        if len(state.polls) < 2:
            return 0.0
        span = state.polls[-1] - state.polls[0]
        return (len(state.polls) - 1) / span if span > 0 else float(len(state.polls))

    def _chains(self, state: _ChordState) -> int:
        return max(len(state.chains), 2 if state.repeats >= 2 else 1)


def follow(app: Celery, watch: UnlockWatch, on_anomaly: Callable[[Anomaly], None],
           on_tick: Callable[[], bool], connect_retries: int = 1) -> None:
    """Feed the app's events to ``watch`` until ``on_tick`` (called about every second)
    returns False. Raises UnreachableError when the broker cannot be reached."""
    try:
        _follow(app, watch, on_anomaly, on_tick, connect_retries)
    except (OperationalError, OSError) as exc:
        raise UnreachableError(f"broker unreachable while following events: {exc}") from exc


def _follow(app: Celery, watch: UnlockWatch, on_anomaly: Callable[[Anomaly], None],
            on_tick: Callable[[], bool], connect_retries: int) -> None:
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": lambda event: [
            on_anomaly(a) for a in watch.feed(event)]})
        receiver.connect_max_retries = connect_retries

        def tick() -> None:
            if not on_tick():
                receiver.should_stop = True

        receiver.on_iteration = tick
        receiver.capture(limit=None, timeout=None, wakeup=False)
