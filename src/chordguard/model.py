"""The one vocabulary: what a chord is, what we know about it, and what is wrong with it.

Sources fill these objects from Celery's real state; ``diagnose`` adds diagnoses;
views render them. Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

STAMP = "chordguard"  # message header on a guarded chord's final tasks (and its unlock task)
FAN_IN_MARK = "chordguard_fan_in"  # option on the body of a chord the store joins (guard.fan_in)
FAILED_STATES = frozenset({"FAILURE", "REVOKED", "REJECTED"})  # a task that will not succeed
READY_STATES = FAILED_STATES | {"SUCCESS", "IGNORED"}  # a task that will not change again


def callback_stamp(chord_id: str, callback_id: str | None, deadline: float,
                   fan_in: bool = False) -> dict:
    """The ``STAMP`` header of a chord's one callback: the chord it ends and its deadline;
    ``fan_in``: the chord is a store barrier (``guard.fan_in``), not a journal record."""
    stamp = {"chord": chord_id, "callback": callback_id, "deadline": deadline}
    return {**stamp, "fan_in": True} if fan_in else stamp


class ChordKind(StrEnum):
    """How a chord's callback is joined to its header."""

    REDIS = "redis"  # Redis result backend: a sorted set counted by the last header task
    UNLOCK = "unlock"  # celery.chord_unlock polls the group (database and other backends)
    DURABLE = "durable"  # chordguard's own barrier
    DJANGO = "django"  # django-celery-results (django-db): a ChordCounter row counted down
    STORE = "store"  # a Celery chord joined by chordguard's barrier (install(app, fan_in="store"))


class Severity(StrEnum):
    """``blocking``: the chord will not finish by itself. ``warning``: it may not."""

    BLOCKING = "blocking"
    WARNING = "warning"


@dataclass
class HeaderPart:
    """One task of a chord's header."""

    task_id: str
    state: str | None = None  # Celery state; None when no source could tell
    index: int | None = None
    name: str | None = None
    date_done: datetime | None = None
    result: Any = None
    traceback: str | None = None
    held_by: str | None = None  # "worker:<hostname>" or "queue:<name>" when a message is seen
    failed_upstream: str | None = None  # a failed task earlier in the chain this part ends


@dataclass
class Duration:
    """A time span and how we know it.

    ``lower_bound`` is true when Celery keeps no exact time and ``seconds`` is the
    least the true value can be; ``basis`` says what the figure rests on.
    """

    seconds: float
    basis: str
    lower_bound: bool = False

    def label(self) -> str:
        return ("≥ " if self.lower_bound else "") + format_seconds(self.seconds)


@dataclass
class UnlockCopy:
    """One chord_unlock message seen somewhere (a worker or a queue)."""

    task_id: str
    retries: int | None  # None: the holder does not say (inspect omits it; RabbitMQ workers)
    where: str  # "queue:<name>", "worker:<hostname> <active|reserved|scheduled>"
    eta: datetime | None = None
    revoked: bool = False  # a worker lists its id as revoked: it will be dropped, not run


@dataclass
class Diagnosis:
    """A named problem with its evidence, an explanation and the next step."""

    code: str
    severity: Severity
    summary: str
    explanation: str
    next_step: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Chord:
    """An in-flight chord as far as the sources could see it."""

    id: str  # the header group id
    kind: ChordKind
    callback_name: str | None = None
    callback_id: str | None = None
    callback_state: str | None = None
    callback_held_by: str | None = None  # where its message was seen: "queue:…", "worker:…"
    header: list[HeaderPart] = field(default_factory=list)
    total: int | None = None
    done: int = 0
    failed: int = 0
    created_at: datetime | None = None
    age: Duration | None = None
    idle: Duration | None = None
    deadline_at: datetime | None = None
    unlock_retries: int | None = None
    unlock_copies: list[UnlockCopy] = field(default_factory=list)
    unlock_chains: int | None = None  # live chord_unlock chains, confirmed by two observations
    redis_keys: dict[str, int | None] = field(default_factory=dict)  # key -> TTL seconds
    unaccounted: int | None = None  # Redis: parts neither finished nor held anywhere (ids unknown)
    counter: int | None = None  # django-db: the ChordCounter row's count (parts it waits for)
    counter_gone: bool = False  # django-db: no ChordCounter row while the chord is in flight
    unseen: str | None = None  # what its verdict rests on that the look could not see
    evidence: dict[str, str] = field(default_factory=dict)  # figure -> where it came from
    sources: list[str] = field(default_factory=list)
    callback_signature: dict[str, Any] | None = None
    callback_duplicates: int = 0  # extra deliveries the guard's run-once claim stopped
    diagnoses: list[Diagnosis] = field(default_factory=list)
    ended: str | None = None  # no longer in flight: when, how and why (journal, barrier)

    @property
    def blocking(self) -> bool:
        return any(d.severity is Severity.BLOCKING for d in self.diagnoses)

    @property
    def codes(self) -> list[str]:
        return [d.code for d in self.diagnoses]

    def idle_hours(self) -> float | None:
        span = self.idle or self.age
        return None if span is None else span.seconds / 3600


@dataclass
class SourceReport:
    """Whether one source answered, and how long it took."""

    name: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class ClusterFacts:
    """What diagnosis needs to know about the cluster besides the chords themselves."""

    now: datetime
    retry_interval: float = 1.0  # result_chord_retry_interval
    chord_expires: float | None = None  # result_chord_expires or result_expires, seconds
    workers: list[str] | None = None  # None: workers were not asked or the round failed
    consumed_queues: set[str] | None = None  # queues some worker consumes; None: unknown
    queued: dict[str, str] = field(default_factory=dict)  # task id -> queue holding its message
    lost_header_grace: float = 60.0  # chordguard_lost_header_grace: seconds before lost_header
    holdings_complete: bool = False  # every inspect command answered, every queue read in full
    breakers: dict[str, str] = field(default_factory=dict)  # callback -> breaker state (journal)
    unread_join: str = ""  # how the backend joins chords when no source reads them
    look_budget: float = 6.0  # seconds a source gives its looks at workers and queues


@dataclass
class Snapshot:
    """Everything the monitor saw in one pass."""

    taken_at: datetime
    celery_version: str
    facts: ClusterFacts
    chords: list[Chord] = field(default_factory=list)
    sources: list[SourceReport] = field(default_factory=list)

    def find(self, chord_or_callback_id: str) -> Chord | None:
        for chord in self.chords:
            if chord_or_callback_id in (chord.id, chord.callback_id):
                return chord
        return None


def utc_datetime(value: Any) -> datetime | None:
    """A timezone-aware datetime from what Celery stores: a naive UTC datetime, or an ISO
    string in key-value backends; None for anything else."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``5.0 h``, ``2.3 d``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def json_default(value: Any) -> Any:
    """``json.dumps(..., default=json_default)``: the JSON of ``to_jsonable`` at C speed
    (the encoder calls this only for dataclasses, datetimes and other non-JSON values)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = dict(vars(value))
        if isinstance(value, Chord):
            out["blocking"] = value.blocking
        return out
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return repr(value)


def to_jsonable(value: Any) -> Any:
    """Dataclasses, enums and datetimes as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Chord):
            out["blocking"] = value.blocking
        return out
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)
