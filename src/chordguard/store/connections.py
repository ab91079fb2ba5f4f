"""Store URLs -> shared connections: one SQLAlchemy engine or Redis client per URL."""

from __future__ import annotations

import functools
import os

import redis
from celery import Celery
from sqlalchemy import Engine, create_engine, event

DEFAULT_STORE = "sqlite:///chordguard.sqlite"
CONNECT_TIMEOUT = 3


def store_url(app: Celery | None = None, explicit: str | None = None) -> str:
    """The store to use: ``explicit``, else ``app.conf.chordguard_store``, else the default.

    ``CHORDGUARD_STORE`` in the environment overrides the default file.
    """
    if explicit:
        return explicit
    configured = app.conf.get("chordguard_store") if app is not None else None
    return configured or os.environ.get("CHORDGUARD_STORE") or DEFAULT_STORE


def is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


@functools.cache
def sql_engine(url: str) -> Engine:
    """A pooled engine; SQLite files get WAL and a busy timeout so workers can share them."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    connect_args = {"connect_timeout": CONNECT_TIMEOUT} if url.startswith("postgresql") else {}
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


@functools.cache
def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT,
                                socket_timeout=10, health_check_interval=30)
