"""The dead-letter queue's actions: replay a letter's callback once, or drop it with a reason.

Both keep the record: a replayed letter notes the task id it was replayed as, a dropped one
the reason. A letter is replayed at most once (the store moves it out of ``dead`` first).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.canvas import Signature
from kombu.utils.uuid import uuid

from .._timeouts import within
from ..errors import DeadLetterError
from ..model import STAMP
from ..store import Store
from ..store.records import DLQ_DEAD, DLQ_DROPPED, DLQ_REPLAYED, DeadLetter

PUBLISH_TIMEOUT = 10.0
_NOT_REPLAYED = ("task_id", "reply_to", "group_id", "group_index", "chord", "root_id",
                 "parent_id", "headers")


def waiting(store: Store, letter_id: str) -> DeadLetter:
    """The ``dead`` letter ``letter_id`` (or unique prefix); DeadLetterError otherwise."""
    letter = store.dead_letter(letter_id)
    if letter is None:
        raise DeadLetterError(f"no dead letter {letter_id!r} (or the prefix is ambiguous)")
    if letter.state != DLQ_DEAD:
        raise DeadLetterError(f"dead letter {letter.id} is already {letter.state}: {letter.note}")
    return letter


def replay(app: Celery, store: Store, letter_id: str) -> dict[str, Any]:
    """Publish the letter's callback once more with its stored inputs; return what was done."""
    letter = waiting(store, letter_id)
    if not letter.callback:
        raise DeadLetterError(f"dead letter {letter.id} has no callback signature to replay")
    task_id = uuid()
    if not store.settle_dead_letter(letter.id, DLQ_REPLAYED, f"replayed as task {task_id}"):
        raise DeadLetterError(f"dead letter {letter.id} was settled by someone else meanwhile")
    callback = Signature(letter.callback, app=app)
    options = {k: v for k, v in callback.options.items() if k not in _NOT_REPLAYED}
    headers = {STAMP: {"chord": letter.chord_id, "callback": task_id, "replay": letter.id}}
    signature = Signature(callback.task, args=(letter.inputs, *callback.args),
                          kwargs=callback.kwargs, options=options, app=app)
    within(PUBLISH_TIMEOUT, "broker (replay)", signature.apply_async, task_id=task_id,
           headers=headers)
    return {"id": letter.id, "state": DLQ_REPLAYED, "task_id": task_id,
            "callback": letter.callback_name}


def drop(store: Store, letter_id: str, reason: str) -> dict[str, Any]:
    """Settle the letter as dropped, keeping it and ``reason`` on record."""
    if not reason.strip():
        raise DeadLetterError("dropping a dead letter needs a reason (--reason)")
    letter = waiting(store, letter_id)
    if not store.settle_dead_letter(letter.id, DLQ_DROPPED, reason):
        raise DeadLetterError(f"dead letter {letter.id} was settled by someone else meanwhile")
    return {"id": letter.id, "state": DLQ_DROPPED, "note": reason}
