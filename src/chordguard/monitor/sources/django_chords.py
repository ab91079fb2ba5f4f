"""django-celery-results chords (``django-db``): in-flight chords from its ``ChordCounter`` table.

django-db joins a chord with one ``ChordCounter`` row: ``sub_tasks`` (the header's result
tuples, so every header id), ``count`` (parts not yet reported); each part's return counts it
down under ``select_for_update`` and the part reaching 0 deletes the row and publishes the
callback. Header states and times come from ``TaskResult`` (never decoded), a creation time
from ``GroupResult`` when the group was saved; the callback is kept nowhere but in the header
messages (the snapshot's shared look at queues and workers) and the guard's journal.

Chords whose row is gone while they are in flight are found through the journal's open
``django`` records and the header messages still queued: ``counter_gone``. Rows whose callback
is already ready are left out. Applies when the app's backend is django-db (decided by what
the backend is); Django must be set up (the CLI does it as ``celery -A proj`` does).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Celery
from kombu.utils.json import loads

from ..._timeouts import within
from ..._urls import mask_text
from ...config import configured_store
from ...model import (
    FAILED_STATES,
    READY_STATES,
    Chord,
    ChordKind,
    ClusterFacts,
    Duration,
    HeaderPart,
    utc_datetime,
)
from ...store import open_store
from ...store.records import ChordRecord
from ..diagnose import lost_header
from . import Source, joined_by
from .chord_members import Member
from .holdings import Holdings, Observation, confirm_pause, facts_from
from .redis_holdings import members_by_chord
from .result_tuples import header_ids

NAME = "django_chords"
BATCH = 1000


@dataclass
class Row:
    """One chord as django-db's tables show it (``count`` None: no ChordCounter row)."""

    group_id: str
    header_ids: list[str]
    count: int | None
    created: datetime | None = None  # GroupResult.date_created, when the group was saved
    callback: dict[str, Any] | None = None  # the body signature, from the journal
    callback_id: str | None = None  # the id the journal recorded for it


@dataclass
class Result:
    """A TaskResult row: state and times only."""

    state: str
    created: datetime | None
    done: datetime | None


def read(app: Celery, facts: ClusterFacts, holdings: Holdings) -> list[Chord]:
    from django.db import connections

    try:
        return _read(app, facts, holdings)
    finally:
        connections.close_all()  # this thread's connections: a snapshot leaves none open


def _read(app: Celery, facts: ClusterFacts, holdings: Holdings) -> list[Chord]:
    try:
        looks = within(facts.look_budget, "workers and queues", holdings.first)
    except Exception as exc:  # a failed look costs the claims it would support, not chords
        return model(app, facts, [], f"unknown: {mask_text(str(exc)) or type(exc).__name__}")
    chords = model(app, facts, looks)
    first = facts_from(looks, facts)
    if any(lost_header(c, first) for c in chords):  # confirm with a second look
        try:
            looks = within(facts.look_budget, "workers and queues (again)", holdings.confirm,
                           confirm_pause(facts.retry_interval))
            chords = model(app, facts, looks)
        except Exception as exc:
            facts.holdings_complete = False
            for chord in chords:
                chord.evidence["holdings"] += f"; no confirming second look ({exc})"
            return chords
    holdings.fill(facts, looks)
    return chords


def model(app: Celery, facts: ClusterFacts, looks: list[Observation],
          problem: str = "") -> list[Chord]:
    """In-flight chords from the tables, the journal and the header messages in ``looks``."""
    rows = {r.group_id: r for r in counter_rows()}
    seen = members_by_chord(looks)
    journaled = _journaled(app)
    chord_parts = {g for g, found in seen.items() if any(f.callback for f, _ in found)}
    for group_id in (set(journaled) | chord_parts) - set(rows):  # a plain group: no callback
        record = journaled.get(group_id)
        rows[group_id] = Row(group_id, list(record.header_ids) if record else [], None)
    results = task_results([i for r in rows.values() for i in r.header_ids])
    created = group_created(list(rows))
    holders = {k: v for look in looks for k, v in look.holders().items()}
    chords = []
    for row in rows.values():
        row.created = created.get(row.group_id)
        if (record := journaled.get(row.group_id)) is not None:
            row.callback, row.callback_id = record.callback, record.callback_id
        chord = to_chord(row, results, facts.now, seen.get(row.group_id, []))
        chord.callback_held_by = holders.get(chord.callback_id or "")
        chord.evidence["holdings"] = problem or f"{len(looks)} look(s) at queues and workers"
        chords.append(chord)
    _callback_states(chords)
    return [c for c in chords if c.callback_state not in READY_STATES]


def _journaled(app: Celery) -> dict[str, ChordRecord]:
    """Open journal records of django-db chords by group id (none without a journal)."""
    url = configured_store(app)
    if url is None:
        return {}
    return {r.id: r for r in open_store(url).open_chords(app=app.main or None)
            if r.kind == ChordKind.DJANGO.value}


def counter_rows() -> list[Row]:
    """Every ChordCounter row."""
    from django_celery_results.models import ChordCounter

    rows = []
    for group_id, sub_tasks, count in ChordCounter.objects.values_list(
            "group_id", "sub_tasks", "count").iterator(chunk_size=BATCH):
        try:
            ids = header_ids(loads(sub_tasks))
        except ValueError:
            ids = []
        rows.append(Row(group_id, ids, count))
    return rows


