"""Polled chords: every ``celery.chord_unlock`` copy in workers and on the broker.

A chord joined by chord_unlock (database and every backend without native join) exists in
Celery only as its unlock task's message: ``args[0]`` the group id, ``args[1]`` the callback
signature, ``kwargs['result']`` the header result tuples ``[[id, parent], None]``. Between polls
the message waits in a worker's timer (``inspect scheduled``) or on the broker. Header and
callback states come from the result backend in one batch.

The look at workers and queues is the snapshot's shared one (``holdings``). It is not atomic:
a chain moving between two workers, or a header between queue and worker, can look doubled
or missing for a moment. When the first look suggests ``unlock_storm`` or ``lost_header``, a
second one about a poll interval later must agree before the diagnosis stands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from celery import Celery
from celery.states import READY_STATES

from ...model import Chord, ChordKind, ClusterFacts, Duration, HeaderPart, UnlockCopy
from ..diagnose import lost_header, unlock_storm
from . import Source, joined_by
from .broker import BrokerView, TaskMessage
from .holdings import Holdings, Observation, confirm_pause, facts_from, gaps, unseen
from .result_tuples import header_ids, upstream_ids
from .results import TaskState, read_states
from .workers import HeldRequest, WorkerSurvey

UNLOCK_TASK = "celery.chord_unlock"
_QUOTED = re.compile(r"['\"]([0-9A-Za-z][\w.:@-]{7,})['\"]")
_CALLBACK_ID = re.compile(r"['\"]task_id['\"]:\s*['\"]([^'\"]+)['\"]")


@dataclass
class Sighting:
    """One chord_unlock message, where it was seen and what it says."""

    group_id: str
    copy: UnlockCopy
    on_broker: bool  # False: only a worker reported it
    waiting: bool  # a message that will run later (not one being executed now)
    callback: dict[str, Any] | None = None
    header_ids: list[str] = field(default_factory=list)
    interval: float | None = None
    upstream: dict[str, list[str]] = field(default_factory=dict)  # see result_tuples
    note: str = ""


@dataclass
class Look:
    """One shared observation and the unlock copies it shows."""

    observation: Observation
    sightings: list[Sighting]

    def chains(self, group_id: str) -> int:
        """Live chains: waiting copies not revoked, or 1 if only a running copy is seen."""
        mine = [s for s in self.sightings if s.group_id == group_id and not s.copy.revoked]
        waiting = [s for s in mine if s.waiting]
        return max(len(waiting), 1 if mine else 0)


def look_at(observation: Observation) -> Look:
    if observation.view is None:
        return Look(observation, [])
    return Look(observation, _sightings(observation.survey, observation.view))


def _sightings(found: WorkerSurvey | None, view: BrokerView) -> list[Sighting]:
    revoked = found.revoked if found else set()
    by_worker: dict[str, list[HeldRequest]] = {}
    for request in found.requests if found else []:
        if request.name == UNLOCK_TASK:
            by_worker.setdefault(request.task_id, []).append(request)
    out: list[Sighting] = []
    matched: dict[str, int] = {}
    for message in view.messages:
        if message.name != UNLOCK_TASK or not message.task_id:
            continue
        where = f"queue:{message.queue}"
        if message.held:
            holders = by_worker.get(message.task_id, [])
            index = matched.get(message.task_id, 0)
            matched[message.task_id] = index + 1
            where = (f"worker:{holders[index].hostname} {holders[index].state} (unacked)"
                     if index < len(holders) else f"unacked ({message.queue})")
        sighting = _from_message(message, where, message.task_id in revoked)
        if sighting is not None:
            out.append(sighting)
    for task_id, requests in by_worker.items():
        for request in requests[matched.get(task_id, 0):]:
            sighting = _from_request(request, task_id in revoked, view.sees_held)
            if sighting is not None:
                out.append(sighting)
    return out


def _from_message(message: TaskMessage, where: str, revoked: bool) -> Sighting | None:
    copy = UnlockCopy(message.task_id or "?", message.retries, where, message.eta, revoked)
    if message.undecodable is None:
        return _from_args(message.args, message.kwargs, copy, on_broker=True, waiting=True)
    return _from_reprs(message, copy)


def _from_request(request: HeldRequest, revoked: bool, broker_sees_held: bool,
                  ) -> Sighting | None:
    copy = UnlockCopy(request.task_id, None, f"worker:{request.hostname} {request.state}",
                      request.eta, revoked)
    waiting = request.state != "active" and not broker_sees_held
    return _from_args(request.args, request.kwargs, copy, on_broker=False, waiting=waiting)


def _from_args(args: Any, kwargs: Any, copy: UnlockCopy, on_broker: bool, waiting: bool,
               ) -> Sighting | None:
    if not isinstance(args, list | tuple) or not args or not isinstance(args[0], str):
        return None
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    callback = args[1] if len(args) > 1 and isinstance(args[1], dict) else None
    interval = kwargs.get("interval")
    return Sighting(args[0], copy, on_broker, waiting, callback,
                    header_ids(kwargs.get("result")),
                    float(interval) if isinstance(interval, int | float) else None,
                    upstream=upstream_ids(kwargs.get("result")))


def _from_reprs(message: TaskMessage, copy: UnlockCopy) -> Sighting | None:
    """An unlock message whose body is not JSON: ids from its argsrepr/kwargsrepr headers."""
    ids = _QUOTED.findall(message.argsrepr or "")
    if not ids:
        return None
    callback_id = _CALLBACK_ID.search(message.argsrepr or "")
    callback = {"options": {"task_id": callback_id.group(1)}} if callback_id else None
    taken = {ids[0], callback_id.group(1) if callback_id else None}
    headers = [i for i in _QUOTED.findall(message.kwargsrepr or "") if i not in taken]
    return Sighting(ids[0], copy, True, True, callback, headers,
                    note=f"body not decoded ({message.undecodable}); ids read from "
                    "argsrepr/kwargsrepr, which Celery may truncate")


def build(looks: list[Look], states: dict[str, TaskState], facts: ClusterFacts,
          ) -> list[Chord]:
    """Chords from the sightings of every look (the latest copies win)."""
    latest = looks[-1]
    for look in looks:  # Celery 5.7 stores REVOKED for a revoked PENDING task
        for sighting in look.sightings:
            if (known := states.get(sighting.copy.task_id)) and known.state == "REVOKED":
                sighting.copy.revoked = True
    holders: dict[str, str] = {}
    for look in looks:
        holders.update(look.observation.holders())
    groups: dict[str, list[Sighting]] = {}
    for look in looks:
        for sighting in look.sightings:
            groups.setdefault(sighting.group_id, [])
    for group_id in groups:
        for look in reversed(looks):
            mine = [s for s in look.sightings if s.group_id == group_id]
            if mine:
                groups[group_id] = mine
                break
    chords = []
    for group_id, sightings in groups.items():
        chains = min(look.chains(group_id) for look in looks) if group_id in \
            {s.group_id for s in latest.sightings} else 0
        # retries only grow: an earlier look that read the header still counts when the
        # latest one saw the message only in a worker (which does not report it)
        retries = [s.copy.retries for look in looks for s in look.sightings
                   if s.group_id == group_id and s.copy.retries is not None]
        chords.append(_chord(group_id, sightings, holders, states, facts, chains,
                             max(retries) if retries else None))
    return chords


def _chord(group_id: str, sightings: list[Sighting], holders: dict[str, str],
           states: dict[str, TaskState], facts: ClusterFacts, chains: int,
           retries: int | None) -> Chord:
    best = max(sightings, key=lambda s: (s.callback is not None, len(s.header_ids)))
    callback = best.callback or {}
    callback_id = (callback.get("options") or {}).get("task_id")
    chord = Chord(id=group_id, kind=ChordKind.UNLOCK, callback_name=callback.get("task"),
                  callback_id=callback_id, callback_signature=best.callback or None,
                  unlock_copies=[s.copy for s in sightings], unlock_chains=chains,
                  sources=["unlock"])
    if callback_id:
        known = states.get(callback_id)
        chord.callback_state = known.state if known else "PENDING"
    for index, task_id in enumerate(best.header_ids):
        known = states.get(task_id)
        chord.header.append(HeaderPart(
            task_id, known.state if known else "PENDING", index,
            date_done=known.date_done if known else None,
            result=known.result if known else None,
            traceback=known.traceback if known else None, held_by=holders.get(task_id),
            failed_upstream=_failed_upstream(best.upstream.get(task_id, []), states)))
    chord.total = len(chord.header)
    chord.done = sum(1 for p in chord.header if p.state in READY_STATES)
    chord.failed = sum(1 for p in chord.header if p.state in READY_STATES - {"SUCCESS"})
    chord.unlock_retries = retries
    interval = next((s.interval for s in sightings if s.interval), None) or facts.retry_interval
    _timings(chord, interval, facts.now)
    chord.evidence.update({
        "unlock copies": "; ".join(sorted({s.copy.where for s in sightings})),
        "unlock retries": "the 'retries' header of unlock messages on the broker"
        if retries is not None else "unknown: workers do not report a held message's retries",
        "header ids": "kwargs['result'] of the chord_unlock message",
    })
    for note in {s.note for s in sightings if s.note}:
        chord.evidence["unreadable unlock body"] = note
    return chord


def _failed_upstream(before: list[str], states: dict[str, TaskState]) -> str | None:
    """The first failed task earlier in a header member's chain (celery#9674), if any."""
    return next((task_id for task_id in before if (known := states.get(task_id))
                 and known.state in READY_STATES - {"SUCCESS"}), None)


