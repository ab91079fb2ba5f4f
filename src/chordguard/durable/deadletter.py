"""Failed durable chords go to the guard's dead-letter queue (``chordguard dlq``)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from celery import Celery

from ..config import store_url
from ..store import Barriers, open_store
from ..store.records import DeadLetter, jsonable
from .barrier import Barrier, callback_arg
from .lazy import LazyResults, reference

logger = logging.getLogger("chordguard.durable")


def inputs_of(store: Barriers, barrier: Barrier) -> Any:
    """What the callback got or would have got: the results list, or the reference to it."""
    if barrier.by_reference:
        return reference(barrier.id)
    return [callback_arg(e, barrier.policy) for e in store.envelopes(barrier.id, 0, barrier.total)]


def dead_letter(app: Celery, barrier: Barrier, reason: str, inputs: Any,
                error: str | None = None) -> str | None:
    """Add a letter for ``barrier`` with ``inputs``; its id, or None if the store refused."""
    if isinstance(inputs, LazyResults):
        inputs = reference(inputs.barrier_id)
    letter = DeadLetter(id=uuid.uuid4().hex[:16], chord_id=barrier.id, app=barrier.app,
                        callback_name=barrier.callback_name, callback=barrier.callback,
                        reason=reason, error=error, traceback=None, inputs=jsonable(inputs),
                        created_at=time.time())
    try:
        open_store(store_url(app, barrier.store)).add_dead_letter(letter)
    except Exception:  # the barrier keeps the reason either way
        logger.exception("durable chord %s: could not dead-letter it", barrier.id)
        return None
    logger.error("durable chord %s dead-lettered as %s: %s", barrier.id, letter.id, reason)
    return letter.id
