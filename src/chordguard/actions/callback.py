"""Failing a chord's body with a ChordError, exactly as Celery does (errbacks included), in
the process where Celery would run its errbacks.

``fail_callback`` is the one implementation: it marks the body FAILURE here and runs its
errbacks as Celery does — new-style ones are published, old-style ``(request, exc,
traceback)`` ones are *called in this process*. Workers (the guard, durable chords) call it
directly. An operator's process (CLI, dashboard) goes through ``OperatorFail``: it publishes
chordguard's fail task (``FAIL_TASK``, registered by ``chordguard.install(app)``) so a
worker does it, and runs it here only when no user code would run here, or when asked to
(``in_process``), with what the errbacks print captured.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from celery.canvas import Signature, maybe_signature
from celery.exceptions import TimeoutError as CeleryTimeout

from .._compat import chord_error, old_style_errback
from .._timeouts import within
from .._urls import mask_text
from ..errors import ChordguardError
from ..monitor.sources.guard_presence import Presence, guard_presence

FAIL_TASK = "chordguard.fail_callback"
TAKEN_WAIT = 10.0  # how long an operator waits for a worker to take the fail task


def fail_callback(app: Celery, callback: Mapping[str, Any], error: BaseException) -> None:
    """Mark a chord's body FAILURE with ``error`` as Celery does: ``chord_error_from_stack``
    on its real signature type (a group body fails every member and runs each member's
    errbacks; a task body runs its errbacks). Inside an ``except`` block Celery's error is
    stored with the exception being handled, as Celery's own chord_unlock does."""
    signature = _signature(app, callback)
    mark = _failing.set(True)
    try:
        if sys.exc_info()[1] is not None:
            app.backend.chord_error_from_stack(signature, error)
            return
        try:  # chord_error_from_stack stores the traceback being handled: there must be one
            raise error
        except type(error):
            app.backend.chord_error_from_stack(signature, error)
    finally:
        _failing.reset(mark)


_failing: ContextVar[bool] = ContextVar("chordguard_failing_callback", default=False)


def failing_here() -> bool:
    """Is ``fail_callback`` at work in this context (chordguard failing a body, not Celery)?"""
    return _failing.get()


def old_style_errbacks(app: Celery, callback: Mapping[str, Any]) -> list[str]:
    """Names of the body's errbacks (its own and its members') that Celery would call in
    the process failing it."""
    found: list[str] = []
    pending = [_signature(app, callback)]
    while pending:
        signature = pending.pop()
        pending += [_signature(app, s) for s in signature.kwargs.get("tasks") or []
                    if isinstance(s, Mapping)]
        for errback in signature.options.get("link_error") or []:
            errback = app.signature(errback)
            if old_style_errback(app, errback):
                found.append(errback.task)
    return found


@dataclass
class OperatorFail:
    """Failing bodies from an operator's process (CLI, dashboard), not a worker.

    By default a guarded worker fails each body (chordguard's fail task), as Celery would
    fail it in a worker. Without one, a body whose errbacks are all new-style is failed here
    (Celery publishes those); one with old-style errbacks is refused unless ``in_process``,
    which runs them here with their stdout/stderr captured.
    """

    in_process: bool = False
    wait: float = TAKEN_WAIT
    _workers: list[Presence] | None = field(default=None, repr=False)

    def workers(self, app: Celery) -> list[Presence]:
        """Guarded workers that run the fail task (asked once)."""
        if self._workers is None:
            try:
                self._workers = [p for p in guard_presence(app) if p.fail_task]
            except Exception:  # no answer: no worker known to run it (refuse, never guess)
                self._workers = []
        return self._workers

    def check(self, app: Celery, callback: Mapping[str, Any] | None) -> None:
        """Raise ChordguardError, before anything is done, when failing ``callback`` here
        would run user code in this process without ``in_process``."""
        if callback is None or self.in_process or self.workers(app):
            return
        old = old_style_errbacks(app, callback)
        if old:
            raise ChordguardError(
                f"callback {callback.get('task')} has old-style errback(s) {', '.join(old)}, "
                "which Celery runs in the process failing it, and no worker runs chordguard's "
                f"{FAIL_TASK} (chordguard.install(app) in the workers' app): nothing done; "
                "add --in-process to run them here")

    def fail(self, app: Celery, callback: Mapping[str, Any], message: str) -> str:
        """Fail ``callback`` with ChordError(``message``); return where and how, in words."""
        self.check(app, callback)
        workers = self.workers(app)
        if workers:
            return _in_worker(app, callback, message, workers, self.wait)
        with _captured() as output:
            fail_callback(app, callback, chord_error(message))
        printed = mask_text(output.getvalue().strip())
        return "failed in this process" + (f"; its errbacks printed: {printed}" if printed
                                           else "")


def _in_worker(app: Celery, callback: Mapping[str, Any], message: str,
               workers: list[Presence], wait: float) -> str:
    queue = app.conf.task_default_queue
    if not any(queue in w.queues for w in workers):
        queue = next((q for w in workers for q in w.queues), queue)
    sent = within(wait, "broker (publish fail task)", app.send_task, FAIL_TASK,
                  (dict(_signature(app, callback)), message), queue=queue)
    try:
        answer = sent.get(timeout=wait, propagate=False, disable_sync_subtasks=False)
    except CeleryTimeout:
        return (f"sent to the workers as task {sent.id} (queue {queue}); not taken within "
                f"{wait:g} s: a worker will fail it when it takes the message")
    if sent.state != "SUCCESS" or not isinstance(answer, Mapping):
        return f"worker task {sent.id} {sent.state}: {mask_text(repr(answer))}"
    return f"failed in worker {answer.get('worker')} (pid {answer.get('pid')})"


@contextlib.contextmanager
def _captured() -> Iterator[io.StringIO]:
    """What user code prints to stdout or stderr here, kept out of the operator's output."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        yield buffer


def _signature(app: Celery, callback: Mapping[str, Any]) -> Signature:
    return callback if isinstance(callback, Signature) else \
        maybe_signature(dict(callback), app=app)
