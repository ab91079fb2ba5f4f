"""Journal hooks: record each chord when published, each finished part, and how it ended.

- publication: the backend's ``apply_chord`` (called by every chord, any backend) is wrapped;
  it writes the record, stamps the callback with a ``chordguard`` message header (chord id,
  callback id, deadline) and hands the deadline to the unlock task;
- finished parts: ``task_postrun`` of a header task appends to the process's PartBuffer;
- the end: ``task_postrun``/``task_failure`` of a stamped callback end the record; a failed
  callback is dead-lettered with its inputs and traceback, and counts for its breaker.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, signals

from ..store.records import SUCCEEDED, ChordRecord, PartUpdate, jsonable
from . import breaker
from .ending import dead_letter, ensure_record
from .state import STAMP, Guard, guard_of

logger = logging.getLogger(__name__)
DEADLINE_OPTION = "chordguard_deadline"
HANDLED = "_chordguard_handled"  # set on a request whose end chord_callback already recorded


def with_deadline(signature: Any, seconds: float) -> Any:
    """``signature`` (a chord's callback) with its own deadline instead of the default."""
    return signature.set(**{DEADLINE_OPTION: float(seconds)})


def wrap_apply_chord(guard: Guard) -> None:
    """Journal every chord this app publishes; never break publication if the store fails."""
    backend = guard.app.backend
    original = backend.apply_chord

    def apply_chord(header_result_args: Any, body: Any, **kwargs: Any) -> Any:
        try:
            meta = _record_publication(guard, header_result_args, body)
        except Exception:
            logger.exception("chordguard: could not journal a chord; it runs unguarded")
        else:
            kwargs[STAMP] = meta
        return original(header_result_args, body, **kwargs)

    backend.apply_chord = apply_chord


def _record_publication(guard: Guard, header_result_args: Any, body: Any) -> dict[str, float]:
    group_id, results = header_result_args[0], header_result_args[1]
    seconds = body.options.pop(DEADLINE_OPTION, None) or guard.settings.deadline
    created = time.time()
    deadline = created + float(seconds)
    headers = dict(body.options.get("headers") or {})
    headers[STAMP] = {"chord": group_id, "callback": body.id, "deadline": deadline}
    body.options["headers"] = headers
    header_ids = [r.id for r in results] if isinstance(results, list | tuple) else []
    guard.store.record_chord(ChordRecord(
        id=group_id, app=guard.app.main or "", kind=guard.kind.value,
        callback_name=body.get("task"), callback_id=body.id, header_ids=header_ids,
        created_at=created, deadline_at=deadline, callback=jsonable(dict(body))))
    return {"deadline": deadline, "created": created}


def connect_signals(app: Celery) -> None:
    """Connect the journal's handlers, filtered to tasks of ``app``."""

    def on_postrun(sender: Any = None, task_id: str | None = None, task: Any = None,
                   state: str | None = None, **_: Any) -> None:
        if task is None or task.app is not app:
            return
        request = task.request
        if request.chord is not None and request.group and state != "RETRY":
            guard = guard_of(app)
            if guard is not None:
                guard.parts.add(PartUpdate(request.group, task_id or "", state or "?",
                                           time.time()))
        stamp = getattr(request, STAMP, None)
        if stamp and state == "SUCCESS" and _is_callback(stamp, task_id, request):
            _callback_succeeded(app, stamp, task.name)

    def on_failure(sender: Any = None, task_id: str | None = None, exception: Any = None,
                   args: Any = None, einfo: Any = None, **_: Any) -> None:
        if sender is None or sender.app is not app:
            return
        request = sender.request
        stamp = getattr(request, STAMP, None)
        if stamp and _is_callback(stamp, task_id, request):
            _callback_failed(app, stamp, sender.name, exception, args, einfo)

    signals.task_postrun.connect(on_postrun, weak=False)
    signals.task_failure.connect(on_failure, weak=False)


def _is_callback(stamp: dict, task_id: str | None, request: Any) -> bool:
    return stamp.get("callback") == task_id and not getattr(request, HANDLED, False)


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

