"""Every write chordguard makes to a cluster: failing a chord, purging coordination messages.

Failing a chord is never just killing it: pending header and unlock tasks are revoked, the
coordination state that could still fire the callback is disarmed, and the callback is
marked FAILURE with a ``ChordError`` through the result backend so its errbacks run and
anyone waiting on it stops waiting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from celery import Celery
from celery.canvas import Signature
from celery.exceptions import ChordError

from .deadline import within
from .model import Chord, ChordKind

READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED", "REJECTED", "IGNORED"})
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
    plan.revoke = [p.task_id for p in chord.header if p.state not in READY_STATES]
    plan.revoke += sorted({c.task_id for c in chord.unlock_copies})
    if plan.revoke:
        plan.steps.append(f"revoke {len(plan.revoke)} pending header/unlock task(s)")
    if chord.kind is ChordKind.REDIS:
        plan.redis_keys = [k for k in chord.redis_keys if not k.endswith(".c")]
        plan.steps.append("disarm the Redis chord: set its done marker, delete its counter keys")
    if chord.kind is ChordKind.DURABLE:
        plan.steps.append("fail the durable barrier so no late completion dispatches")
    if chord.callback_state in READY_STATES:
        plan.callback = f"callback already {chord.callback_state}: left as it is"
    elif chord.callback_signature:
        plan.callback = (f"mark callback {chord.callback_name} ({chord.callback_id}) FAILURE "
                         "with ChordError and run its errbacks")
    elif chord.callback_id:
        plan.callback = (f"mark callback {chord.callback_id} FAILURE with ChordError "
                         "(its signature is unknown, so errbacks cannot run)")
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
    if plan.revoke:
        within(ACTION_TIMEOUT, "broker (revoke)", app.control.revoke, plan.revoke)
    if chord.kind is ChordKind.REDIS:
        within(ACTION_TIMEOUT, "result backend (disarm)", _disarm_redis_chord, app, chord)
    if chord.kind is ChordKind.DURABLE:
        from .durable import fail_durable_chord

        within(ACTION_TIMEOUT, "store (fail barrier)", fail_durable_chord, app, chord.id, reason)
    if chord.callback_state not in READY_STATES:
        within(ACTION_TIMEOUT, "result backend (fail callback)", _fail_callback, app, chord,
               reason)
    return plan


def _disarm_redis_chord(app: Celery, chord: Chord) -> None:
    """Make sure no late header completion can publish the callback (any celery >= 5.5)."""
    client = app.backend.client
    claim = app.backend.get_key_for_group(chord.id, '.c')
    with client.pipeline() as pipe:
        pipe.set(claim, "done", ex=DONE_MARKER_SECONDS)  # 5.7: later parts return early
        for suffix in (".s", ".j", ".t", ".d"):  # 5.5/5.6: no counter, no callback
            pipe.delete(app.backend.get_key_for_group(chord.id, suffix))
        pipe.execute()


def _fail_callback(app: Celery, chord: Chord, reason: str) -> None:
    error = ChordError(f"chord {chord.id} failed by chordguard: {reason}")
    if chord.callback_signature:
        callback = Signature(chord.callback_signature, app=app)
        try:  # chord_error_from_stack stores the traceback being handled: there must be one
            raise error
        except ChordError:
            app.backend.chord_error_from_stack(callback, error)
    elif chord.callback_id:
        app.backend.mark_as_failure(chord.callback_id, error)
