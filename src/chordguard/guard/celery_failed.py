"""Chords Celery fails itself (a header task failed, the callback could not be sent): their
journal records end at once, as the reaper would end them at the deadline.

Celery marks such a callback FAILURE through its backend's ``chord_error_from_stack`` (on
Redis, in the worker that stored the last part); no task of the body runs, so no
``task_postrun`` tells the journal. The wrapped method asks, once Celery has returned, what
the reaper would: is the body's outcome FAILURE? Then the record is closed as failed with
the reaper's reason. chordguard's own failures (``fail_callback``) end their records
themselves and are left alone.
"""

from __future__ import annotations

import logging
from typing import Any

from ..actions.callback import failing_here
from ..model import STAMP
from ..store.records import FAILED
from .body import UnknownBody, final_tasks
from .reaper import FAILED_BY_CELERY, recorded_outcome
from .state import Guard

logger = logging.getLogger(__name__)


def wrap(guard: Guard, backend: Any) -> None:
    """Close the journal record of each chord whose callback ``backend`` fails for Celery."""
    original = backend.chord_error_from_stack

    def chord_error_from_stack(callback: Any, exc: Any = None) -> Any:
        outcome = original(callback, exc)
        if not failing_here():
            close(guard, callback)
        return outcome

    backend.chord_error_from_stack = chord_error_from_stack


def close(guard: Guard, callback: Any) -> list[str]:
    """End the open records of the chords ``callback`` is the body of, when the reaper would
    find that body FAILURE; returns their ids. Never raises."""
    closed = []
    try:
        for chord_id in _chords_of(callback):
            record = guard.store.chord(chord_id)
            if record is None or not record.open:
                continue
            if recorded_outcome(guard, record) == "FAILURE" and guard.store.finish_chord(
                    chord_id, FAILED, FAILED_BY_CELERY):
                closed.append(chord_id)
    except Exception:  # the journal must never break Celery's own failure path
        logger.exception("chordguard: could not journal a chord Celery failed")
    return closed


def _chords_of(callback: Any) -> list[str]:
    """The chords whose body ``callback`` is, from the stamps on its final tasks."""
    try:
        finals = final_tasks(callback)
    except UnknownBody:
        return []
    found = []
    for task in finals:
        stamp = ((task.get("options") or {}).get("headers") or {}).get(STAMP)
        if isinstance(stamp, dict) and stamp.get("chord") and stamp["chord"] not in found:
            found.append(stamp["chord"])
    return found
