"""What operators' processes ask guarded workers: fail a chord's body where Celery would
(``actions.callback.FAIL_TASK``), and say who they are (``config.PRESENCE_COMMAND``: store,
host, pid, queues), so the CLI knows a worker can fail bodies and whether it shares the store.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from celery import Celery
from celery.worker.control import inspect_command

from .._compat import chord_error
from ..actions.callback import FAIL_TASK, fail_callback
from ..config import PRESENCE_COMMAND, store_identity
from .state import guard_of


def register(app: Celery) -> None:
    """Register the fail task in ``app`` (the control command is registered on import)."""

    @app.task(name=FAIL_TASK, shared=False, bind=True, ignore_result=False, acks_late=False)
    def fail_body(self: Any, callback: Mapping[str, Any], message: str) -> dict[str, Any]:
        """Mark ``callback`` FAILURE with ChordError(``message``); its errbacks run here."""
        fail_callback(self.app, callback, chord_error(message))
        return {"worker": self.request.hostname, "host": socket.gethostname(),
                "pid": os.getpid()}


@inspect_command(name=PRESENCE_COMMAND)
def presence(state: Any) -> dict[str, Any]:
    """This worker's guard: its store (compared, never with a password), host, pid, queues."""
    app = state.consumer.app
    guard = guard_of(app)
    if guard is None:
        return {"error": "chordguard is not installed in this worker's app"}
    queues = [q.name for q in state.consumer.task_consumer.queues] \
        if state.consumer.task_consumer is not None else []
    return {"store": store_identity(guard.settings.store), "host": socket.gethostname(),
            "pid": os.getpid(), "fail_task": FAIL_TASK in app.tasks, "queues": queues}
