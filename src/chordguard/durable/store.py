"""Store URL -> the barrier store for it (one per process and URL)."""

from __future__ import annotations

import functools

from celery import Celery

from ..store.connections import is_redis, store_url
from .barrier import BarrierStore


@functools.cache
def open_barriers(url: str) -> BarrierStore:
    """Redis for ``redis://`` URLs, else SQL (PostgreSQL, SQLite); tables made on first use."""
    if is_redis(url):
        from ..store.redis.barriers import RedisBarriers

        return RedisBarriers(url)
    from ..store.sql.barriers import SqlBarriers

    return SqlBarriers(url)


def barriers_for(app: Celery, explicit: str | None = None) -> BarrierStore:
    """The barrier store ``app`` uses (``explicit`` wins over ``app.conf.chordguard_store``)."""
    return open_barriers(store_url(app, explicit))
