"""How many workers listen for this app's control commands right now, where the broker can tell.

On a Redis broker every worker with remote control on holds one subscription to the app's
pidbox topic (kombu's fanout exchanges are Redis pub/sub); a default worker also holds one for
gossip's event exchange, so pattern subscribers are not workers. ``PUBLISH`` answers how many
clients a message reached: an empty message on the pidbox topic counts exactly this app's
listening workers, and kombu drops an empty fanout payload unread. RabbitMQ cannot tell
without its management API: ``None``.
"""

from __future__ import annotations

from celery import Celery

CHECK_TIMEOUT = 1.0  # seconds: this is an optimisation, never worth a wait


def count(app: Celery) -> int | None:
    """Workers subscribed to the app's pidbox on a Redis broker, or None when the broker is not
    Redis or would not say (unreachable, ``PUBLISH`` refused)."""
    try:
        with app.connection_for_read(connect_timeout=CHECK_TIMEOUT, transport_options={
                "socket_timeout": CHECK_TIMEOUT, "socket_connect_timeout": CHECK_TIMEOUT,
                "max_retries": 0}) as connection:
            if connection.transport.driver_type != "redis":
                return None
            channel = connection.default_channel
            exchange = app.control.mailbox(connection).exchange.name
            topics = getattr(channel, "_get_publish_topics", None)
            names = topics(exchange, "") if topics else [channel._get_publish_topic(exchange, "")]
            return sum(int(channel.client.publish(name, "")) for name in names)
    except Exception:  # noqa: BLE001 - any failure: the caller waits as without a count
        return None
