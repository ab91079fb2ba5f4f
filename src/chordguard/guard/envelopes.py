"""Failure envelopes: what a guarded header task returns instead of breaking its chord.

``{"status": "failed", "error": ..., "type": ..., "task_id": ...}``. The callback side
(``chord_callback``) sorts them, ``None`` results and result tuples into failures.
"""

from __future__ import annotations

from typing import Any

FAILED = "failed"
KEYS = frozenset({"status", "error", "type", "task_id"})


def envelope(error: str, type_: str, task_id: str | None) -> dict[str, Any]:
    return {"status": FAILED, "error": error, "type": type_, "task_id": task_id}


def from_exception(exc: BaseException, task_id: str | None) -> dict[str, Any]:
    return envelope(str(exc) or repr(exc), type(exc).__name__, task_id)


def is_failure(value: Any) -> bool:
    """True for a failure envelope."""
    return isinstance(value, dict) and value.get("status") == FAILED and value.keys() >= KEYS
