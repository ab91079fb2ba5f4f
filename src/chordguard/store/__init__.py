"""chordguard's own state, behind one factory and one interface.

``open_store(url)`` picks the backend by the URL's scheme (``backends``): ``memory://``,
``sqlite:///…``, ``postgresql+psycopg://…`` (PgBouncer in transaction mode too),
``redis://``/``rediss://``/``unix://``, ``redis+cluster://`` and ``sentinel://``. The
store it returns implements every protocol of ``protocols`` (journal, barriers, leases,
dead letters, breakers); the records it keeps are in ``records``, with their one codec.
Backends: ``sql/`` (schema, engine and fork rule), ``redis/`` (keys, Lua), ``memory``.
"""

from .backends import by_url, open_store, unreachable
from .protocols import (
    DEFAULT_RETENTION,
    Barriers,
    Breakers,
    DeadLetters,
    Journal,
    Leases,
    Store,
)


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """The errors a store raises when it cannot be reached (for ``except``; imported on
    first use so a process without a SQL or Redis store never loads their drivers)."""
    from redis import RedisError
    from redis.exceptions import RedisClusterException
    from sqlalchemy.exc import SQLAlchemyError

    return (SQLAlchemyError, RedisError, RedisClusterException)


__all__ = [
    "DEFAULT_RETENTION",
    "Barriers",
    "Breakers",
    "DeadLetters",
    "Journal",
    "Leases",
    "Store",
    "by_url",
    "open_store",
    "unavailable_errors",
    "unreachable",
]
