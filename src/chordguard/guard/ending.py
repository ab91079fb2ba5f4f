"""Ending a guarded chord that cannot succeed: journal, run-once claim, fail, dead-letter.

One function decides, through the store, who ends a chord; whoever loses the race does
nothing. The callback is failed with a ``ChordError`` through ``actions.fail_chord`` (its
errbacks run, pending header tasks are revoked, a Redis chord is disarmed).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from ..actions import fail_chord
from ..model import READY_STATES, Chord, ChordKind, HeaderPart
from ..store.clock import store_now
from ..store.records import DEAD_LETTERED, ChordRecord, DeadLetter, jsonable
from . import envelopes, errbacks_run
from .state import Guard

logger = logging.getLogger(__name__)
RUN_CLAIM = "run:"
ENDED_HOLDER = "chordguard:"  # a run-once claim taken by the guard for a chord it ended


def header_inputs(guard: Guard, header_ids: list[str]) -> tuple[list[Any], dict[str, str]]:
    """The callback's would-be input, in header order: results, or envelopes for the rest.

    Also returns each header task's state.
    """
    inputs, states = [], {}
    for task_id in header_ids:
        result = guard.app.AsyncResult(task_id)
        try:
            state = result.state
            value = result.result
        except Exception as exc:  # an undecodable result is evidence, not a crash
            state, value = "UNKNOWN", exc
        states[task_id] = state
        if state == "SUCCESS":
            inputs.append(value)
        elif state == "PENDING":
            inputs.append(envelopes.envelope("no result: PENDING (lost, or never finished)",
                                             "Pending", task_id))
        else:
            error = value if isinstance(value, BaseException) else Exception(str(value))
            inputs.append(envelopes.from_exception(error, task_id) | {"state": state})
    return jsonable(inputs), states


def ensure_record(guard: Guard, chord_id: str, callback: dict[str, Any] | None,
                  header_ids: list[str] | None = None) -> ChordRecord:
    """The journal record of ``chord_id``, created now if the chord was published unguarded."""
    record = guard.store.chord(chord_id)
    if record is None:
        created = store_now(guard.store)
        guard.store.record_chord(ChordRecord(
            id=chord_id, app=guard.app.main or "", kind=guard.kind.value,
            callback_name=(callback or {}).get("task"),
            callback_id=((callback or {}).get("options") or {}).get("task_id"),
            header_ids=header_ids or [], created_at=created,
            deadline_at=created + guard.settings.deadline, callback=callback))
        record = guard.store.chord(chord_id)
        assert record is not None
    return record


def dead_letter(guard: Guard, record: ChordRecord, reason: str, inputs: Any, *,
                error: str | None = None, traceback: str | None = None,
                fail_callback: bool = True, header_states: dict[str, str] | None = None,
                replay_of: str | None = None) -> str | None:
    """End ``record``'s chord as dead-lettered for ``reason``; return the letter id.

    Returns None, changing nothing, when the chord had already ended. With
    ``fail_callback`` the callback is marked FAILURE with a ChordError (errbacks run).
    A failed replay of letter ``replay_of`` (its chord long ended) gets a letter of its own.
    """
    store = guard.store
    if replay_of is not None:
        reason = f"replay of {replay_of} failed: {reason}"
    elif not store.finish_chord(record.id, DEAD_LETTERED, reason):
        return None
    store.claim(RUN_CLAIM + record.id, ENDED_HOLDER + DEAD_LETTERED)
    letter = DeadLetter(id=uuid.uuid4().hex[:16], chord_id=record.id, app=record.app,
                        callback_name=record.callback_name, callback=record.callback,
                        reason=reason, error=error, traceback=traceback,
                        inputs=jsonable(inputs), created_at=time.time())
    store.add_dead_letter(letter)  # before the callback fails: whoever sees it finds the letter
    if fail_callback:
        try:
            fail_chord(guard.app, _model(guard, record, header_states or {}), reason)
        except Exception:
            logger.exception("chordguard: could not fail the callback of chord %s", record.id)
    logger.error("chordguard: chord %s dead-lettered as %s: %s", record.id, letter.id, reason)
    return letter.id


def _model(guard: Guard, record: ChordRecord, states: dict[str, str]) -> Chord:
    header = [HeaderPart(task_id=i, state=states.get(i)) for i in record.header_ids]
    callback_state = None
    if record.callback_id:
        callback_state = guard.app.AsyncResult(record.callback_id).state
    callback = record.callback
    if callback:  # errbacks Celery ran when it failed a part of the header: not again
        callback = errbacks_run.without(callback, errbacks_run.already_run(guard.store, states))
    return Chord(id=record.id, kind=ChordKind(record.kind), callback_name=record.callback_name,
                 callback_id=record.callback_id, header=header,
                 callback_state=callback_state if callback_state in READY_STATES else None,
                 callback_signature=callback)

