"""What the holder of a claim does: publish the callback, or fail the chord.

Both run wherever a claim is won: in the worker whose header completion claimed it, in the
reaper, or in ``fail_durable_chord``. A Celery chord joined by the store (policy ``celery``,
``guard.fan_in``) is handed on as Celery hands it: the results in header order through
``callback.delay``, or, when a part failed, a ChordError naming the first failed part in
header order, with its exception as the cause where the installed Celery attaches one.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery
from kombu.utils.json import loads

from .._compat import chord_error, publish_callback
from ..actions.callback import OperatorFail, fail_callback
from ..coordination import kind_of
from ..model import STAMP, ChordKind, callback_stamp
from ..store import Store
from ..store.clock import store_now
from ..store.outage import until_written
from ..store.records import BarrierState, Policy
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
    if barrier.policy is Policy.CELERY:
        _dispatch_for_celery(app, store, barrier, envelopes)
        return
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


def _dispatch_for_celery(app: Celery, store: Store, barrier: Barrier,
                         envelopes: list[str | None] | None) -> None:
    """A store-joined Celery chord: ``callback.delay(results)``, or its ChordError."""
    if envelopes is None:
        envelopes = store.envelopes(barrier.id, 0, barrier.total)
    results = []
    for envelope in envelopes:
        part = loads(envelope) if envelope else {}
        if part.get("status") == "failed":
            _fail_as_celery_would(app, store, barrier, part)
            return
        results.append(part.get("result"))
    callback = app.signature(barrier.callback)
    single = callback.get("subtask_type") is None
    publish_callback(app, _naming_its_chord(callback, barrier) if single else callback,
                     results)
    if single:  # the task's end ends the barrier (``guard.journal``), else the reaper's
        until_written(lambda: store.mark_dispatched(barrier.id, barrier.claim_token,
                                                    store_now(store)),
                      barrier.deadline_at, lambda: store_now(store),
                      f"the dispatch mark of store-joined chord {barrier.id}")
        return
    # a group or chain body: the join is over once it is sent, as Celery's (its own end is
    # the result backend's)
    until_written(lambda: store.finish_barrier(
        barrier.id, BarrierState.SUCCEEDED, store_now(store), app=barrier.app,
        reason="body published"), barrier.deadline_at, lambda: store_now(store),
        f"the end of store-joined chord {barrier.id}")


def _naming_its_chord(callback: Any, barrier: Barrier) -> Any:
    """A single-task body carries the journal's stamp (chord id, callback id, deadline,
    ``fan_in``), so that its end ends the barrier, a ``chord_callback`` runs once per chord,
    and a callback that raises, or whose value Celery cannot store, is dead-lettered under the
    group id users see."""
    headers = dict(callback.options.get("headers") or {})
    headers.setdefault(STAMP, callback_stamp(barrier.id, barrier.callback_id,
                                             barrier.deadline_at, fan_in=True))
    callback.options["headers"] = headers
    return callback


def _fail_as_celery_would(app: Celery, store: Store, barrier: Barrier, part: dict) -> None:
    """Fail the chord now, as Celery's join on the part's return does; where Celery's join
    is chord_unlock (``db+``), one ``result_chord_retry_interval`` later, as the unlock's
    poll would: ``AsyncResult.get()`` polls such a backend for the body before it looks at
    the header, and a body failed at once would raise the body's ChordError where Celery's
    users get the header's exception. A worker that dies meanwhile leaves the claim to the
    reaper (after the claim grace)."""
    if kind_of(app) is not ChordKind.UNLOCK:
        _fail_for_celery(app, store, barrier, part)
        return
    delay = float(app.conf.result_chord_retry_interval or 1.0)

    def fail() -> None:
        try:
            _fail_for_celery(app, store, barrier, part)
        except Exception:  # the claim stays the reaper's
            logger.exception("store-joined chord %s: failing it failed", barrier.id)

    timer = threading.Timer(delay, fail)
    timer.daemon = True
    timer.start()


def _fail_for_celery(app: Celery, store: Store, barrier: Barrier, part: dict) -> None:
    """Fail the chord as Celery does: ``Dependency <id> raised <exc>``."""
    raw = part.get("exc")
    exc = app.backend.exception_to_python(raw) if isinstance(raw, dict) \
        else RuntimeError(part.get("error"))
    message = f"Dependency {part.get('task_id')} raised {exc!r}"
    failed = store.move_barrier(barrier.id, (BarrierState.DISPATCHING,), BarrierState.FAILED,
                                store_now(store), reason=message, app=barrier.app)
    if failed is not None:
        fail_chord(app, store, failed, message, error=chord_error(message, exc))


def fail_chord(app: Celery, store: Store, barrier: Barrier, reason: str,
               operator: OperatorFail | None = None, error: BaseException | None = None,
               ) -> None:
    """The chord failed: fail its callback with a ChordError (``error``, else one saying
    ``reason``) so its errbacks run (in a worker when ``operator`` says this is an operator's
    process), and dead-letter it with the results recorded so far."""
    logger.error("durable chord %s failed: %s", barrier.id, reason)
    dead_letter(app, barrier, reason, inputs_of(store, barrier))
    message = f"durable chord {barrier.id} failed: {reason}"
    if operator is not None:
        operator.fail(app, barrier.callback, message)
        return
    try:
        fail_callback(app, barrier.callback, error or chord_error(message))
    except Exception:  # an errback or the result backend failed: the barrier says why anyway
        logger.exception("durable chord %s: running the callback's errbacks failed", barrier.id)