def task_results(task_ids: Iterable[str]) -> dict[str, Result]:
    """TaskResult states and times of ``task_ids``, in batches."""
    from django_celery_results.models import TaskResult

    ids = list(dict.fromkeys(task_ids))
    out = {}
    for start in range(0, len(ids), BATCH):
        for task_id, state, created, done in TaskResult.objects.filter(
                task_id__in=ids[start:start + BATCH]).values_list(
                "task_id", "status", "date_created", "date_done"):
            out[task_id] = Result(state, utc_datetime(created), utc_datetime(done))
    return out


def group_created(group_ids: list[str]) -> dict[str, datetime]:
    """GroupResult.date_created of the groups that were saved."""
    from django_celery_results.models import GroupResult

    out = {}
    for start in range(0, len(group_ids), BATCH):
        for group_id, created in GroupResult.objects.filter(
                group_id__in=group_ids[start:start + BATCH]).values_list(
                "group_id", "date_created"):
            out[group_id] = utc_datetime(created)
    return out


def database_engine() -> str | None:
    """The Django database engine ChordCounter rows are written to (its router's choice)."""
    from django.conf import settings
    from django.db import router
    from django_celery_results.models import ChordCounter

    alias = router.db_for_write(ChordCounter) or "default"
    return (settings.DATABASES.get(alias) or {}).get("ENGINE")


def _callback_states(chords: list[Chord]) -> None:
    results = task_results(c.callback_id for c in chords if c.callback_id)
    for chord in chords:
        if chord.callback_id:
            found = results.get(chord.callback_id)
            chord.callback_state = found.state if found else "PENDING"


def to_chord(row: Row, results: dict[str, Result], now: datetime,
             seen: list[tuple[Member, str]]) -> Chord:
    """The model of one chord from its rows and the header messages seen (pure)."""
    chord = Chord(id=row.group_id, kind=ChordKind.DJANGO, sources=[NAME], counter=row.count,
                  counter_gone=row.count is None)
    held = {found.part_id: where for found, where in seen}
    for index, task_id in enumerate(row.header_ids):
        result = results.get(task_id)
        chord.header.append(HeaderPart(task_id, result.state if result else "PENDING", index,
                                       date_done=result.done if result else None,
                                       held_by=held.get(task_id)))
    known = {p.task_id for p in chord.header}
    chord.header += [HeaderPart(found.part_id, "PENDING", found.index, held_by=where)
                     for found, where in seen if found.part_id not in known]
    chord.total = len(chord.header) or None
    chord.done = sum(1 for p in chord.header if p.state in READY_STATES)
    chord.failed = sum(1 for p in chord.header if p.state in FAILED_STATES)
    _callback(chord, row, seen)
    chord.evidence["counter"] = (
        f"ChordCounter.count = {row.count} (parts it still waits for)" if row.count is not None
        else "no ChordCounter row: deleted while the chord is in flight (journal or header "
             "messages name it)")
    chord.evidence["header"] = ("ChordCounter.sub_tasks" if row.count is not None else
                                "journal / header messages") + " + TaskResult states"
    _times(chord, row, results, now)
    return chord


def _callback(chord: Chord, row: Row, seen: list[tuple[Member, str]]) -> None:
    if row.callback is not None:
        chord.callback_signature = row.callback
        chord.callback_name = row.callback.get("task")
        chord.callback_id = row.callback_id
        chord.evidence["callback"] = "journal: recorded at publication"
        return
    found = next(((f, w) for f, w in seen if f.callback), None)
    if found is None:
        chord.evidence["callback"] = ("unknown: no header message left in a queue or worker, "
                                      "and django-db keeps the callback nowhere else (the "
                                      "guard's journal records it)")
        return
    member, where = found
    chord.callback_signature = member.callback
    chord.callback_name = member.callback["task"]
    chord.callback_id = (member.callback.get("options") or {}).get("task_id")
    chord.evidence["callback"] = f"embed 'chord' of header message {member.message.task_id} " \
                                 f"({where})"


def _times(chord: Chord, row: Row, results: dict[str, Result], now: datetime) -> None:
    """Age from the saved group (exact) or the earliest header row (a lower bound); idle
    since the last header part finished."""
    rows = [results[p.task_id] for p in chord.header if p.task_id in results]
    finished = [r.done for r in rows if r.done and r.state in READY_STATES]
    earliest = min((r.created or r.done for r in rows if r.created or r.done), default=None)
    if row.created is not None:
        chord.created_at = row.created
        chord.age = Duration(_since(now, row.created), "GroupResult.date_created (saved group)")
    elif earliest is not None:
        chord.age = Duration(_since(now, earliest), "≥: earliest TaskResult.date_created of "
                             "its header; ChordCounter keeps no creation time",
                             lower_bound=True)
    if finished:
        chord.idle = Duration(_since(now, max(finished)), "since the last header part finished "
                              "(TaskResult.date_done)")
    for name in ("age", "idle"):
        if (span := getattr(chord, name)) is not None:
            chord.evidence[name] = span.basis


def _since(now: datetime, then: datetime) -> float:
    return max(0.0, (now - then).total_seconds())


SOURCE = Source(NAME, joined_by(ChordKind.DJANGO), read, needs=("broker", "backend"))
