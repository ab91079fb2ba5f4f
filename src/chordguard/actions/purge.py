"""Purging chord coordination (chord_unlock) messages, then failing the chords they served."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import redis
from amqp.exceptions import ChannelError
from celery import Celery

from .._timeouts import within
from ..errors import ConfigurationError
from ..model import READY_STATES, Chord, ChordKind
from ..monitor.sources.broker import queue_keys
from .callback import OperatorFail
from .fail import ACTION_TIMEOUT, FailPlan, fail_chord, plan_fail
from .queued import broker_kind

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
                       all_queues: bool = False, dry_run: bool = False,
                       operator: OperatorFail | None = None) -> PurgeReport:
    """Remove chord_unlock messages (every message with ``all_queues``) from ``queues``.

    Messages are removed from the broker without disturbing the others' order; then the
    affected chords are failed (``fail_chord``), because a chord whose coordination is gone
    would otherwise leave its callback PENDING forever. ``chords`` are the in-flight chords
    of a fresh snapshot: with ``all_queues`` every one of them is affected, otherwise those
    joined by chord_unlock. ``operator``: see ``fail_chord``.
    """
    report = PurgeReport(dry_run, all_queues)
    affected = chords if all_queues else [c for c in chords if c.kind is ChordKind.UNLOCK]
    if operator is not None and not dry_run:  # refuse before anything is purged
        for chord in affected:
            if chord.callback_state not in READY_STATES:
                operator.check(app, chord.callback_signature)
    report.removed = within(ACTION_TIMEOUT * 3, "broker (purge)", _purge, app, sorted(queues),
                            all_queues, dry_run)
    reason = "its coordination messages were purged by chordguard clean"
    for chord in affected:
        report.failed_chords.append(plan_fail(chord, reason, broker_kind(app)) if dry_run
                                    else fail_chord(app, chord, reason, operator))
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
        for key in queue_keys(channel, queue):
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
