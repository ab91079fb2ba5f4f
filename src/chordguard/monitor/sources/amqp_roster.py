"""Which workers a look-up can expect on RabbitMQ, without its management API.

Two passive declares tell it: a worker's own pidbox queue (``<hostname>.<control
exchange>.pidbox``, auto-deleted, or exclusive, with the worker's connection) exists while
the worker lives, so a remembered worker (``worker_roster``) that died is not waited for;
and each queue of the app reports its consumers (one per worker taking from it), so a
look-up can end once the workers that answered ``active_queues`` account for every
consumer of every queue — on a first look too, when nobody is remembered.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from amqp.exceptions import ChannelError
from celery import Celery

RESOURCE_LOCKED = 405
CHECK_TIMEOUT = 1.0  # seconds: an optimisation, never worth a longer wait


@dataclass
class Roster:
    """What the declares showed: the remembered workers alive, consumers per queue."""

    alive: set[str] = field(default_factory=set)
    consumers: dict[str, int] = field(default_factory=dict)

    def accounted(self, replies: dict[str, list[str]]) -> bool:
        """Every consumer of every queue is one of the workers in ``replies`` (host -> the
        queues its ``active_queues`` reply names). False when no queue has a consumer: a
        worker taking from other queues only could not be counted."""
        if not any(self.consumers.values()):
            return False
        return all(sum(1 for queues in replies.values() if queue in queues) >= count
                   for queue, count in self.consumers.items())


def look(app: Celery, remembered: Iterable[str], queues: Iterable[str]) -> Roster | None:
    """The roster of a RabbitMQ broker, or None when the broker is another or did not answer
    (the caller then waits as without one)."""
    namespace = app.conf.control_exchange
    roster = Roster()
    try:
        with app.connection_for_read(connect_timeout=CHECK_TIMEOUT) as connection:
            if connection.transport.driver_type != "amqp":
                return None
            connection.connect()
            for host in remembered:
                if _alive(connection, f"{host}.{namespace}.pidbox"):
                    roster.alive.add(host)
            for queue in queues:
                roster.consumers[queue] = _consumers(connection, queue) or 0
    except Exception:  # noqa: BLE001 - any failure: the caller waits as without a roster
        return None
    return roster


def _alive(connection: object, pidbox: str) -> bool:
    """A worker's pidbox queue exists with a consumer. Celery may declare it exclusive: the
    broker then refuses the declare as locked (405), which only its live owner causes."""
    channel = connection.channel()  # type: ignore[attr-defined]
    try:
        _, _, consumers = channel.queue_declare(queue=pidbox, passive=True)
    except ChannelError as exc:
        return getattr(exc, "reply_code", None) == RESOURCE_LOCKED
    channel.close()
    return consumers > 0


def _consumers(connection: object, queue: str) -> int | None:
    """The queue's consumer count; None when it does not exist (the broker closes the
    channel then: each declare gets its own)."""
    channel = connection.channel()  # type: ignore[attr-defined]
    try:
        _, _, consumers = channel.queue_declare(queue=queue, passive=True)
    except ChannelError:
        return None
    channel.close()
    return consumers
