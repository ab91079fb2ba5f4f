"""What the holder of a claim does: publish the callback, or fail the chord.

Both run wherever a claim is won: in the worker whose header completion claimed it, in the
reaper, or in ``fail_durable_chord``.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from .._compat import chord_error
from ..actions.callback import fail_callback
from ..store import Store
from ..store.clock import store_now
from ..store.outage import until_written
from .barrier import Barrier, callback_arg
from .deadletter import dead_letter, inputs_of
from .lazy import reference

logger = logging.getLogger("chordguard.durable")

HEADER_KEY = "chordguard_durable"  # message header of a header task: which part it is
CALLBACK_KEY = "chordguard_durable_callback"  # message header of the callback


def dispatch(app: Celery, store: Store, barrier: Barrier,
             envelopes: list[str | None] | None) -> None:
    """Publish the callback (results in header order, or by reference) and mark it sent."""
    assert barrier.claim_token is not None
    if barrier.by_reference or envelopes is None:
        results: Any = reference(barrier.id)
    else:
        results = [callback_arg(e, barrier.policy) for e in envelopes]
    callback = app.signature(barrier.callback)
    headers = dict(callback.options.get("headers") or {})
    headers[CALLBACK_KEY] = {"b": barrier.id, "s": barrier.store, "n": barrier.total,
                             "p": barrier.policy.value, "a": barrier.app,
                             "d": barrier.deadline_at}
    callback.apply_async((results,), task_id=barrier.callback_id, headers=headers)
    # held through a store outage: a claim left unmarked would be re-dispatched by the
    # reaper after the claim grace. False when the callback already finished (or the claim
    # moved on): nothing to do
    until_written(lambda: store.mark_dispatched(barrier.id, barrier.claim_token,
                                                store_now(store)),
                  barrier.deadline_at, lambda: store_now(store),
                  f"the dispatch mark of durable chord {barrier.id}")


def fail_chord(app: Celery, store: Store, barrier: Barrier, reason: str) -> None:
    """The chord failed: fail its callback with a ChordError so its errbacks run, and
    dead-letter it with the results recorded so far."""
    logger.error("durable chord %s failed: %s", barrier.id, reason)
    dead_letter(app, barrier, reason, inputs_of(store, barrier))
    try:
        fail_callback(app, barrier.callback,
                      chord_error(f"durable chord {barrier.id} failed: {reason}"))
    except Exception:  # an errback or the result backend failed: the barrier says why anyway
        logger.exception("durable chord %s: running the callback's errbacks failed", barrier.id)
