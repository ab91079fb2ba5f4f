"""Is a PENDING header task lost (``lost_header``), or still on its way?

Lost for sure: the journal saw the task finish, yet the backend says PENDING (its result
expired or was deleted). Lost by absence: no worker holds it (active, reserved or
scheduled) and none of the app's queues holds any message that could be it.
"""

from __future__ import annotations

import logging

from celery import Celery

from .._timeouts import within

logger = logging.getLogger(__name__)
INSPECT_TIMEOUT = 1.0


def lost_headers(app: Celery, pending: list[str], finished: dict[str, str]) -> dict[str, str]:
    """Of the ``pending`` header ids, those that are lost, each with the evidence."""
    lost = {task_id: f"journal saw it finish ({finished[task_id]}) but its result reads PENDING"
            for task_id in pending if task_id in finished}
    unknown = [task_id for task_id in pending if task_id not in lost]
    if not unknown:
        return lost
    try:
        held = within(INSPECT_TIMEOUT * 3, "workers (query_task)", _held_by_workers, app, unknown)
        queued = within(INSPECT_TIMEOUT * 3, "broker (queue sizes)", _queued_messages, app)
    except Exception as exc:  # cannot tell: not lost
        logger.warning("chordguard: cannot tell whether headers are held: %r", exc)
        return lost
    if queued:
        return lost  # a message somewhere may be one of them
    for task_id in unknown:
        if task_id not in held:
            lost[task_id] = "PENDING; no worker holds it and the app's queues are empty"
    return lost


def _held_by_workers(app: Celery, task_ids: list[str]) -> set[str]:
    replies = app.control.inspect(timeout=INSPECT_TIMEOUT).query_task(*task_ids) or {}
    return {task_id for reply in replies.values() for task_id in (reply or {})}


def _queued_messages(app: Celery) -> int:
    """Messages ready in the app's queues (the default queue and any declared)."""
    names = {app.conf.task_default_queue, *app.amqp.queues.keys()}
    total = 0
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for name in names:
            try:
                total += channel.queue_declare(queue=name, passive=True).message_count
            except Exception:  # a queue that does not exist holds nothing
                channel = conn.channel()
    return total
