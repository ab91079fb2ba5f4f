"""How many workers listen for control commands right now, where the broker can tell.

On a Redis broker every worker with remote control on holds one pattern subscription
(kombu's fanout exchanges, ``celery.pidbox`` among them, are Redis pub/sub), so the clients of
the broker's database with a pattern subscription are an upper bound on the workers that will
answer a broadcast: other apps' workers on the same database are counted too, never a worker
of this one missed. RabbitMQ cannot tell without its management API: ``None``.
"""

from __future__ import annotations

from celery import Celery

CHECK_TIMEOUT = 1.0  # seconds: this is an optimisation, never worth a wait


def count(app: Celery) -> int | None:
    """Clients subscribed to pub/sub patterns on the broker's Redis database, or None when
    the broker is not Redis or would not say (``CLIENT LIST`` refused, unreachable)."""
    try:
        with app.connection_for_read(connect_timeout=CHECK_TIMEOUT, transport_options={
                "socket_timeout": CHECK_TIMEOUT, "socket_connect_timeout": CHECK_TIMEOUT,
                "max_retries": 0}) as connection:
            if connection.transport.driver_type != "redis":
                return None
            client = connection.default_channel.client
            db = int(client.connection_pool.connection_kwargs.get("db") or 0)
            clients = client.client_list()
    except Exception:  # noqa: BLE001 - any failure: the caller waits as without a count
        return None
    return sum(1 for c in clients if _int(c.get("db")) == db and (_int(c.get("psub")) or 0) > 0)


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
