"""A bounded ``celery.chord_unlock``: backoff with jitter, a deadline, one live chain.

It replaces Celery's task of the same name in a guarded app. Each poll:

1. stops if the chord already ended (a reaper, another chain, the callback's own failure);
2. stops, counted as a duplicate, if the chord's unlock lease is held by another chain
   (acks_late redelivery after a worker died, a restart): the lease token travels in the
   message and moves with every retry, so only the newest message of one chain matches;
3. publishes the callback when the header is ready (or fails it with ChordError when a
   header task failed, as Celery does), or dead-letters the chord when its callback's
   circuit breaker is open;
4. dead-letters the chord (callback FAILURE with ChordError, errbacks run) when the deadline
   has passed, or when a header task is ``lost_header`` after the grace period;
5. otherwise polls again after ``min(cap, interval * 2**n)``, jittered, never past the deadline.

Polls are counted in the journal, so their number is visible and bounded.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from typing import Any

from celery import Celery
from celery.canvas import maybe_signature
from celery.result import GroupResult, allow_join_result, result_from_tuple

from .._compat import chord_error, publish_callback
from ..actions.callback import fail_callback
from ..model import STAMP
from ..store import unavailable_errors
from ..store.clock import store_now
from . import breaker
from .ending import dead_letter, ensure_record, header_inputs
from .presence import lost_headers
from .state import guard_of

logger = logging.getLogger(__name__)
NAME = "celery.chord_unlock"
DONE_TOKEN = "done:"
LEASE = "unlock:"  # + chord id: the lease the newest message of the live chain holds
LEASE_SLACK = 300.0


def backoff(interval: float, polls: int, cap: float, remaining: float) -> float:
    """Seconds until the next poll: exponential from ``interval``, capped, jittered."""
    base = min(cap, interval * (2 ** min(polls, 30)))
    return max(0.05, min(random.uniform(base / 2, base), max(remaining, 0.05)))


def register(app: Celery) -> None:
    """Put the bounded unlock in place of Celery's ``celery.chord_unlock`` in ``app``."""
    app._tasks.pop(NAME, None)

    def unlock_chord(self, group_id: str, callback: Any, interval: float | None = None,
                     max_retries: int | None = None, result: list | None = None,
                     **kwargs: Any) -> None:
        try:
            _poll(self, group_id, callback, interval, result or [], kwargs)
        except unavailable_errors() as exc:
            _store_down(self, group_id, callback, interval, kwargs, exc)

    app._task_from_fun(unlock_chord, name=NAME, bind=True, shared=False, ignore_result=True,
                       max_retries=None, lazy=False,
                       default_retry_delay=app.conf.result_chord_retry_interval)


