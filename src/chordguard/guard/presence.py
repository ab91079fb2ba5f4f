"""Is a PENDING header task lost (``lost_header``), or still on its way?

Lost for sure: the journal saw the task finish, yet the backend says PENDING (its result
expired or was deleted). Lost by absence: no worker holds it (active, reserved or
scheduled) and no queue it could wait in holds any message that could be it.
"""

from __future__ import annotations

import logging
import time

from celery import Celery

from .._timeouts import within
from ..monitor.sources.broker import ready_messages
from ..monitor.sources.holdings import candidate_queues

logger = logging.getLogger(__name__)
INSPECT_TIMEOUT = 1.0
CONFIRM_PAUSE = 1.0


def lost_headers(app: Celery, pending: list[str], finished: dict[str, str]) -> dict[str, str]:
    """Of the ``pending`` header ids, those that are lost, each with the evidence. Lost by
    absence takes two looks ``CONFIRM_PAUSE`` apart and a result still PENDING after them: a
    message moving from a queue to a worker is in neither for a moment."""
    lost = {task_id: f"journal saw it finish ({finished[task_id]}) but its result reads PENDING"
            for task_id in pending if task_id in finished}
    absent = _absent(app, [task_id for task_id in pending if task_id not in lost])
    if absent:
        time.sleep(CONFIRM_PAUSE)
        absent = {task_id for task_id in _absent(app, sorted(absent))
                  if app.AsyncResult(task_id).state == "PENDING"}
    for task_id in sorted(absent):
        lost[task_id] = "PENDING; no worker holds it and no queue it may wait in has a message"
    return lost


def _absent(app: Celery, task_ids: list[str]) -> set[str]:
    """Those of ``task_ids`` no worker holds, when no queue they may wait in holds a message
    (queues first: a message leaves a queue for a worker, never the other way)."""
    if not task_ids:
        return set()
    try:
        if within(INSPECT_TIMEOUT * 3, "broker (queue sizes)", _queued_messages, app):
            return set()  # a message somewhere may be one of them
        held = within(INSPECT_TIMEOUT * 3, "workers (query_task)", _held_by_workers, app,
                      task_ids)
    except Exception as exc:  # cannot tell: not lost
        logger.warning("chordguard: cannot tell whether headers are held: %r", exc)
        return set()
    return set(task_ids) - held


def _held_by_workers(app: Celery, task_ids: list[str]) -> set[str]:
    replies = app.control.inspect(timeout=INSPECT_TIMEOUT).query_task(*task_ids) or {}
    return {task_id for reply in replies.values() for task_id in (reply or {})}


def _queued_messages(app: Celery) -> int:
    """Messages ready in any queue a header may wait in: the app's own, those its routes
    name and, on a Redis broker, every queue kombu has bound there (``.set(queue=...)``)."""
    return ready_messages(app, candidate_queues(app, set()))
