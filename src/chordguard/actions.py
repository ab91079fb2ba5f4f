"""Every write chordguard makes to a cluster: failing a chord, purging coordination messages.

Failing a chord is never just killing it: pending header and unlock tasks are revoked, the
coordination state that could still fire the callback is disarmed, and the callback is
marked FAILURE with a ``ChordError`` through the result backend so its errbacks run and
anyone waiting on it stops waiting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import redis
from amqp.exceptions import ChannelError
from celery import Celery
from celery.canvas import maybe_signature
from celery.exceptions import ChordError

from ._compat import chord_error
from .deadline import within
from .errors import ConfigurationError
from .model import READY_STATES, Chord, ChordKind
from .store.records import FAILED

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
        from .durable import fail_durable_chord

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
    """End the chord's journal record too, when the app has the guard installed."""
    from .guard.state import guard_of  # the guard imports this module

    guard = guard_of(app)
    if guard is not None:
        within(ACTION_TIMEOUT, "store (journal)", guard.store.finish_chord, chord_id, FAILED,
               reason)


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
    """Fail the body as Celery does: ``chord_error_from_stack`` on its real signature type
    (a group body fails every member and runs each member's errbacks)."""
    error = chord_error(f"chord {chord.id} failed by chordguard: {reason}")
    if chord.callback_signature:
        callback = maybe_signature(dict(chord.callback_signature), app=app)
        try:  # chord_error_from_stack stores the traceback being handled: there must be one
            raise error
        except ChordError:
            app.backend.chord_error_from_stack(callback, error)
    elif chord.callback_id:
        app.backend.mark_as_failure(chord.callback_id, error)


UNLOCK_TASK = "celery.chord_unlock"
PURGE_LIMIT = 100_000


@dataclass
class PurgeReport:
    """What ``clean`` removed (or, with ``dry_run``, would remove), queue by queue."""

    dry_run: bool
    all_queues: bool
    removed: dict[str, int] = field(default_factory=dict)  # queue -> messages
    failed_chords: list[FailPlan] = field(default_factory=list)


def purge_coordination(app: Celery, chords: list[Chord], queues: set[str],
                       all_queues: bool = False, dry_run: bool = False) -> PurgeReport:
    """Remove chord_unlock messages (every message with ``all_queues``) from ``queues``.

    Messages are removed from the broker without disturbing the others' order; then the
    affected chords are failed (``fail_chord``), because a chord whose coordination is gone
    would otherwise leave its callback PENDING forever. ``chords`` are the in-flight chords
    of a fresh snapshot: with ``all_queues`` every one of them is affected, otherwise those
    joined by chord_unlock.
    """
    report = PurgeReport(dry_run, all_queues)
    report.removed = within(ACTION_TIMEOUT * 3, "broker (purge)", _purge, app, sorted(queues),
                            all_queues, dry_run)
    affected = chords if all_queues else [c for c in chords if c.kind is ChordKind.UNLOCK]
    reason = "its coordination messages were purged by chordguard clean"
    for chord in affected:
        report.failed_chords.append(plan_fail(chord, reason) if dry_run
                                    else fail_chord(app, chord, reason))
    return report


def _purge(app: Celery, queues: list[str], all_queues: bool, dry_run: bool) -> dict[str, int]:
    with app.connection_for_write() as conn:
        driver = conn.transport.driver_type
        if driver == "redis":
            return _purge_redis(conn.default_channel, queues, all_queues, dry_run)
        if driver == "amqp":
            return {q: _purge_amqp_queue(conn, q, all_queues, dry_run) for q in queues}
        raise ConfigurationError(f"clean supports Redis and RabbitMQ brokers, not {driver}")


def _is_unlock_envelope(raw: bytes | str, held: bool = False) -> bool:
    """Is this kombu Redis envelope (``held``: an unacked ``[envelope, exchange, key]``
    entry) a chord_unlock message?"""
    try:
        envelope = json.loads(raw)
    except ValueError:
        return False
    if held:
        envelope = envelope[0] if isinstance(envelope, list) and envelope else None
    return isinstance(envelope, dict) and (envelope.get("headers") or {}).get("task") \
        == UNLOCK_TASK


def _purge_redis(channel, queues: list[str], all_queues: bool, dry_run: bool,
                 ) -> dict[str, int]:
    """LREM exactly the unlock payloads (or the whole lists); unacked unlock entries too."""
    client = redis.Redis(connection_pool=channel.client.connection_pool)
    prefix = channel.global_keyprefix or ""
    removed: dict[str, int] = {}
    for queue in queues:
        for priority in sorted(set(channel.priority_steps)):
            key = prefix + (f"{queue}{channel.sep}{priority}" if priority else queue)
            payloads = client.lrange(key, 0, PURGE_LIMIT - 1)
            doomed = payloads if all_queues else [p for p in payloads if _is_unlock_envelope(p)]
            removed[queue] = removed.get(queue, 0) + len(doomed)
            if dry_run or not doomed:
                continue
            if all_queues:
                client.delete(key)
            else:
                with client.pipeline() as pipe:
                    for payload in doomed:
                        pipe.lrem(key, 1, payload)
                    pipe.execute()
    unacked, index = prefix + channel.unacked_key, prefix + channel.unacked_index_key
    held = [tag for tag, value in client.hgetall(unacked).items()
            if all_queues or _is_unlock_envelope(value, held=True)]
    removed["(held by workers)"] = len(held)
    if held and not dry_run:
        client.hdel(unacked, *held)
        client.zrem(index, *held)
    return removed


def _purge_amqp_queue(conn, queue: str, all_queues: bool, dry_run: bool) -> int:
    """Take the queue's messages without ack, ack the doomed ones, close: the rest go back
    in their original order."""
    channel = conn.channel()
    try:
        try:
            _, depth, _ = channel.queue_declare(queue=queue, passive=True)
        except ChannelError:
            return 0  # no such queue
        if all_queues and not dry_run:
            return channel.queue_purge(queue) or 0
        doomed = 0
        for _ in range(min(depth, PURGE_LIMIT)):
            message = channel.basic_get(queue=queue, no_ack=False)
            if message is None:
                break
            task = (message.properties.get("application_headers") or {}).get("task")
            if all_queues or task == UNLOCK_TASK:
                doomed += 1
                if not dry_run:
                    channel.basic_ack(message.delivery_tag)
        return doomed
    finally:
        channel.close()
