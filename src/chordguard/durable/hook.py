"""The worker side: signal handlers that record header completions and callback outcomes.

A header task's message carries ``chordguard_durable`` = ``{"b": barrier id, "i": index,
"a": app name, "s": explicit store URL or None}``. ``task_postrun`` fires in the worker after
the task body and before an ``acks_late`` message is acknowledged, so a worker that dies
anywhere before the ack gets its message redelivered, re-run and recorded — the store
ignores the second record of the same index. No result backend is involved.

A write the store does not take is retried until it lands or the chord's deadline
(``outage``): the result is held by the worker, never dropped. Times written are the
store's (``store.clock``), so a worker's wrong clock neither advances nor delays a deadline.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from celery import Celery, signals
from celery.states import FAILURE, SUCCESS
from kombu.utils.json import dumps

from ..config import apply_store_timeouts, store_url
from ..store import Store, open_store
from ..store.clock import store_now
from ..store.outage import until_written
from ..store.records import FINAL, BarrierState, Completion, Outcome, Policy
from .barrier import MAX_OUTCOME_BYTES, claim_grace, failed, succeeded
from .deadletter import dead_letter
from .dispatch import CALLBACK_KEY, HEADER_KEY, dispatch, fail_chord
from .lazy import LazyResults, referenced_id

logger = logging.getLogger("chordguard.durable")
UNDATED_RETRY = 3600.0  # a message without the chord's deadline retries a write this long
_connected = False
_limits_set = False


def enable(app: Celery | None = None) -> None:
    """Connect the handlers (idempotent). Workers running durable chords' tasks need this:
    ``chordguard.install(app)`` calls it; ``durable_chord`` does too. With ``app``, its
    store timeouts (``chordguard_store_timeout``…) apply to this process's store clients."""
    global _connected
    if app is not None:
        _set_limits(app)
    if _connected:
        return
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="chordguard.durable.pre")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="chordguard.durable.post")
    signals.task_revoked.connect(_on_revoked, weak=False,
                                 dispatch_uid="chordguard.durable.revoked")
    _connected = True


def _set_limits(app: Celery) -> None:
    global _limits_set
    if not _limits_set:
        apply_store_timeouts(app)
        _limits_set = True


def _store(app: Celery, meta: dict[str, Any]) -> Store:
    _set_limits(app)
    return open_store(store_url(app, meta.get("s")))


def _must_land(store: Store, meta: dict[str, Any], call, what: str, again=None):
    """``call()``, retried through a store outage until the chord's deadline (``outage``)."""
    until = float(meta.get("d") or time.time() + UNDATED_RETRY)
    return until_written(call, until, lambda: store_now(store), what, again)


def _own_claim(store: Store, barrier_id: str, completion: Completion,
               token: str) -> Completion:
    """A retried completion that finds its part recorded: if the attempt whose reply was
    lost claimed the dispatch (or the failure), this worker holds that claim — act on it now
    rather than leave it to the reaper after the claim grace."""
    if completion.outcome is not Outcome.DUPLICATE:
        return completion
    barrier = store.barrier(barrier_id)
    if barrier is None or barrier.claim_token != token:
        return completion
    if barrier.state is BarrierState.DISPATCHING:
        inline = None if barrier.by_reference else store.envelopes(barrier_id, 0, barrier.total)
        return Completion(Outcome.DISPATCH, barrier, inline)
    if barrier.state is BarrierState.FAILED:
        return Completion(Outcome.FAIL, barrier)
    return completion


