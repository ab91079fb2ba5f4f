"""The barrier: one record per durable chord, and the interface every store implements.

A barrier counts its header parts down. Each finished header records its envelope once
(keyed by its index) and decrements ``remaining``; the completion that brings it to zero
*claims* the dispatch (state ``dispatching`` with its own claim token) and publishes the
callback. With ``on_header_failure="fail"`` the first failed part claims the failure
instead. Everything that changes state does so in one atomic store operation.

States: ``waiting`` -> ``dispatching`` -> ``dispatched`` -> ``succeeded`` | ``failed``;
``waiting``/``dispatching``/``dispatched`` -> ``failed`` (a failed header, the reaper,
``fail_durable_chord``).
"""

from __future__ import annotations

from typing import Any, Protocol

from kombu.utils.json import dumps, loads

from ..store.records import (  # the records live with the store; durable's API names them
    CLAIM_GRACE,
    FINAL,
    IN_FLIGHT,
    KEEP_SECONDS,
    Barrier,
    BarrierState,
    Completion,
    Outcome,
    Policy,
)

__all__ = ["CLAIM_GRACE", "FINAL", "IN_FLIGHT", "KEEP_SECONDS", "MAX_OUTCOME_BYTES", "Barrier",
           "BarrierState", "BarrierStore", "Completion", "Outcome", "Policy", "callback_arg",
           "claim_grace", "failed", "succeeded"]

MAX_OUTCOME_BYTES = 1_000_000  # larger callback results are not copied into the barrier


class BarrierStore(Protocol):
    """Where barriers live. Every method is one atomic operation on the store."""

    url: str

    def create(self, barrier: Barrier) -> None:
        """Record a new barrier (and its header ids)."""

    def complete(self, barrier_id: str, index: int, envelope: str, failed: bool, now: float,
                 token: str, app: str = "", grace: float = CLAIM_GRACE,
                 reason: str = "") -> Completion:
        """Record part ``index`` once and count down, in one round trip.

        ``app`` names the creating app (Redis keeps one reaper index per app); ``grace`` is
        how long a dispatch claim may stay unpublished; ``reason`` is recorded when this
        part fails the chord.
        """

    def envelopes(self, barrier_id: str, start: int, stop: int) -> list[str | None]:
        """Parts ``start``..``stop - 1`` in header order (None: not recorded)."""

    def mark_dispatched(self, barrier_id: str, token: str, now: float) -> bool:
        """``dispatching`` -> ``dispatched`` if ``token`` still holds the claim."""

    def finish(self, barrier_id: str, state: BarrierState, now: float, outcome: str | None = None,
               reason: str | None = None, app: str | None = None) -> bool:
        """``dispatched`` (or ``dispatching``) -> ``succeeded``/``failed``: the callback ended.

        ``app`` (the creating app's name) saves a Redis store one read when given."""

    def fail(self, barrier_id: str, reason: str, now: float, token: str) -> Barrier | None:
        """Any in-flight state -> ``failed``; the failed barrier, or None if already final."""

    def reclaim(self, barrier_id: str, now: float, token: str,
                grace: float = CLAIM_GRACE) -> Barrier | None:
        """Take over a ``dispatching`` claim older than ``grace`` (its claimer died)."""

    def get(self, barrier_id: str, with_header_ids: bool = False) -> Barrier | None:
        """The barrier, or None."""

    def in_flight(self, app: str) -> list[Barrier]:
        """Every in-flight barrier created by app ``app``."""

    def due(self, app: str, now: float, limit: int = 500) -> list[Barrier]:
        """In-flight barriers of ``app`` the reaper must look at now."""

    def purge(self, app: str, before: float) -> int:
        """Delete ``app``'s barriers that ended before ``before``; how many (Redis: their keys
        expire by themselves, 0)."""

    def lock(self, name: str, holder: str, ttl: float, now: float) -> bool:
        """Take or renew a lease held by ``holder`` for ``ttl`` seconds (0: release it)."""


def claim_grace(conf: Any) -> float:
    """Seconds a dispatch claim may stay unpublished before the reaper takes it over."""
    return float(conf.get("chordguard_claim_grace") or CLAIM_GRACE)


def succeeded(task_id: str, result: Any) -> str:
    """A header's success envelope, as JSON."""
    return dumps({"status": "succeeded", "result": result, "task_id": task_id})


def failed(task_id: str, exc: BaseException | str, type_name: str | None = None) -> str:
    """A header's failure envelope, as JSON (the guard's ``{status, error, type, task_id}``)."""
    return dumps({"status": "failed", "error": str(exc),
                  "type": type_name or type(exc).__name__, "task_id": task_id})


def callback_arg(envelope: str | None, policy: Policy) -> Any:
    """What the callback receives for one part: its result (``fail``) or its envelope."""
    if envelope is None:
        return None
    value = loads(envelope)
    return value.get("result") if policy is Policy.FAIL else value