def _poll(self, group_id: str, callback: Any, interval: float | None, result: list,
          kwargs: dict[str, Any]) -> None:
    """One poll of a guarded chord (see the module docstring)."""
    guard = guard_of(self.app)
    assert guard is not None, "celery.chord_unlock replaced without a guard"
    store, settings = guard.store, guard.settings
    meta = dict(kwargs.get(STAMP) or {})
    token = meta.get("token")
    callback = maybe_signature(callback, app=self.app)
    header_ids = [r[0][0] if isinstance(r[0], list | tuple) else r[0] for r in result or []]
    record = ensure_record(guard, group_id, dict(callback), header_ids)
    if not record.open:
        logger.info("chordguard: chord %s already %s; unlock stops", group_id, record.state)
        return
    current = store.lease_holder(LEASE + group_id)
    if current is not None and current != token:
        store.count(group_id, "duplicates")
        logger.warning("chordguard: duplicate chord_unlock chain for %s stops", group_id)
        return
    store.count(group_id, "polls")
    deps = GroupResult(group_id, [result_from_tuple(r, app=self.app) for r in result or []],
                       app=self.app)
    try:
        ready = deps.ready()
    except Exception as exc:  # the backend hiccuped: poll again, the deadline still holds
        logger.warning("chordguard: chord %s: reading the header failed: %r", group_id, exc)
        ready = False
    now = store_now(store)  # deadlines are judged on the store's clock, never this host's
    deadline = meta.get("deadline") or record.deadline_at or now + settings.deadline
    if ready:
        if store.swap_lease(LEASE + group_id, token, DONE_TOKEN + str(token), LEASE_SLACK):
            _complete(self.app, guard, record, deps, callback)
        else:
            store.count(group_id, "duplicates")
        return
    if now >= deadline:
        inputs, states = header_inputs(guard, record.header_ids or header_ids)
        waiting = sum(1 for s in states.values() if s not in ("SUCCESS", "FAILURE"))
        dead_letter(guard, record, f"deadline: {waiting} of {len(states)} header task(s) "
                    f"unfinished {now - record.created_at:.0f} s after publication",
                    inputs, header_states=states)
        return
    if now - record.created_at >= settings.lost_header_grace:
        pending = [r.id for r in deps.results if r.state == "PENDING"]
        lost = lost_headers(self.app, pending, store.parts(group_id)) if pending else {}
        if lost:
            inputs, states = header_inputs(guard, record.header_ids or header_ids)
            first, evidence = next(iter(lost.items()))
            dead_letter(guard, record, f"lost_header: {len(lost)} header task(s) lost, "
                        f"first {first}: {evidence}", inputs, header_states=states)
            return
    new_token = uuid.uuid4().hex
    if not store.swap_lease(LEASE + group_id, token, new_token, deadline - now + LEASE_SLACK):
        store.count(group_id, "duplicates")
        logger.warning("chordguard: chord_unlock chain for %s lost its lease; stops", group_id)
        return
    step = interval if interval is not None else self.app.conf.result_chord_retry_interval
    delay = backoff(float(step or 1.0), self.request.retries,
                    settings.unlock_max_interval, deadline - now)
    options = {}
    if kwargs.get("_chord_unlock_exchange_type") is not None:
        options["exchange_type"] = kwargs["_chord_unlock_exchange_type"]
    new_kwargs = dict(self.request.kwargs or {})
    new_kwargs[STAMP] = {**meta, "deadline": deadline, "token": new_token}
    # The count never limits this task (a max_retries annotation is ignored): the
    # deadline does.
    raise self.retry(kwargs=new_kwargs, countdown=delay,
                     max_retries=self.request.retries + 1, **options)


def _store_down(self, group_id: str, callback: Any, interval: float | None,
                kwargs: dict[str, Any], exc: Exception) -> None:
    """The store does not answer: keep polling without a lease, still bounded by the deadline
    carried in the message; past it, fail the callback through the backend alone."""
    logger.error("chordguard: store unavailable while polling chord %s: %r", group_id, exc)
    guard = guard_of(self.app)
    deadline = (kwargs.get(STAMP) or {}).get("deadline")
    now = store_now(guard.store) if guard is not None else time.time()  # last offset known
    if deadline is not None and now >= deadline:
        error = chord_error(f"chord {group_id} failed by chordguard: deadline passed "
                            f"(store unavailable: {exc!r})")
        fail_callback(self.app, maybe_signature(callback, app=self.app), error)
        return
    step = interval if interval is not None else self.app.conf.result_chord_retry_interval
    cap = guard.settings.unlock_max_interval if guard is not None else 30.0
    delay = backoff(float(step or 1.0), self.request.retries, cap,
                    (deadline - now) if deadline is not None else cap)
    raise self.retry(countdown=delay, max_retries=self.request.retries + 1)


def _complete(app: Celery, guard, record, deps: GroupResult, callback) -> None:
    """The header is ready: publish the callback, or end the chord as Celery would."""
    try:
        with allow_join_result():
            join = deps.join_native if deps.supports_native_join else deps.join  # as Celery
            ret = join(timeout=app.conf.result_chord_join_timeout, propagate=True)
    except Exception as exc:
        try:
            culprit = next(deps._failed_join_report())
            reason = f"Dependency {culprit.id} raised {exc!r}"
        except StopIteration:
            reason = repr(exc)
        inputs, states = header_inputs(guard, record.header_ids)
        if dead_letter(guard, record, f"header_failed: {reason}", inputs, header_states=states,
                       fail_callback=False) is not None:  # as Celery: its error, its cause
            fail_callback(app, callback, chord_error(reason, exc))
        return
    if callback.name and not breaker.allow(guard, callback.name):
        dead_letter(guard, record, f"circuit open for {callback.name}: callback not run", ret)
        return
    try:
        publish_callback(app, callback, ret)
    except Exception as exc:
        logger.exception("chordguard: chord %s: publishing the callback failed", record.id)
        fail_callback(app, callback, chord_error(f"Callback error: {exc!r}", exc))

