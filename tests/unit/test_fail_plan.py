"""What a fail plan says about the pending tasks' queued messages, broker by broker (nothing
is contacted: ``plan_fail`` only reads the chord)."""

from __future__ import annotations

from chordguard.actions import plan_fail
from chordguard.model import Chord, ChordKind, HeaderPart


def chord(*parts: HeaderPart) -> Chord:
    return Chord(id="g1", kind=ChordKind.REDIS, header=list(parts), callback_id="cb")


QUEUED = HeaderPart("h2", "PENDING", held_by="queue:orphan (chain task c1)")
HELD = HeaderPart("h3", "PENDING", held_by="worker:w1@host reserved")


def test_redis_removes_the_pending_tasks_messages():
    plan = plan_fail(chord(HeaderPart("h1", "SUCCESS"), QUEUED), "stuck", "redis")
    assert plan.revoke == ["h2"] and plan.removed_messages == {}
    assert plan.steps[1].startswith("remove their messages still on the Redis broker (by task id")


def test_rabbitmq_says_what_stays_and_who_knows_the_revoked_ids():
    plan = plan_fail(chord(QUEUED, HELD), "stuck", "amqp")
    assert plan.revoke == ["h2", "h3"]
    stays = plan.steps[1]
    assert stays.startswith("their messages stay in their queues on RabbitMQ (seen queued in "
                            "orphan; chordguard removes messages by task id on Redis only)")
    assert "known only to the workers that heard this revoke" in stays
    assert plan_fail(chord(HELD), "stuck", "sqs").steps[1] == (
        "none of them seen queued on the sqs broker (a revoked id is known only to the "
        "workers that heard this revoke)")


def test_nothing_said_without_a_pending_task_or_a_known_broker():
    finished = chord(HeaderPart("h1", "SUCCESS"))
    assert not any("messages" in s for s in plan_fail(finished, "stuck", "amqp").steps)
    assert not any("messages" in s for s in plan_fail(chord(QUEUED), "stuck").steps)
    durable = Chord(id="d1", kind=ChordKind.DURABLE, header=[QUEUED])
    assert any("Redis broker" in s for s in plan_fail(durable, "stuck", "redis").steps)
