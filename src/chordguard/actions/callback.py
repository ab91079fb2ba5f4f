"""Failing a chord's body with a ChordError, exactly as Celery does (errbacks included)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from celery import Celery
from celery.canvas import Signature, maybe_signature


def fail_callback(app: Celery, callback: Mapping[str, Any], error: BaseException) -> None:
    """Mark a chord's body FAILURE with ``error`` as Celery does: ``chord_error_from_stack``
    on its real signature type (a group body fails every member and runs each member's
    errbacks; a task body runs its errbacks). Inside an ``except`` block Celery's error is
    stored with the exception being handled, as Celery's own chord_unlock does."""
    signature = callback if isinstance(callback, Signature) else \
        maybe_signature(dict(callback), app=app)
    if sys.exc_info()[1] is not None:
        app.backend.chord_error_from_stack(signature, error)
        return
    try:  # chord_error_from_stack stores the traceback being handled: there must be one
        raise error
    except type(error):
        app.backend.chord_error_from_stack(signature, error)
