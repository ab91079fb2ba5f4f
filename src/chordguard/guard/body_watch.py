"""Has a chord's body ended? Judged off the task path, in linear time.

A body of N final tasks (a group body, say) finishes N times. Reading every final task's
result each time would cost N² reads, and carrying the body's result tree in every final
task's message N² bytes; even one read per final task, on its own path, is a round trip per
task. So the messages carry only the chord's id (and deadline); a final task that succeeds
queues its chord, and a daemon thread per worker process, every ``flush_interval``, reads
each queued chord's body once from the journal and keeps a cursor over its final task ids:
a ready task the cursor has passed is never read again, and a pass stops at the first one
still running. A pass costs one round trip per queued chord (``READ_AHEAD`` results in one MGET on
a key-value backend such as Redis, only a JSON result's status parsed), so the reads grow
with the body and the passes, not with the body squared.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from celery import Celery
from celery.backends.base import BaseKeyValueStoreBackend

from ..model import FAILED_STATES, READY_STATES
from ..store import Store
from .background import PeriodicFlush
from .body import final_tasks

logger = logging.getLogger(__name__)
MAX_CHORDS = 1024  # bodies followed at once by one process (least recently asked forgotten)
READ_AHEAD = 100  # results read in one round trip from a key-value backend (Redis)
Ended = Callable[[dict, str, str], None]  # (stamp, task name, "SUCCESS" | "FAILURE")
JSON_TYPES = ("application/json", "json")


class _Cursor:
    def __init__(self, task_ids: list[str]) -> None:
        self.task_ids, self.next, self.failed = task_ids, 0, False

    def advance(self, states_of: Callable[[list[str]], Iterable[str]]) -> str | None:
        while self.next < len(self.task_ids):
            for state in states_of(self.task_ids[self.next:self.next + READ_AHEAD]):
                if state not in READY_STATES:
                    return None
                self.failed = self.failed or state in FAILED_STATES
                self.next += 1
        return "FAILURE" if self.failed else "SUCCESS"


class BodyWatch(PeriodicFlush):
    """The chord bodies whose final tasks finished in this process, judged every
    ``interval``; ``ended`` is called once a body's outcome is known."""

    def __init__(self, app: Celery, store: Store, interval: float, ended: Ended,
                 max_chords: int = MAX_CHORDS) -> None:
        super().__init__(interval, "chordguard-bodies")
        self.app, self.store, self.ended = app, store, ended
        self._queued: dict[str, tuple[dict, str]] = {}
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self._max = max_chords

    def finished(self, stamp: dict, name: str) -> None:
        """A final task (``name``) of the body of ``stamp['chord']`` succeeded."""
        self.started()
        with self.lock:
            self._queued[stamp["chord"]] = (stamp, name)

    def reset(self) -> None:
        self._queued = {}
        self._cursors = OrderedDict()

    def flush(self) -> None:
        with self.lock:
            queued, self._queued = self._queued, {}
        for chord_id, (stamp, name) in queued.items():
            try:
                outcome = self.outcome(chord_id)
                if outcome is not None:
                    self.ended(stamp, name, outcome)
            except Exception:  # the journal must never break the user's tasks
                logger.exception("chordguard: could not judge the body of chord %s", chord_id)

    def outcome(self, chord_id: str) -> str | None:
        """``"SUCCESS"``/``"FAILURE"`` once every final task of the chord's body is ready
        (FAILURE if any failed or was revoked), else None; None too when the journal keeps
        no body for the chord. Raises what the store or the result backend raise."""
        cursor = self._cursors.get(chord_id)
        if cursor is None:
            record = self.store.chord(chord_id)
            if record is None or not record.callback:
                return None
            cursor = self._cursors[chord_id] = _Cursor(
                [_task_id(task) for task in final_tasks(record.callback)])
            while len(self._cursors) > self._max:
                self._cursors.popitem(last=False)
        self._cursors.move_to_end(chord_id)
        outcome = cursor.advance(self._states)
        if outcome is not None:
            del self._cursors[chord_id]
        return outcome

    def _states(self, task_ids: list[str]) -> Iterator[str]:
        """The tasks' states, decoded as the cursor asks for them: one MGET on a key-value
        backend (only the status of a JSON result is parsed), else one read each."""
        backend = self.app.backend
        if not isinstance(backend, BaseKeyValueStoreBackend):
            return (self.app.AsyncResult(task_id).state for task_id in task_ids)
        keys = [backend.get_key_for_task(t) for t in task_ids]
        values = backend.mget(keys)
        if isinstance(values, dict):  # memcached-style clients answer a mapping
            values = [values.get(key) for key in keys]
        json_results = backend.content_type in JSON_TYPES

        def status(raw: bytes | str) -> str:
            if json_results and raw[:1] in (b"{", "{"):  # not compressed (Celery 5.7+ can)
                return json.loads(raw)["status"]  # the stdlib's C decoder: no kombu types
            return backend.decode_result(raw)["status"]

        return (status(v) if v else "PENDING" for v in values)


def _task_id(task: Any) -> str:
    return task["options"]["task_id"]  # final_tasks checked that it is there
