"""Task patterns: ``header_task`` (failure envelopes) and ``chord_callback`` (normalised,
validated, run-once, dead-lettered on failure, behind a circuit breaker).
"""

from __future__ import annotations

import functools
import inspect
import logging
import traceback as tb
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Celery, shared_task
from celery.exceptions import Ignore, Retry

from ..durable.hook import callback_ended
from ..errors import CircuitOpenError
from ..model import READY_STATES, STAMP
from ..store.clock import store_now
from ..store.outage import until_written
from ..store.records import SUCCEEDED
from . import breaker, envelopes
from .ending import ENDED_HOLDER, RUN_CLAIM, dead_letter, ensure_record
from .journal import HANDLED, STORED_SUCCESS
from .liveness import Heartbeat
from .state import Guard, guard_of

logger = logging.getLogger(__name__)
T = TypeVar("T")


def _task_decorator(app: Celery | None, options: dict[str, Any]) -> Callable:
    options.setdefault("bind", True)
    return app.task(**options) if app is not None else shared_task(**options)


def header_task(fn: Callable | None = None, *, app: Celery | None = None, envelope: bool = True,
                autoretry_for: tuple[type[BaseException], ...] = (), **options: Any) -> Any:
    """A chord header task that returns a failure envelope instead of breaking its chord.

    An exception in ``autoretry_for`` is retried (``max_retries``, ``default_retry_delay``);
    once retries are exhausted, or for any other exception, the task returns
    ``{"status": "failed", "error", "type", "task_id"}``. A function whose return annotation
    is not None/Optional never returns a bare ``None``: that becomes an envelope too.
    ``envelope=False`` lets exceptions propagate as usual.
    """

    def decorate(func: Callable) -> Any:
        declared = _declares_value(func)

        @functools.wraps(func)
        def run(self, *args: Any, **kwargs: Any) -> Any:
            try:
                value = func(*args, **kwargs)
            except (Retry, Ignore):
                raise
            except Exception as exc:
                if not envelope:
                    raise
                if isinstance(exc, autoretry_for) and self.max_retries is not None \
                        and self.request.retries < self.max_retries:
                    raise self.retry(exc=exc) from exc
                logger.warning("chordguard: header task %s failed for good: %r",
                               self.request.id, exc)
                return envelopes.from_exception(exc, self.request.id)
            if value is None and declared and envelope:
                return envelopes.envelope("returned None where a value was declared",
                                          "NoneResult", self.request.id)
            return value

        run.chordguard_run_once = True  # doctor reads the mark
        return _task_decorator(app, {"name": options.pop("name", None) or
                                     f"{func.__module__}.{func.__name__}", **options})(run)

    return decorate(fn) if fn is not None else decorate


def _declares_value(func: Callable) -> bool:
    annotation = inspect.signature(func).return_annotation
    if annotation is inspect.Signature.empty:
        return False
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return not (annotation is None or "None" in text or "Optional" in text)


def split_results(results: Any, app: Celery | None = None,
                  schema: Any = None) -> tuple[list[Any], list[dict[str, Any]]]:
    """Normalise a callback's input into (successes, failure envelopes).

    ``None`` (as a whole or per item), failure envelopes and serialised result tuples
    ``[[task_id, parent], None]`` are failures unless the tuple's task succeeded. With
    ``schema`` (a pydantic model or a callable), each success is validated/converted; one
    that does not validate becomes a failure of type ``ValidationError``.
    """
    if results is None:
        return [], [envelopes.envelope("the callback received None instead of the header's "
                                       "results", "NoneResult", None)]
    successes, failures = [], []
    for item in results if isinstance(results, list | tuple) else [results]:
        if item is None:
            failures.append(envelopes.envelope("a header task returned None", "NoneResult",
                                               None))
            continue
        if envelopes.is_failure(item):
            failures.append(item)
            continue
        if _is_result_tuple(item) and app is not None:
            result = app.AsyncResult(item[0][0])
            if not result.successful():
                failures.append(envelopes.envelope(f"result tuple of a task in state "
                                                   f"{result.state}", "ResultTuple", result.id))
                continue
            item = result.result
        if schema is not None:
            try:
                item = _validate(schema, item)
            except Exception as exc:
                failures.append(envelopes.envelope(str(exc), "ValidationError", None)
                                | {"value": item})
                continue
        successes.append(item)
    return successes, failures


def _is_result_tuple(item: Any) -> bool:
    return (isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], list | tuple)
            and len(item[0]) == 2 and isinstance(item[0][0], str) and len(item[0][0]) == 36)


def _validate(schema: Any, item: Any) -> Any:
    if hasattr(schema, "model_validate"):
        return schema.model_validate(item)
    return schema(item)