def record_part(app: Celery, meta: dict[str, Any], task_id: str, envelope: str,
                is_failure: bool, reason: str = "") -> Outcome:
    """Record one finished header part; dispatch or fail the chord if this claims it."""
    store = _store(app, meta)
    token = uuid.uuid4().hex

    def complete() -> Completion:
        return store.complete_part(
            meta["b"], int(meta["i"]), envelope, is_failure, store_now(store), token,
            app=meta.get("a") or app.main, grace=claim_grace(app.conf), reason=reason)

    completion = _must_land(store, meta, complete,
                            f"part {meta['i']} of durable chord {meta['b']}",
                            again=lambda: _own_claim(store, meta["b"], complete(), token))
    if completion.outcome is Outcome.DISPATCH and completion.barrier is not None:
        dispatch(app, store, completion.barrier, completion.envelopes)
    elif completion.outcome is Outcome.FAIL and completion.barrier is not None:
        fail_chord(app, store, completion.barrier, completion.barrier.reason or reason)
    elif completion.outcome is Outcome.MISSING:
        logger.warning("durable chord %s: no barrier in %s for part %s", meta["b"],
                       store.url, task_id)
    return completion.outcome


def _on_postrun(sender=None, task_id=None, task=None, args=None, retval=None, state=None,
                **_: Any) -> None:
    request = task.request
    meta = getattr(request, HEADER_KEY, None)
    if meta and state in (SUCCESS, FAILURE):
        if state == SUCCESS:
            try:
                envelope, is_failure, reason = succeeded(task_id, retval), False, ""
            except (TypeError, ValueError) as exc:  # not JSON-serialisable
                envelope, is_failure = failed(task_id, exc, "EncodeError"), True
                reason = f"header part {meta['i']} ({task_id}) returned a value JSON cannot hold"
        else:
            envelope, is_failure = failed(task_id, retval), True
            reason = f"header part {meta['i']} ({task_id}) failed: " \
                     f"{type(retval).__name__}: {retval}"
        record_part(task.app, meta, task_id, envelope, is_failure, reason)
    callback = getattr(request, CALLBACK_KEY, None)
    if callback and state in (SUCCESS, FAILURE):
        _finish_callback(task.app, callback, state, retval, args[0] if args else None)


def _finish_callback(app: Celery, meta: dict[str, Any], state: str, retval: Any,
                     inputs: Any) -> None:
    store = _store(app, meta)
    now = store_now(store)
    what = f"the callback outcome of durable chord {meta['b']}"
    if state == SUCCESS:
        try:
            outcome = dumps(retval)
        except (TypeError, ValueError):
            outcome = None
        if outcome is not None and len(outcome) > MAX_OUTCOME_BYTES:
            outcome = None
        _must_land(store, meta, lambda: store.finish_barrier(
            meta["b"], BarrierState.SUCCEEDED, now, outcome=outcome, app=meta.get("a")), what)
        return
    reason = f"callback raised {type(retval).__name__}: {retval}"
    if _must_land(store, meta, lambda: store.finish_barrier(
            meta["b"], BarrierState.FAILED, now, reason=reason, app=meta.get("a")), what):
        barrier = store.barrier(meta["b"])
        if barrier is not None:
            dead_letter(app, barrier, reason, inputs, error=repr(retval))


def callback_ended(app: Celery, request: Any) -> bool:
    """Is ``request`` a durable chord's callback whose barrier has ended?"""
    meta = getattr(request, CALLBACK_KEY, None)
    if not meta:
        return False
    barrier = _store(app, meta).barrier(meta["b"])
    return barrier is not None and barrier.state in FINAL


def _on_prerun(sender=None, task=None, args=None, **_: Any) -> None:
    meta = getattr(task.request, CALLBACK_KEY, None)
    if not meta or not isinstance(args, list) or not args:
        return
    barrier_id = referenced_id(args[0])
    if barrier_id is not None:
        store = _store(task.app, meta)
        args[0] = LazyResults(store, barrier_id, int(meta["n"]), Policy(meta["p"]))


def _on_revoked(sender=None, request=None, terminated=None, expired=None, **_: Any) -> None:
    meta = getattr(request, HEADER_KEY, None) if request is not None else None
    if not meta or sender is None:
        return
    why = "expired" if expired else "terminated" if terminated else "revoked"
    task_id = request.id
    record_part(sender.app, meta, task_id, failed(task_id, f"task {why}", "TaskRevokedError"),
                True, f"header part {meta['i']} ({task_id}) was {why}")
