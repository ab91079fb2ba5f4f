"""What the store keeps: journal records, finished parts, dead letters, circuit breakers.

Plain dataclasses; times are UNIX seconds (UTC). Everything is JSON-serialisable: the
store never pickles.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

OPEN = "open"
SUCCEEDED = "succeeded"
FAILED = "failed"
DEAD_LETTERED = "dead_lettered"
TERMINAL = frozenset({SUCCEEDED, FAILED, DEAD_LETTERED})

DLQ_DEAD, DLQ_REPLAYED, DLQ_DROPPED = "dead", "replayed", "dropped"

CLOSED, OPENED, HALF_OPEN = "closed", "open", "half_open"


@dataclass
class ChordRecord:
    """One chord as the journal knows it, from publication to its terminal state."""

    id: str
    app: str
    kind: str
    callback_name: str | None
    callback_id: str | None
    header_ids: list[str]
    created_at: float
    deadline_at: float | None
    callback: dict[str, Any] | None = None  # the callback signature, for errbacks and replay
    state: str = OPEN
    reason: str | None = None
    ended_at: float | None = None
    last_progress_at: float | None = None
    done: int = 0
    failed: int = 0
    polls: int = 0
    duplicates: int = 0

    @property
    def open(self) -> bool:
        return self.state == OPEN


@dataclass
class PartUpdate:
    """A header task of ``chord_id`` finished in ``state`` at ``at``."""

    chord_id: str
    task_id: str
    state: str
    at: float


@dataclass
class DeadLetter:
    """A chord whose callback could not run or raised: what it was given and why it ended."""

    id: str
    chord_id: str
    app: str
    callback_name: str | None
    callback: dict[str, Any] | None  # signature to replay with ``inputs`` as first argument
    reason: str
    error: str | None
    traceback: str | None
    inputs: Any
    created_at: float
    state: str = DLQ_DEAD
    note: str | None = None  # drop reason or replay task id
    updated_at: float | None = None


@dataclass
class Breaker:
    """A circuit breaker for one callback task name."""

    name: str
    state: str = CLOSED
    failures: list[float] = field(default_factory=list)  # times of recent failures
    opened_at: float | None = None
    probe_at: float | None = None
    version: int = 0


def to_json(record: Any) -> str:
    return json.dumps(asdict(record), default=repr, separators=(",", ":"))


def from_json(cls: type, text: str | bytes) -> Any:
    data = json.loads(text)
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON (anything JSON cannot hold becomes its repr)."""
    return json.loads(json.dumps(value, default=repr))
