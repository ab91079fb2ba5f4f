"""What the store keeps, and the one codec every backend writes it with.

Records: journal entries (``ChordRecord``, ``PartUpdate``), ``DeadLetter``, ``Breaker`` and
the durable chord's ``Barrier`` (with what one header completion did to it: ``Completion``).
Plain dataclasses; times are UNIX seconds (UTC). The store never pickles.

The codec: ``to_json``/``from_json`` for a record kept whole (a dead letter, a breaker, the
memory backend's rows), ``to_row``/``from_row`` for a record kept field by field (SQL
columns, Redis hash fields), where scalars stay scalars and everything else (lists, dicts,
a callback signature, a dead letter's inputs) is JSON text. Nested values use kombu's JSON,
as Celery's messages do (datetimes, UUIDs survive); what even kombu cannot encode becomes
its repr. Fields are read by their declared types, so a Redis hash of strings, a SQL row
and a JSON object all read back as the same record.
"""

from __future__ import annotations

import enum
import functools
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from kombu.utils.json import JSONEncoder as _KombuEncoder
from kombu.utils.json import dumps as _kombu_dumps
from kombu.utils.json import loads as _kombu_loads

OPEN = "open"
SUCCEEDED = "succeeded"
FAILED = "failed"
DEAD_LETTERED = "dead_lettered"
TERMINAL = frozenset({SUCCEEDED, FAILED, DEAD_LETTERED})

DLQ_DEAD, DLQ_REPLAYED, DLQ_DROPPED = "dead", "replayed", "dropped"

CLOSED, OPENED, HALF_OPEN = "closed", "open", "half_open"

CLAIM_GRACE = 30.0  # a dispatch claim older than this, not yet published, is re-dispatched
# (``chordguard_claim_grace`` in app.conf overrides it; see ``durable.barrier.claim_grace``)
KEEP_SECONDS = 86400.0  # finished barriers are kept this long for the monitor and handles


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
    duplicates: int = 0  # duplicate chord_unlock chains the guard stopped
    callback_duplicates: int = 0  # callback deliveries the run-once claim stopped

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


class BarrierState(StrEnum):
    """``waiting`` -> ``dispatching`` -> ``dispatched`` -> ``succeeded`` | ``failed``;
    every in-flight state -> ``failed`` (a failed header, the reaper, a manual fail)."""

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
    CELERY = "celery"  # a Celery chord joined by the store (``fan_in="store"``): every part
    # is counted, then the callback gets the results, or a ChordError naming the first failed


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
    """The answer to ``complete_part``; ``barrier`` is set for DISPATCH and FAIL."""

    outcome: Outcome
    barrier: Barrier | None = None
    envelopes: list[str | None] | None = None  # every part's envelope, in header order (inline)


# --- the codec ---------------------------------------------------------------------------

class _Encoder(_KombuEncoder):
    """kombu's JSON (datetimes, UUIDs, ...), and the repr of anything it cannot hold."""

    def default(self, o: Any) -> Any:
        try:
            return super().default(o)
        except TypeError:
            return repr(o)


def dumps(value: Any) -> str:
    """``value`` as JSON text (kombu's encoding; the repr of what JSON cannot hold)."""
    return _kombu_dumps(value, cls=_Encoder, separators=(",", ":"))


def loads(text: str | bytes) -> Any:
    """``dumps``' JSON back; text holding none of kombu's typed values (a record without a
    datetime, say) takes the stdlib's C decoder, several times faster on a large body."""
    mark = b"__type__" if isinstance(text, bytes) else "__type__"
    if isinstance(text, bytes | str) and mark not in text:
        return json.loads(text)
    return _kombu_loads(text)


def to_json(record: Any) -> str:
    """A record as one JSON object (its fields as they are: ``asdict`` would deep-copy a
    journaled body of thousands of signatures first)."""
    return dumps({f.name: getattr(record, f.name) for f in fields(record)})


def from_json(cls: type, text: str | bytes, **override: Any) -> Any:
    """The ``cls`` record in ``text`` (``override`` replaces fields); unknown keys ignored."""
    return _build(cls, {**loads(text), **override}, encoded=False)


def to_row(record: Any) -> dict[str, Any]:
    """A record field by field: scalars as they are (a flag as 0/1, an enum by its value),
    everything else as JSON text; None stays None."""
    out: dict[str, Any] = {}
    for name, (kind, _) in _field_types(type(record)).items():
        value = getattr(record, name)
        if value is None:
            out[name] = None
        elif kind is None:
            out[name] = dumps(value)
        elif isinstance(value, enum.Enum):
            out[name] = value.value
        else:
            out[name] = int(value) if kind is bool else value
    return out


def from_row(cls: type, row: Mapping[str, Any], **override: Any) -> Any:
    """The ``cls`` record in ``row`` (SQL columns or Redis hash fields, str or bytes);
    ``override`` replaces fields; other keys are ignored."""
    data = {_text(k): v for k, v in row.items()}
    return _build(cls, {**data, **override}, encoded=True)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON (anything JSON cannot hold becomes its repr)."""
    return json.loads(json.dumps(value, default=repr))


def _build(cls: type, data: dict[str, Any], encoded: bool) -> Any:
    types_ = _field_types(cls)
    return cls(**{name: _read(types_[name], value, encoded)
                  for name, value in data.items() if name in types_})


@functools.cache
def _field_types(cls: type) -> dict[str, tuple[type | None, bool]]:
    """Field name -> (its scalar type, or None for JSON; whether None is allowed)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[type | None, bool]] = {}
    for f in fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        optional = type(None) in args
        scalar = [a for a in args if a is not type(None)]
        kind = scalar[0] if len(scalar) == 1 and isinstance(scalar[0], type) \
            and issubclass(scalar[0], str | int | float) else None
        out[f.name] = (kind, optional)
    return out


def _read(spec: tuple[type | None, bool], value: Any, encoded: bool) -> Any:
    kind, optional = spec
    if isinstance(value, bytes):
        value = value.decode()
    if value is None or (optional and value == ""):
        return None
    if kind is None:
        return loads(value) if encoded and isinstance(value, str) else value
    if kind is bool:
        return value in (True, 1, "1", "True", "true")
    return kind(value)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
