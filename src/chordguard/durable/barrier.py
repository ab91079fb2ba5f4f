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

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from kombu.utils.json import dumps, loads

CLAIM_GRACE = 30.0  # a dispatch claim older than this, not yet published, is re-dispatched
# (``chordguard_claim_grace`` in app.conf overrides it; see ``claim_grace``)
KEEP_SECONDS = 86400.0  # finished barriers are kept this long for the monitor and handles
MAX_OUTCOME_BYTES = 1_000_000  # larger callback results are not copied into the barrier


class BarrierState(StrEnum):
    WAITING = "waiting"
    DISPATCHING = "dispatching"
    DISPATCHED = "dispatched"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


IN_FLIGHT = (BarrierState.WAITING, BarrierState.DISPATCHING, BarrierState.DISPATCHED)
FINAL = (BarrierState.SUCCEEDED, BarrierState.FAILED)


class Policy(StrEnum):
    """What a header failing for good does to the chord."""

    FAIL = "fail"  # the chord fails at once; the callback's errbacks run
    CONTINUE = "continue"  # the callback gets every header's envelope


@dataclass
class Barrier:
    """One durable chord as its store keeps it. Times are epoch seconds."""

    id: str
    app: str
    state: BarrierState
    policy: Policy
    total: int
    remaining: int
    callback: dict[str, Any]  # the callback signature, as a dict
    callback_id: str
    created_at: float
    updated_at: float
    deadline_at: float
    stall_seconds: float
    by_reference: bool = False
    failed: int = 0
    store: str | None = None  # an explicit store URL given to durable_chord, else None
    claim_token: str | None = None
    claimed_at: float | None = None
    reason: str | None = None
    outcome: str | None = None  # the callback's result as JSON, when kept
    finished_at: float | None = None
    header_ids: list[str] = field(default_factory=list)

    @property
    def callback_name(self) -> str:
        return str(self.callback.get("task", "?"))

    @property
    def done(self) -> int:
        return self.total - self.remaining

    def due_at(self) -> float:
        """When the reaper must look at this barrier next."""
        if self.state is BarrierState.WAITING:
            return min(self.deadline_at, self.updated_at + self.stall_seconds)
        if self.state is BarrierState.DISPATCHING:
            return min(self.deadline_at, (self.claimed_at or self.updated_at) + CLAIM_GRACE)
        return self.deadline_at


class Outcome(StrEnum):
    """What one header completion did to its barrier."""

    COUNTED = "counted"  # recorded; parts remain
    DUPLICATE = "duplicate"  # this part was already recorded: ignored
    LATE = "late"  # recorded, but the barrier had already moved on (failed or dispatched)
    DISPATCH = "dispatch"  # this completion claimed the callback's dispatch
    FAIL = "fail"  # this completion claimed the chord's failure
    MISSING = "missing"  # no such barrier (expired, or never created in this store)


@dataclass
class Completion:
    """The answer to ``BarrierStore.complete``; ``barrier`` is set for DISPATCH and FAIL."""

    outcome: Outcome
    barrier: Barrier | None = None
    envelopes: list[str] | None = None  # every part's envelope, in header order (inline)


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
