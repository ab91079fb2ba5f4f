"""Redis chords as workers and queues show them: pending parts, the callback, lost parts.

Celery's Redis chord keys hold only the count (``.s``) and the parts that finished (``.j``).
Everything else is read from the header messages in the snapshot's shared look
(``holdings``): queued messages and, on a Redis broker, the ones workers hold unacked.
Each names its chord and carries the chord's callback (``chord_members``).

A part is *unaccounted* when the count says it has not finished and no message of it is seen.
Workers' inspect replies carry no chord (``Request.info``), so a task a worker holds whose
message is not readable (executing after an early ack; any prefetched task on RabbitMQ) could
be any chord's part: each such task lowers every chord's unaccounted count by one, so a
busy cluster understates lost parts rather than inventing them.
"""

from __future__ import annotations

from celery.states import READY_STATES

from ...model import Chord, HeaderPart
from .broker import UNREAD
from .chord_members import Member, member
from .holdings import Observation
from .results import TaskState

UNKNOWABLE = ("unknown: no header message of this chord is left in a queue or held unacked on "
              "the broker, and Celery keeps the callback nowhere else (the guard's journal "
              "records it)")


def members_by_chord(looks: list[Observation]) -> dict[str, list[tuple[Member, str]]]:
    """Group id -> every header message seen for it, with where it was."""
    out: dict[str, list[tuple[Member, str]]] = {}
    for look in looks:
        workers = {r.task_id: f"worker:{r.hostname} {r.state}"
                   for r in (look.survey.requests if look.survey else [])}
        places: dict[tuple[str, bool], str] = {}  # one string per queue, not per message
        for message in look.view.messages if look.view else []:
            found = member(message)
            if found is None:
                continue
            where = workers.get(message.task_id or "")
            if where is None:
                key = (message.queue, message.held)
                where = places.get(key) or places.setdefault(key, (
                    f"worker (unacked, {message.queue})" if message.held
                    else f"queue:{message.queue}"))
            out.setdefault(found.group_id, []).append((found, where))
    return out


def unattributed(look: Observation) -> int:
    """Tasks held somewhere whose chord is unknown: worker requests whose message was not
    read, plus messages whose body and headers name no chord readably."""
    read = {m.task_id for m in look.view.messages} if look.view else set()
    requests = {r.task_id for r in look.survey.requests} if look.survey else set()
    unreadable = sum(1 for m in look.view.messages if m.undecodable and not m.group
                     and m.undecodable != UNREAD) if look.view else 0
    return len(requests - read) + unreadable


def attach(chord: Chord, seen: list[tuple[Member, str]], unknown_held: int) -> dict[str, str]:
    """Add the pending parts, callback and unaccounted count the looks show to ``chord``;
    return part id -> queue for the parts whose message waits in a queue."""
    finished = {p.task_id for p in chord.header}
    queued: dict[str, str] = {}
    pending: dict[str, HeaderPart] = {}
    for found, where in seen:
        if found.part_id in finished:
            continue
        message = found.message
        via = "" if found.part_id == message.task_id else f" (chain task {message.task_id})"
        pending.setdefault(found.part_id, HeaderPart(
            found.part_id, "PENDING", found.index, held_by=where + via,
            name=message.name if not via else None))
        if not message.held and where.startswith("queue:"):
            queued[found.part_id] = message.queue
    chord.header += pending.values()
    chord.header.sort(key=lambda p: (p.index is None, p.index or 0))
    if chord.callback_signature is None:
        callback = next(((f, w) for f, w in seen if f.callback), None)
        if callback is not None:
            found, where = callback
            chord.callback_signature = found.callback
            chord.callback_name = found.callback["task"]
            chord.callback_id = (found.callback.get("options") or {}).get("task_id")
            chord.evidence["callback"] = (f"embed 'chord' of header message "
                                          f"{found.message.task_id} ({where})")
        else:
            chord.evidence.setdefault("callback", UNKNOWABLE)
    if chord.total is not None:
        chord.unaccounted = max(0, chord.total - chord.done - len(pending) - unknown_held)
    chord.evidence["holdings"] = (
        f"{len(pending)} pending part(s) seen in queues or workers; "
        + (f"{chord.unaccounted} unaccounted (neither in .j nor seen); " if chord.total
           is not None else "unaccounted unknown (no .s); ")
        + f"{unknown_held} held task(s) of unknown chord counted as possibly this chord's")
    return queued


def set_callback_state(chord: Chord, states: dict[str, TaskState]) -> None:
    if chord.callback_id:
        known = states.get(chord.callback_id)
        chord.callback_state = known.state if known else "PENDING"
        if chord.callback_state in READY_STATES:
            chord.evidence["callback"] += f"; result backend: {chord.callback_state}"