def _timings(chord: Chord, interval: float, now: datetime) -> None:
    done = [p.date_done for p in chord.header if p.date_done is not None]
    bounds: list[tuple[float, str]] = []
    if chord.unlock_retries:
        bounds.append((chord.unlock_retries * interval,
                       f"{chord.unlock_retries:,} unlock retries at {interval:g} s"))
    if done:
        earliest = min(done)
        bounds.append(((now - earliest).total_seconds(),
                       f"the earliest header finished at {earliest:%Y-%m-%d %H:%M:%S} UTC"))
        latest = max(done)
        chord.idle = Duration(max(0.0, (now - latest).total_seconds()),
                              f"since the latest header finished ({latest:%H:%M:%S} UTC)")
    if bounds:
        seconds, basis = max(bounds)
        others = "; also " + ", ".join(b for _, b in bounds if b != basis) if len(bounds) > 1 \
            else ""
        chord.age = Duration(max(0.0, seconds), f"{basis} (Celery keeps no creation time){others}",
                             lower_bound=True)


def read(app: Celery, facts: ClusterFacts, holdings: Holdings) -> list[Chord]:
    """Every chord with an unlock copy in sight; fills ``facts`` (workers, queues, queued)."""
    looks = [look_at(o) for o in holdings.first()]
    states, how = read_states(app, _ids(looks))
    interim = facts_from([look.observation for look in looks], facts)
    chords = build(looks, states, interim)
    if any(unlock_storm(c, interim) or lost_header(c, interim) for c in chords):
        looks = [look_at(o) for o in holdings.confirm(confirm_pause(facts.retry_interval))]
        states.update(read_states(app, _ids(looks))[0])
        interim = facts_from([look.observation for look in looks], facts)
        chords = build(looks, states, interim)
    problems = [p for look in looks for p in look.observation.problems]
    for chord in chords:
        chord.evidence["header states"] = f"result backend: {how} (no result reads PENDING)"
        chord.evidence["observations"] = f"{len(looks)} (inspect round + broker peek)" + \
            ("; problems: " + "; ".join(dict.fromkeys(problems)) if problems else "")
    holdings.fill(facts, [look.observation for look in looks])
    missing = gaps([look.observation for look in looks])
    for chord in chords:
        chord.unseen = unseen(chord, facts, missing)
    return chords


def _ids(looks: list[Look]) -> list[str]:
    ids: list[str] = []
    for look in looks:
        for sighting in look.sightings:
            ids += [*sighting.header_ids, sighting.copy.task_id]
            ids += [task_id for before in sighting.upstream.values() for task_id in before]
            callback_id = ((sighting.callback or {}).get("options") or {}).get("task_id")
            if callback_id:
                ids.append(callback_id)
    return ids


SOURCE = Source("unlock", joined_by(ChordKind.UNLOCK), read, needs=("broker", "backend"))
