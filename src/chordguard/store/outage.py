"""Writes that must land: a durable header's completion, a callback's outcome, a dispatch
mark, a guarded callback's run-once claim and end state.

A write the store does not take (down, hung past the client timeout, failing over) is
retried with a bounded backoff until it lands or ``until`` (the chord's deadline on the
store's clock) has passed. The worker holds the result meanwhile and acknowledges nothing:
``task_postrun`` runs before an ``acks_late`` message is acknowledged, so a worker killed
while it waits has its message redelivered. Past the deadline the reaper fails the chord
anyway, so the write is given up (UnreachableError). docs/reliability.md has the design.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import UnreachableError
from .backends import unreachable

T = TypeVar("T")
BACKOFF = (0.1, 0.25, 0.5, 1.0, 2.0)  # then every BACKOFF[-1] seconds
logger = logging.getLogger("chordguard.store")


def until_written(call: Callable[[], T], until: float, clock: Callable[[], float],
                  what: str, again: Callable[[], T] | None = None) -> T:
    """``call()`` once it succeeds; retried while the store is unreachable and
    ``clock()`` < ``until``. Any other error is raised at once. ``again`` replaces ``call``
    for the retries (a write that may have landed before its reply was lost)."""
    attempt = 0
    while True:
        try:
            return (again or call)() if attempt else call()
        except Exception as exc:
            if not unreachable(exc):
                raise
            if clock() >= until:
                raise UnreachableError(f"the store did not take {what} before the chord's "
                                       f"deadline: {exc}") from exc
            delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
            if attempt == 0 or delay == BACKOFF[-1] and attempt % 15 == 0:
                logger.warning("store write (%s) failed (%r); retrying until it lands or the "
                               "chord's deadline", what, exc)
            attempt += 1
            time.sleep(delay)
