"""One pass over every source: sources -> model -> diagnosis."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import celery
from celery import Celery

from .._compat import chord_expires
from .._timeouts import within_each
from ..config import setting
from ..coordination import backend_class, join_of
from ..model import Chord, ClusterFacts, Snapshot, SourceReport
from .diagnose import diagnose
from .sources import Source, django_chords, durable, journal, reach, redis_chords, unlock_chords
from .sources.holdings import Holdings

SOURCES: list[Source] = [journal.SOURCE, redis_chords.SOURCE, unlock_chords.SOURCE,
                         django_chords.SOURCE, durable.SOURCE]
SOURCE_TIMEOUT = 8.0
LOOK_MARGIN = 2.0  # of a source's time, left for what it does besides its looks


def cluster_facts(app: Celery, now: datetime | None = None) -> ClusterFacts:
    """The settings diagnosis needs, read from the app's configuration."""
    conf = app.conf
    expires = chord_expires(conf)
    if hasattr(expires, "total_seconds"):
        expires = expires.total_seconds()
    grace = setting(app, "lost_header_grace")  # either case: Django's namespace keeps upper
    return ClusterFacts(now=now or datetime.now(UTC),
                        retry_interval=float(conf.result_chord_retry_interval or 1.0),
                        chord_expires=float(expires) if expires else None,
                        **({} if grace is None else {"lost_header_grace": float(grace)}))


def collect(app: Celery, stuck_after_hours: float | None = None,
            timeout: float = SOURCE_TIMEOUT, sources: list[Source] | None = None) -> Snapshot:
    """Read every applicable source side by side (each bounded by ``timeout``, as is the probe
    of each place before) and diagnose.

    A source that fails or does not answer is reported in ``Snapshot.sources``; so is a
    place (broker, backend, store) that did not answer its probe, once, and the sources
    reading it are not read. Never raises.
    """
    facts = cluster_facts(app)
    facts.look_budget = max(facts.look_budget, timeout - LOOK_MARGIN)
    chosen = [s for s in (SOURCES if sources is None else sources) if s.applies(app)]
    started = time.monotonic()
    down = reach.unreachable(app, {"broker", "backend"}.union(*(s.needs for s in chosen)),
                             min(reach.PROBE_TIMEOUT, timeout))
    reports = [SourceReport(place, False, time.monotonic() - started, why)
               for place, why in down.items()]
    chosen = [s for s in chosen if not down.keys() & set(s.needs)]
    if "backend" not in down:
        facts.unread_join = join_of(backend_class(app)).why
    # one shared look at workers and queues, if a source needs it
    holdings = Holdings(app, facts.look_budget)
    outcomes = within_each(timeout, {s.name: (lambda s=s: s.read(app, facts, holdings))
                                     for s in chosen})
    elapsed = time.monotonic() - started
    chords: dict[str, Chord] = {}
    for source in chosen:
        outcome = outcomes[source.name]
        if isinstance(outcome, BaseException):
            reports.append(SourceReport(source.name, False, elapsed, reach.brief(outcome)))
            continue
        reports.append(SourceReport(source.name, True, elapsed, f"{len(outcome)} chord(s)"))
        for chord in outcome:
            if chord.id in chords:
                merge(chords[chord.id], chord)
            else:
                chords[chord.id] = chord
    for chord in chords.values():
        chord.diagnoses = diagnose(chord, facts, stuck_after_hours)
    return Snapshot(taken_at=facts.now, celery_version=celery.__version__, facts=facts,
                    chords=sorted(chords.values(), key=_oldest_first), sources=reports)


def merge(into: Chord, other: Chord) -> None:
    """Fill what ``into`` lacks from ``other`` (the same chord seen by another source)."""
    for name in ("callback_name", "callback_id", "callback_state", "callback_held_by", "total",
                 "created_at", "age", "idle", "deadline_at", "unlock_retries",
                 "callback_signature", "unaccounted", "counter"):
        if getattr(into, name) is None and getattr(other, name) is not None:
            setattr(into, name, getattr(other, name))
    into.counter_gone = into.counter_gone or other.counter_gone
    into.done = max(into.done, other.done)
    into.failed = max(into.failed, other.failed)
    known = {p.task_id: p for p in into.header}
    for part in other.header:
        mine = known.get(part.task_id)
        if mine is None:
            into.header.append(part)
        elif _known(part.state) > _known(mine.state):
            into.header[into.header.index(mine)] = part
        elif mine.held_by is None:
            mine.held_by = part.held_by
    seen = {(c.task_id, c.where) for c in into.unlock_copies}
    into.unlock_copies += [c for c in other.unlock_copies if (c.task_id, c.where) not in seen]
    into.redis_keys.update(other.redis_keys)
    for key, value in other.evidence.items():
        into.evidence.setdefault(key, value)
    into.sources += [s for s in other.sources if s not in into.sources]


def _known(state: str | None) -> int:
    """How much a part's state tells: unknown < PENDING (may be lost) < anything else."""
    return 0 if state is None else 1 if state == "PENDING" else 2


def _oldest_first(chord: Chord) -> float:
    span = chord.age or chord.idle
    return -(span.seconds if span else 0.0)
