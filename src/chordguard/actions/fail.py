"""Failing a chord: the one implementation every part of chordguard uses.

Failing a chord is never just killing it: pending header and unlock tasks are revoked, the
coordination state that could still fire the callback is disarmed, and the callback is
marked FAILURE with a ``ChordError`` through the result backend so its errbacks run and
anyone waiting on it stops waiting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from celery import Celery

from .._compat import REDIS_CHORD_SUFFIXES, chord_error
from .._timeouts import within
from ..config import configured_store
from ..model import READY_STATES, Chord, ChordKind
from ..store import open_store
from ..store.records import FAILED
from .callback import fail_callback

ACTION_TIMEOUT = 10.0
DONE_MARKER_SECONDS = 86400


@dataclass
class FailPlan:
    """What failing one chord will do; printed as it is by ``--dry-run``."""

    chord_id: str
    kind: ChordKind
    reason: str
    revoke: list[str] = field(default_factory=list)
    redis_keys: list[str] = field(default_factory=list)
    callback: str = ""  # how the callback is failed, in words
    steps: list[str] = field(default_factory=list)


def plan_fail(chord: Chord, reason: str) -> FailPlan:
    """The steps that ``fail_chord`` would take for ``chord``; changes nothing."""
    plan = FailPlan(chord.id, chord.kind, reason)
    if chord.kind is ChordKind.DURABLE:
        plan.callback = "mark the callback FAILURE with ChordError and run its errbacks"
        plan.steps = ["fail the durable barrier (no late completion can dispatch), revoke "
                      "its unfinished headers", plan.callback]
        return plan
    plan.revoke = [p.task_id for p in chord.header if p.state not in READY_STATES]
    plan.revoke += sorted({c.task_id for c in chord.unlock_copies})
    if plan.revoke:
        plan.steps.append(f"revoke {len(plan.revoke)} pending header/unlock task(s)")
    if chord.kind is ChordKind.REDIS:
        plan.redis_keys = [k for k in chord.redis_keys if not k.endswith(".c")]
        plan.steps.append("disarm the Redis chord: set its done marker, delete its counter keys")
    if chord.callback_state in READY_STATES:
        plan.callback = f"callback already {chord.callback_state}: left as it is"
    elif chord.callback_signature:
        plan.callback = (f"mark callback {chord.callback_name} ({chord.callback_id}) FAILURE "
                         "with ChordError and run its errbacks")
    elif chord.callback_id:
        plan.callback = (f"mark callback {chord.callback_id} FAILURE with ChordError "
                         "(its signature is unknown, so errbacks cannot run)")
    elif why := chord.evidence.get("callback"):
        plan.callback = f"callback {why}; nothing can be marked"
    else:
        plan.callback = ("callback unknown to every source (install the guard's journal to "
                         "record it): nothing can be marked")
    plan.steps.append(plan.callback)
    return plan


def fail_chord(app: Celery, chord: Chord, reason: str) -> FailPlan:
    """Fail ``chord`` for ``reason`` and return the plan that was carried out.

    Raises UnreachableError when the broker or backend does not answer in time.
    """
    plan = plan_fail(chord, reason)
    if chord.kind is ChordKind.DURABLE:  # the barrier revokes, fails and runs errbacks itself
        from ..durable import fail_durable_chord

        within(ACTION_TIMEOUT, "store (fail barrier)", fail_durable_chord, app, chord.id, reason)
        return plan
    if plan.revoke:
        within(ACTION_TIMEOUT, "broker (revoke)", app.control.revoke, plan.revoke)
    if chord.kind is ChordKind.REDIS:
        within(ACTION_TIMEOUT, "result backend (disarm)", _disarm_redis_chord, app, chord)
    if chord.callback_state not in READY_STATES:
        within(ACTION_TIMEOUT, "result backend (fail callback)", _fail_callback, app, chord,
               reason)
    _journal_failure(app, chord.id, reason)
    return plan


def _journal_failure(app: Celery, chord_id: str, reason: str) -> None:
    """End the chord's journal record too, when the app has a store configured."""
    url = configured_store(app)
    if url is not None:
        within(ACTION_TIMEOUT, "store (journal)", open_store(url).finish_chord, chord_id,
               FAILED, reason)


def _disarm_redis_chord(app: Celery, chord: Chord) -> None:
    """Make sure no late header completion can publish the callback (any celery >= 5.3)."""
    client = app.backend.client
    claim = app.backend.get_key_for_group(chord.id, '.c')
    with client.pipeline() as pipe:
        pipe.set(claim, "done", ex=DONE_MARKER_SECONDS)  # 5.7: later parts return early
        for suffix in REDIS_CHORD_SUFFIXES[:-1]:  # 5.3-5.6: no counter, no callback
            pipe.delete(app.backend.get_key_for_group(chord.id, suffix))
        pipe.execute()


def _fail_callback(app: Celery, chord: Chord, reason: str) -> None:
    error = chord_error(f"chord {chord.id} failed by chordguard: {reason}")
    if chord.callback_signature:
        fail_callback(app, chord.callback_signature, error)
    elif chord.callback_id:
        app.backend.mark_as_failure(chord.callback_id, error)
