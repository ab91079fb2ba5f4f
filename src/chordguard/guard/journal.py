"""Journal hooks: record each chord when published, each finished part, and how it ended.

- publication: the backend's ``apply_chord`` (called by every chord, any backend, any
  thread) is wrapped; it writes the record, stamps the body's final tasks (the callback, a
  chain's last step, every member of a group body; see ``body``) with a ``chordguard``
  message header (chord id, callback id, deadline; ``body`` when the callback is not one
  task, whose tree is then read from the journal, see ``body_watch``) and hands the
  deadline to the unlock task. It never unrolls a lazy header or changes what Celery
  publishes, and if the store fails the chord runs exactly as Celery runs it;
- finished parts: ``task_postrun`` of a header task appends to the process's PartBuffer;
- the end: ``task_postrun`` of a stamped final task ends the record (for a store-joined
  chord, ``fan_in``, its barrier): the callback's at once, a body's final task once the
  whole body is ready (judged in the background, see ``body_watch``); a failed one is
  dead-lettered with its inputs and traceback and counts for its breaker; a body Celery
  fails itself ends it as failed (``celery_failed``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, signals
from celery.utils.functional import _regen

from ..model import FAN_IN_MARK, STAMP, callback_stamp
from ..store.clock import store_now
from ..store.outage import until_written
from ..store.records import FAILED, SUCCEEDED, BarrierState, ChordRecord, PartUpdate, jsonable
from . import breaker, celery_failed, errbacks_run
from .backends import on_every_backend
from .body import UnknownBody, final_tasks, is_single_task
from .ending import dead_letter, ensure_record
from .state import Guard, guard_of

logger = logging.getLogger(__name__)
DEADLINE_OPTION = "chordguard_deadline"
HANDLED = "_chordguard_handled"  # set on a request whose end chord_callback already recorded
STORED_SUCCESS = "_chordguard_on_success"  # chord_callback's end, once SUCCESS is stored
WRAPPED = "_chordguard_journaled"  # set on a backend whose apply_chord journals


def with_deadline(signature: Any, seconds: float) -> Any:
    """``signature`` (a chord's callback) with its own deadline instead of the default."""
    return signature.set(**{DEADLINE_OPTION: float(seconds)})


def wrap_apply_chord(guard: Guard) -> None:
    """Journal every chord this app publishes, from any thread (``on_every_backend``)."""
    on_every_backend(guard.app, lambda backend: _wrap_backend(guard, backend))


def _wrap_backend(guard: Guard, backend: Any) -> None:
    if getattr(backend, WRAPPED, False):
        return
    original = backend.apply_chord

    def apply_chord(header_result_args: Any, body: Any, **kwargs: Any) -> Any:
        seconds = body.options.pop(DEADLINE_OPTION, None)  # ours: never reaches Celery
        try:
            kwargs[STAMP] = _record_publication(guard, header_result_args, body, seconds)
        except Exception:  # observation failed: the chord runs exactly as Celery runs it
            logger.exception("chordguard: could not journal a chord; it runs unguarded")
            count_journal_failure()
        return original(header_result_args, body, **kwargs)

    backend.apply_chord = apply_chord
    celery_failed.wrap(guard, backend)
    setattr(backend, WRAPPED, True)


def count_journal_failure() -> None:
    """Count a chord the journal could not record (``chordguard_journal_failures_total``)."""
    global _journal_failures
    if _journal_failures is None:
        from prometheus_client import Counter

        _journal_failures = Counter("chordguard_journal_failures",
                                    "Chords published unguarded because the journal failed")
    _journal_failures.inc()


_journal_failures: Any = None


def _record_publication(guard: Guard, header_result_args: Any, body: Any,
                        seconds: float | None) -> dict[str, float]:
    """Write the chord's record, then stamp the body's final tasks; consume nothing lazy."""
    group_id, results = header_result_args[0], header_result_args[1]
    created = store_now(guard.store)  # deadlines are judged on the store's clock
    deadline = created + float(seconds or guard.settings.deadline)
    try:
        finals = final_tasks(body)
    except UnknownBody:
        finals = []
    guard.store.record_chord(ChordRecord(
        id=group_id, app=guard.app.main or "", kind=guard.kind.value,
        callback_name=body.get("task"), callback_id=body.id,
        header_ids=_ready_ids(results), created_at=created, deadline_at=deadline,
        callback=jsonable(dict(body))))
    if finals and not is_single_task(body):  # its tree stays in the journal: O(1) a message
        stamp: dict = {"chord": group_id, "deadline": deadline, "body": True}
    else:
        stamp = callback_stamp(group_id, body.id, deadline)
    for task in finals:
        options = task.setdefault("options", {})
        headers = dict(options.get("headers") or {})
        outer = headers.get(STAMP)  # this chord is the body of another guarded chord
        if isinstance(outer, dict):
            outers = [{k: v for k, v in outer.items() if k != "outer"}, *outer.get("outer", [])]
            headers[STAMP] = {**stamp, "outer": outers}
        else:
            headers[STAMP] = stamp
        options["headers"] = headers
    errbacks_run.note_parts(guard.store, group_id, body)
    return {"deadline": deadline, "created": created}


def _ready_ids(results: Any) -> list[str]:
    """Header task ids, unless the header is a generator Celery unrolls while publishing."""
    if isinstance(results, _regen) and not getattr(results, "_regen__done", False):
        return []  # known as the parts finish
    return [r.id for r in results] if isinstance(results, list | tuple) else []


def connect_signals(app: Celery) -> None:
    """Connect the journal's handlers, filtered to tasks of ``app``."""

    def on_postrun(sender: Any = None, task_id: str | None = None, task: Any = None,
                   state: str | None = None, **_: Any) -> None:
        if task is None or task.app is not app:
            return
        request = task.request
        if request.chord is not None and request.group and state != "RETRY" \
                and FAN_IN_MARK not in ((request.chord or {}).get("options") or {}):
            guard = guard_of(app)
            if guard is not None:
                guard.parts.add(PartUpdate(request.group, task_id or "", state or "?",
                                           time.time()))
        if state in ("SUCCESS", "FAILURE") and (joined := _store_joined(request, task_id)):
            _end_barrier(app, joined, state, task.name)
            return
        if state != "SUCCESS":
            return
        stored_success = getattr(request, STORED_SUCCESS, None)
        if stored_success is not None:
            _end_with(stored_success, task_id)
            return
        for stamp in _stamps(request, task_id):
            if "body" not in stamp:
                _callback_succeeded(app, stamp, task.name)
            elif (guard := guard_of(app)) is not None:
                guard.bodies.finished(stamp, task.name)  # judged off the task's path

    def on_failure(sender: Any = None, task_id: str | None = None, exception: Any = None,
                   args: Any = None, einfo: Any = None, **_: Any) -> None:
        if sender is None or sender.app is not app:
            return
        for stamp in _stamps(sender.request, task_id):
            _callback_failed(app, stamp, sender.name, exception, args, einfo)

    signals.task_postrun.connect(on_postrun, weak=False)
    signals.task_failure.connect(on_failure, weak=False)


def _store_joined(request: Any, task_id: str | None) -> dict | None:
    """The stamp of a store-joined chord (``fan_in``) whose one callback this run is."""
    stamp = getattr(request, STAMP, None)
    if isinstance(stamp, dict) and stamp.get("fan_in") and stamp.get("callback") == task_id:
        return stamp
    return None


def _end_barrier(app: Celery, stamp: dict, state: str, name: str) -> None:
    """A store-joined chord's callback stored its outcome: its barrier ends with it (a
    failure was dead-lettered by ``on_failure`` or ``chord_callback``); an outage delays the
    write until the deadline, after which the reaper reads the outcome Celery stored."""
    guard = guard_of(app)
    if guard is None:
        return
    store, chord_id = guard.store, stamp["chord"]
    ended = BarrierState.SUCCEEDED if state == "SUCCESS" else BarrierState.FAILED
    reason = "callback succeeded" if state == "SUCCESS" else f"callback {name} failed"
    try:
        until_written(lambda: store.finish_barrier(chord_id, ended, store_now(store),
                                                   reason=reason, app=app.main or ""),
                      float(stamp.get("deadline") or 0), lambda: store_now(store),
                      f"the end of store-joined chord {chord_id}")
        if state == "SUCCESS":
            breaker.record(guard, name, succeeded=True)
    except Exception:
        logger.exception("chordguard: could not end store-joined chord %s", chord_id)


def _end_with(record_end: Any, task_id: str | None) -> None:
    try:
        record_end()
    except Exception:
        logger.exception("chordguard: could not journal the end of callback %s", task_id)


def _stamps(request: Any, task_id: str | None) -> list[dict]:
    """The chords this run ends (the chord it is the callback of, and any chord that has that
    chord as its body), unless ``chord_callback`` already journaled the run."""
    stamp = getattr(request, STAMP, None)
    if not isinstance(stamp, dict) or getattr(request, HANDLED, False):
        return []
    stamps = [stamp, *(s for s in stamp.get("outer") or [] if isinstance(s, dict))]
    return [s for s in stamps if "body" in s or s.get("callback") == task_id]


def body_ended(app: Celery, stamp: dict, name: str, outcome: str) -> None:
    """Every final task of a group/chain/chord body is ready: the chord ends with its body
    (called by the guard's ``BodyWatch``)."""
    if outcome == "SUCCESS":
        _callback_succeeded(app, stamp, name)
    elif (guard := guard_of(app)) is not None:
        guard.store.finish_chord(stamp["chord"], FAILED, "a task of the body failed")


def _callback_succeeded(app: Celery, stamp: dict, name: str) -> None:
    guard = guard_of(app)
    if guard is None:
        return
    try:
        guard.store.finish_chord(stamp["chord"], SUCCEEDED, "callback succeeded")
        breaker.record(guard, name, succeeded=True)
    except Exception:
        logger.exception("chordguard: could not journal the end of chord %s", stamp.get("chord"))


def _callback_failed(app: Celery, stamp: dict, name: str, exception: Any, args: Any,
                     einfo: Any) -> None:
    guard = guard_of(app)
    if guard is None:
        return
    try:
        record = ensure_record(guard, stamp["chord"], None)
        dead_letter(guard, record, f"callback_failed: {name} raised {exception!r}",
                    (args or [None])[0], error=repr(exception),
                    traceback=str(einfo) if einfo else None, fail_callback=False,
                    replay_of=stamp.get("replay"))
        breaker.record(guard, name, succeeded=False)
    except Exception:
        logger.exception("chordguard: could not dead-letter chord %s", stamp.get("chord"))

