"""The barrier: one record per durable chord (kept by the store: ``store.records``,
``store.protocols.Barriers``), and the envelopes its parts record.

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

from typing import Any

from kombu.utils.json import dumps, loads

from ..store.records import CLAIM_GRACE, Barrier, BarrierState, Policy

__all__ = ["MAX_OUTCOME_BYTES", "Barrier", "BarrierState", "Policy", "callback_arg",
           "claim_grace", "failed", "succeeded"]  # the records live in store.records

MAX_OUTCOME_BYTES = 1_000_000  # larger callback results are not copied into the barrier


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
    """What the callback receives for one part: its envelope (``continue``) or its result."""
    if envelope is None:
        return None
    value = loads(envelope)
    return value if policy is Policy.CONTINUE else value.get("result")
