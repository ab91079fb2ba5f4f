"""A running callback's liveness lease: held while its body runs, renewed by a heartbeat.

The run-once claim says a callback started; this lease says it is still running. A
delivery that finds the claim taken by its own id, and the lease lapsed with no end
recorded, follows a crashed run; while the lease is held, another delivery is running.
"""

from __future__ import annotations

import logging
import threading
import uuid

from ..store import Store

logger = logging.getLogger(__name__)
LIVE = "live:"
TTL = 6.0  # seconds a run's lease outlives its last renewal
RENEW = 2.0


class Heartbeat:
    """The liveness lease of one callback run of ``chord_id``."""

    def __init__(self, store: Store, chord_id: str) -> None:
        self.store, self.name, self.token = store, LIVE + chord_id, uuid.uuid4().hex
        self._stop = threading.Event()

    def take(self) -> bool:
        """Take the lease; False when another run of the chord's callback holds it."""
        return self.store.swap_lease(self.name, None, self.token, TTL)

    def retake(self) -> bool:
        """``take`` retried after an outage: True when an earlier try took it."""
        return self.take() or self.store.lease_holder(self.name) == self.token

    def start(self) -> None:
        threading.Thread(target=self._beat, name="chordguard-liveness", daemon=True).start()

    def stop(self) -> None:
        """Stop renewing: the lease lapses ``TTL`` later, once the outcome is stored."""
        self._stop.set()

    def _beat(self) -> None:
        while not self._stop.wait(RENEW):
            try:
                if not self.store.swap_lease(self.name, self.token, self.token, TTL):
                    return
            except Exception as exc:  # an outage: the next beat tries again
                logger.warning("chordguard: renewing %s failed: %r", self.name, exc)
