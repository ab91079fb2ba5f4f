"""Failing a chord: the one implementation every part of chordguard uses.

Failing a chord is never just killing it: pending header and unlock tasks are revoked and,
on a Redis broker, their messages still waiting there are removed (``queued``); the
coordination state that could still fire the callback is disarmed, and the callback is
marked FAILURE with a ``ChordError`` through the result backend so its errbacks run and
anyone waiting on it stops waiting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from celery import Celery

from .._compat import REDIS_CHORD_SUFFIXES, chord_error
from .._timeouts import within
from .._urls import mask_text
from ..config import configured_store
from ..model import READY_STATES, Chord, ChordKind
from ..store import open_store
from ..store.records import FAILED
from .callback import OperatorFail, fail_callback
from .django_db import disarm_django_chord
from .queued import HELD, broker_kind, remove_queued

logger = logging.getLogger(__name__)

ACTION_TIMEOUT = 10.0
BARRIER_KINDS = (ChordKind.DURABLE, ChordKind.STORE)  # joined by a barrier in the store
DONE_MARKER_SECONDS = 86400


@dataclass
class FailPlan:
    """What failing one chord will do; printed as it is by ``--dry-run``."""

    chord_id: str
    kind: ChordKind
    reason: str
    revoke: list[str] = field(default_factory=list)
    redis_keys: list[str] = field(default_factory=list)
    removed_messages: dict[str, int] = field(default_factory=dict)  # queue -> messages
    callback: str = ""  # how the callback is failed, in words
    steps: list[str] = field(default_factory=list)


def plan_fail(chord: Chord, reason: str, broker: str | None = None) -> FailPlan:
    """The steps that ``fail_chord`` would take for ``chord``; changes nothing. ``broker``
    (``broker_kind``): say what happens to the pending tasks' queued messages."""
    plan = FailPlan(chord.id, chord.kind, reason)
    plan.revoke = [p.task_id for p in chord.header if p.state not in READY_STATES]
    if chord.kind in BARRIER_KINDS:
        plan.callback = "mark the callback FAILURE with ChordError and run its errbacks"
        plan.steps = ["fail the durable barrier (no late completion can dispatch), revoke "
                      "its unfinished headers", *_queued_step(chord, plan.revoke, broker),
                      plan.callback]
        return plan
    plan.revoke += sorted({c.task_id for c in chord.unlock_copies})
    if plan.revoke:
        plan.steps.append(f"revoke {len(plan.revoke)} pending header/unlock task(s)")
        plan.steps += _queued_step(chord, plan.revoke, broker)
    if chord.kind is ChordKind.REDIS:
        plan.redis_keys = [k for k in chord.redis_keys if not k.endswith(".c")]
        plan.steps.append("disarm the Redis chord: set its done marker, delete its counter keys")
    if chord.kind is ChordKind.DJANGO:
        plan.steps.append("disarm the django-db chord: delete its ChordCounter row")
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


def fail_chord(app: Celery, chord: Chord, reason: str,
               operator: OperatorFail | None = None) -> FailPlan:
    """Fail ``chord`` for ``reason`` and return the plan that was carried out.

    ``operator``: called from an operator's process (CLI, dashboard), where the callback's
    errbacks must not run (``OperatorFail``); None in a worker. Raises UnreachableError when
    the broker or backend does not answer in time, ChordguardError (nothing done) when only
    this process could run the callback's old-style errbacks and ``operator`` forbids it.
    """
    broker = broker_kind(app)
    plan = plan_fail(chord, reason, broker)
    if operator is not None and chord.callback_state not in READY_STATES:
        operator.check(app, chord.callback_signature)
    if chord.kind in BARRIER_KINDS:  # the barrier revokes, fails and runs errbacks itself
        from ..durable import fail_durable_chord

        within(ACTION_TIMEOUT + (operator.wait if operator else 0), "store (fail barrier)",
               fail_durable_chord, app, chord.id, reason, operator=operator)
        _remove_queued(app, plan, broker)
        return plan
    if plan.revoke:
        within(ACTION_TIMEOUT, "broker (revoke)", app.control.revoke, plan.revoke)
    if chord.kind is ChordKind.REDIS:
        within(ACTION_TIMEOUT, "result backend (disarm)", _disarm_redis_chord, app, chord)
    if chord.kind is ChordKind.DJANGO and not within(
            ACTION_TIMEOUT, "result backend (disarm)", disarm_django_chord, chord.id):
        plan.steps.append("no ChordCounter row left to delete (gone before: a part that "
                          "counted it to 0 may have published the callback)")
    if chord.callback_state not in READY_STATES:
        outcome = within(ACTION_TIMEOUT + (operator.wait if operator else 0),
                         "result backend (fail callback)", _fail_callback, app, chord, reason,
                         operator)
        if outcome:
            plan.steps.append(outcome)
    _remove_queued(app, plan, broker)
    _journal_failure(app, chord.id, reason)
    return plan


def _queued_step(chord: Chord, task_ids: list[str], broker: str | None) -> list[str]:
    """What becomes of the queued messages of ``task_ids``, in words (none: no task)."""
    if not task_ids or broker is None:
        return []
    if broker == "redis":
        return ["remove their messages still on the Redis broker (by task id, from every queue "
                "and from kombu's unacked hash), so no worker started later runs them"]
    queues = sorted({p.held_by.removeprefix("queue:").split(" ")[0] for p in chord.header
                     if p.task_id in task_ids and (p.held_by or "").startswith("queue:")})
    name = "RabbitMQ" if broker == "amqp" else f"the {broker} broker"
    if not queues:
        return [f"none of them seen queued on {name} (a revoked id is known only to the "
                "workers that heard this revoke)"]
    return [f"their messages stay in their queues on {name} (seen queued in "
            f"{', '.join(queues)}; chordguard removes messages by task id on Redis only): the "
            "revoked ids are known only to the workers that heard this revoke (and those that "
            "ask them at start-up), so a worker started once they are gone runs them"]


def _remove_queued(app: Celery, plan: FailPlan, broker: str) -> None:
    """On Redis, delete the pending tasks' messages (after the callback is failed: a broker
    that does not answer here leaves the chord failed, with a step that says so)."""
    if broker != "redis" or not plan.revoke:
        return
    try:
        plan.removed_messages = within(ACTION_TIMEOUT, "broker (remove queued messages)",
                                       remove_queued, app, plan.revoke)
    except Exception as exc:  # the chord is failed already; say what was not done
        why = mask_text(str(exc))
        logger.warning("chordguard: queued messages of chord %s not removed: %s", plan.chord_id,
                       why)
        plan.steps.append(f"their queued messages were not (all) removed: {why}")
        return
    counts = ", ".join(f"{n} from {'kombu unacked hash' if q == HELD else q}"
                       for q, n in sorted(plan.removed_messages.items()))
    plan.steps.append(f"removed {sum(plan.removed_messages.values())} queued message(s): "
                      f"{counts}" if counts else "no message of them was left on the broker")


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


def _fail_callback(app: Celery, chord: Chord, reason: str,
                   operator: OperatorFail | None) -> str | None:
    message = f"chord {chord.id} failed by chordguard: {reason}"
    if chord.callback_signature and operator is not None:
        return operator.fail(app, chord.callback_signature, message)
    if chord.callback_signature:
        fail_callback(app, chord.callback_signature, chord_error(message))
    elif chord.callback_id:  # no errbacks known: nothing runs but the backend write
        app.backend.mark_as_failure(chord.callback_id, chord_error(message))
    return None
