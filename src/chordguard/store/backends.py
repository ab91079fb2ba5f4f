"""Store URL -> store: one scheme table, one factory, one store object per URL.

| scheme | backend |
|---|---|
| ``memory://[name]`` | ``memory.MemoryStore``: this process only (unit tests, the demo) |
| ``sqlite:///path`` | ``sql.store.SqlStore`` on a SQLite file (WAL: every worker of a host) |
| ``postgresql+psycopg://…`` | ``sql.store.SqlStore`` on PostgreSQL (``postgres://`` and
  ``postgresql://`` mean psycopg 3: ``canonical``) |
| ``redis://``, ``rediss://``, ``unix://`` | ``redis.store.RedisStore`` on one Redis |
| ``redis+cluster://``, ``rediss+cluster://`` | ``redis.store.RedisStore`` on a Redis Cluster |
| ``sentinel://h:p[;…]?master_name=M`` | ``redis.store.RedisStore`` on Sentinel's master |

PostgreSQL may sit behind PgBouncer in transaction mode: the SQL store leaves no prepared
statement or session state on a server connection (``sql.engine``). The Redis URL forms are
in ``redis.connect``.
"""

from __future__ import annotations

import functools
import importlib

from .._urls import mask_url
from ..errors import ConfigurationError
from .protocols import DEFAULT_RETENTION, Store

BACKENDS = {
    "memory": "chordguard.store.memory:MemoryStore",
    "sqlite": "chordguard.store.sql.store:SqlStore",
    "postgresql": "chordguard.store.sql.store:SqlStore",
    "redis": "chordguard.store.redis.store:RedisStore",
    "rediss": "chordguard.store.redis.store:RedisStore",
    "unix": "chordguard.store.redis.store:RedisStore",
    "sentinel": "chordguard.store.redis.store:RedisStore",
}


def canonical(url: str) -> str:
    """``postgres://…`` and ``postgresql://…`` (as most people write them) ->
    ``postgresql+psycopg://…``, the psycopg 3 driver chordguard depends on; ``postgres+DRIVER``
    -> ``postgresql+DRIVER`` (SQLAlchemy's name). Any other URL as it is."""
    scheme, sep, rest = url.partition("://")
    dialect, _, driver = scheme.partition("+")
    if not sep or dialect.lower() not in ("postgres", "postgresql"):
        return url
    return f"postgresql+{driver or 'psycopg'}://{rest}"


def by_url(url: str) -> type[Store]:
    """The store class for ``url``'s scheme (a SQLAlchemy driver after ``+`` is kept for
    SQLAlchemy). Raises ConfigurationError for a scheme no backend serves."""
    canon = canonical(url)
    scheme = canon.partition("://")[0].partition("+")[0].lower() if "://" in canon else ""
    path = BACKENDS.get(scheme)
    if path is None:
        raise ConfigurationError(
            f"unknown store URL {mask_url(url)!r}: use memory://, sqlite:///FILE, "
            "postgresql://..., redis://, rediss://, unix://, redis+cluster:// "
            "or sentinel://")
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def open_store(url: str, retention: float = DEFAULT_RETENTION) -> Store:
    """The store for ``url`` (one per process, ``canonical`` URL and retention); nothing
    connects until first use, when SQL tables are created. Raises ConfigurationError for an
    unknown scheme or a URL that can only fail.
    """
    return _open(canonical(url), retention)


@functools.cache
def _open(url: str, retention: float) -> Store:
    store = by_url(url)(url)
    store.retention = retention
    return store


def unreachable(exc: BaseException) -> bool:
    """Does ``exc`` say the store could not be reached or did not answer in time (down,
    hung past the client timeout, failing over, read-only replica), as opposed to a bug?"""
    if isinstance(exc, OSError):
        return True
    module = type(exc).__module__ or ""
    if module.startswith("redis"):
        from redis import exceptions

        return isinstance(exc, exceptions.ConnectionError | exceptions.TimeoutError
                          | exceptions.BusyLoadingError | exceptions.ReadOnlyError)
    if module.startswith("sqlalchemy"):
        from sqlalchemy import exc as sql

        return isinstance(exc, sql.OperationalError | sql.InterfaceError) \
            or getattr(exc, "connection_invalidated", False)
    return False