def chord_callback(fn: Callable | None = None, *, app: Celery | None = None, schema: Any = None,
                   **options: Any) -> Any:
    """A chord callback task: ``fn(successes, failures, *args, **kwargs)``.

    Inputs are normalised by ``split_results`` (validated against ``schema``). In a guarded
    app the body runs at most once per chord (a second delivery is dropped, never touching
    the stored outcome; a redelivery of a run that crashed — its liveness lease lapsed, no
    end recorded — is dead-lettered), does not run while the callback's circuit
    breaker is open (the chord is dead-lettered), and if it raises the chord is dead-lettered
    with its inputs and traceback and ends failed — the exception is recorded, never retried.
    """

    def decorate(func: Callable) -> Any:
        @functools.wraps(func)
        def run(self, results: Any = None, *args: Any, **kwargs: Any) -> Any:
            guard = guard_of(self.app)
            stamp = getattr(self.request, STAMP, None) or {}
            # the chord's one callback; a member of a group body (or a task outside any
            # guarded chord) runs once by its own id and leaves the chord's end to the journal
            sole = stamp.get("callback") == self.request.id and "body" not in stamp
            chord_id = stamp.get("chord") if sole else self.request.id
            if guard is not None and sole:
                setattr(self.request, HANDLED, True)
            beat = None
            if guard is not None and not stamp.get("replay"):
                beat = _enter_once(self, guard, chord_id, results, stamp)
            successes, failures = split_results(results, self.app, schema)
            try:
                value = func(successes, failures, *args, **kwargs)
            except (Retry, Ignore):
                raise
            except Exception as exc:
                if guard is not None:
                    setattr(self.request, HANDLED, True)
                    record = ensure_record(guard, stamp.get("chord") or chord_id, None)
                    dead_letter(guard, record, f"callback_failed: {self.name} raised {exc!r}",
                                results, error=repr(exc), traceback=tb.format_exc(),
                                fail_callback=False, replay_of=stamp.get("replay"))
                    breaker.record(guard, self.name, succeeded=False)
                raise
            finally:
                if beat is not None:
                    beat.stop()
            if guard is not None and sole:
                # the end follows what Celery stores: SUCCESS (task_postrun), or a result it
                # cannot encode, failed by Celery and dead-lettered by the journal
                setattr(self.request, HANDLED, False)
                setattr(self.request, STORED_SUCCESS, (lambda: None) if stamp.get("replay")
                        else lambda: _succeeded(guard, stamp, chord_id, self.name))
            return value

        run.chordguard_run_once = True  # doctor reads the mark
        return _task_decorator(app, {"name": options.pop("name", None) or
                                     f"{func.__module__}.{func.__name__}", **options})(run)

    return decorate(fn) if fn is not None else decorate


def _succeeded(guard: Guard, stamp: dict, chord_id: str, name: str) -> None:
    _must_land(guard, stamp, lambda: guard.store.finish_chord(
        chord_id, SUCCEEDED, "callback succeeded"), f"the end of chord {chord_id}")
    _must_land(guard, stamp, lambda: breaker.record(guard, name, succeeded=True),
               f"the breaker of {name}")


def _must_land(guard: Guard, stamp: dict, call: Callable[[], T], what: str,
               again: Callable[[], T] | None = None) -> T:
    """``call()``, retried through a store outage until the chord's deadline: an outage
    delays a callback, never fails it (``store.outage``)."""
    until = float(stamp.get("deadline") or store_now(guard.store) + guard.settings.deadline)
    return until_written(call, until, lambda: store_now(guard.store), what, again)


def _enter_once(task: Any, guard: Guard, chord_id: str, results: Any,
                stamp: dict) -> Heartbeat:
    """Take the chord's liveness lease and run-once claim and pass its breaker, or stop here;
    the heartbeat keeps the lease while the body runs. A claim retried after an outage that
    finds this delivery's own id took it then (the reply was lost)."""
    key, me = RUN_CLAIM + chord_id, task.request.id
    beat = Heartbeat(guard.store, chord_id)
    if not _must_land(guard, stamp, beat.take, f"the liveness lease of chord {chord_id}",
                      again=beat.retake):
        logger.warning("chordguard: chord %s callback is running elsewhere; ignored", chord_id)
        guard.store.count(chord_id, "callback_duplicates")
        raise Ignore()
    beat.start()
    try:
        _claim(task, guard, chord_id, results, stamp, key, me)
    except BaseException:
        beat.stop()
        raise
    return beat


def _claim(task: Any, guard: Guard, chord_id: str, results: Any, stamp: dict, key: str,
           me: str) -> None:
    holder = _must_land(guard, stamp, lambda: guard.store.claim(key, me),
                        f"the run-once claim of chord {chord_id}",
                        again=lambda: _unless_mine(guard.store.claim(key, me), me))
    if holder is not None:
        if holder == me and not _ended(guard, chord_id, task):
            # our own earlier delivery started, its lease lapsed and it never ended: a crash
            guard.store.count(chord_id, "callback_duplicates")
            record = ensure_record(guard, chord_id, None)
            dead_letter(guard, record, "callback_failed: a delivery of this callback started "
                        "and never finished (worker lost?); not run again", results,
                        fail_callback=False)
            raise CircuitOpenError(f"chord {chord_id}: callback not run twice")
        # a duplicate of a run that ended: its stored result is left as it is
        logger.warning("chordguard: chord %s callback already claimed by %s; ignored",
                       chord_id, holder)
        if not holder.startswith(ENDED_HOLDER):  # not a chord already ended by the guard
            guard.store.count(chord_id, "callback_duplicates")
        raise Ignore()
    if not _must_land(guard, stamp, lambda: breaker.allow(guard, task.name),
                      f"the breaker of {task.name}"):
        record = ensure_record(guard, chord_id, None)
        dead_letter(guard, record, f"circuit open for {task.name}: callback not run", results,
                    fail_callback=False)
        raise CircuitOpenError(f"circuit breaker open for {task.name}: chord {chord_id} "
                               "dead-lettered")


def _ended(guard: Guard, chord_id: str, task: Any) -> bool:
    """Has the chord ended, or its callback stored an outcome?"""
    record = guard.store.chord(chord_id)
    if (record is not None and not record.open) or callback_ended(task.app, task.request):
        return True
    try:
        return task.app.AsyncResult(task.request.id).state in READY_STATES
    except Exception:  # no result backend (a durable chord's app)
        return False


def _unless_mine(holder: str | None, me: str) -> str | None:
    return None if holder == me else holder
