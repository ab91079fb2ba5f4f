"""Redis store URL -> client: one server, a Redis Cluster, or the master a Sentinel names.

- ``redis://host:port/db``, ``rediss://…``, ``unix:///path?db=N``: one server;
- ``redis+cluster://host:port``, ``rediss+cluster://…``: a Redis Cluster reached through any
  node (the others are discovered); database 0 only. It is redis-py's
  ``RedisCluster.from_url`` URL with ``+cluster`` after the scheme;
- ``sentinel://host:port[;sentinel://host:port…][/db]?master_name=NAME``: the master the
  Sentinels name, found again after a failover. It is the URL kombu and Celery accept
  (``;`` between Sentinels; the master's database and credentials in the first one). Celery
  takes the master name from a transport option, the store from ``master_name`` in the
  query (``config.with_master_name`` adds it from the app's settings).
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelManagedConnection

from ..._urls import mask_url
from ...errors import ConfigurationError
from .. import timeouts

CLUSTER_SUFFIX = "+cluster"
SENTINEL = "sentinel"
MASTER_NAME = "master_name"
FAILOVER_RETRIES = 3
SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster", SENTINEL)


def kind(url: str) -> str:
    """``cluster``, ``sentinel`` or ``single``."""
    scheme = url.partition("://")[0].lower()
    if scheme.endswith(CLUSTER_SUFFIX):
        return "cluster"
    return SENTINEL if scheme == SENTINEL else "single"


def check(url: str) -> None:
    """Raise ConfigurationError for a URL that can only fail: the checks need no server."""
    if url.partition("://")[0].lower() not in SCHEMES:
        raise ConfigurationError(f"store URL {mask_url(url)!r}: a Redis store URL starts with "
                                 + ", ".join(f"{s}://" for s in SCHEMES))
    if kind(url) == SENTINEL:
        sentinels(url)
        if not master_name(url):
            raise ConfigurationError(
                f"store URL {mask_url(url)!r} names no Redis master: add "
                f"?{MASTER_NAME}=NAME, or set chordguard_store_transport_options = "
                f"{{'{MASTER_NAME}': NAME}}")
        return
    parts = urlsplit(url)
    db = parts.path.strip("/")
    if parts.scheme.startswith("redis") and db and not db.isdigit():
        raise ConfigurationError(f"store URL {mask_url(url)!r}: the Redis database must be "
                                 f"a number (redis://host:6379/0), not {db!r}")
    if kind(url) == "cluster" and db not in ("", "0"):
        raise ConfigurationError(f"store URL {mask_url(url)!r}: a Redis Cluster has only "
                                 "database 0")


def _options() -> dict[str, Any]:
    """The process's store timeouts (``store.timeouts``) as redis-py arguments."""
    limits = timeouts.current()
    return {"socket_connect_timeout": limits.connect, "socket_timeout": limits.operation,
            "socket_keepalive": True, "health_check_interval": limits.health_check}


@functools.cache
def client(url: str) -> Any:
    """The client for ``url`` (one per process; redis-py's pools reconnect in a forked child
    by themselves). A cluster client asks a node for the slot map here; the others connect
    on their first command."""
    check(url)
    found = kind(url)
    if found == "cluster":
        return RedisCluster.from_url(url.replace(CLUSTER_SUFFIX, "", 1), **_options())
    if found == SENTINEL:
        return _sentinel_master(url)
    return redis.Redis.from_url(url, **_options())


def sentinels(url: str) -> list[tuple[str, int]]:
    """The ``(host, port)`` of each Sentinel of a ``sentinel://…;sentinel://…`` URL."""
    out = []
    for chunk in url.split(";"):
        parts = urlsplit(chunk.strip())
        if parts.scheme.lower() != SENTINEL or not parts.hostname:
            raise ConfigurationError(f"store URL {mask_url(url)!r}: each ';'-separated part "
                                     "must be sentinel://host:port")
        out.append((parts.hostname, parts.port or 26379))
    return out


def master_name(url: str) -> str | None:
    """The ``master_name`` query value of any part of a Sentinel URL, or None."""
    for chunk in url.split(";"):
        found = dict(parse_qsl(urlsplit(chunk).query)).get(MASTER_NAME)
        if found:
            return found
    return None


def _sentinel_master(url: str) -> redis.Redis:
    first = urlsplit(url.split(";")[0])
    db = first.path.strip("/") or "0"
    if not db.isdigit():
        raise ConfigurationError(f"store URL {mask_url(url)!r}: the Redis database must be "
                                 f"a number, not {db!r}")
    credentials = {name: unquote(value) for name, value in
                   (("username", first.username), ("password", first.password)) if value}
    options = _options()
    limits = {k: v for k, v in options.items() if k != "health_check_interval"}
    # a command that meets the old master, now a replica, is sent again to the new one
    failover = Retry(ExponentialBackoff(cap=1.0, base=0.1), FAILOVER_RETRIES)
    watchers = _Sentinels(sentinels(url), sentinel_kwargs=limits, db=int(db), **credentials,
                          retry=failover, **options)
    return watchers.master_for(master_name(url), connection_class=_MasterConnection)


class _MasterConnection(SentinelManagedConnection):
    """Reconnects to the master the Sentinels name now: redis-py 8 reconnects a dropped
    connection to its last address (``connect_check_health``), the demoted master."""

    def connect_check_health(self, *args: Any, **kwargs: Any) -> Any:
        if self._sock is None and self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        return super().connect_check_health(*args, **kwargs)


class _Sentinels(Sentinel):
    """redis-py's Sentinel, saying in one line when no Sentinel names the master."""

    def discover_master(self, service_name: str) -> Any:
        try:
            return super().discover_master(service_name)
        except MasterNotFoundError:
            where = ", ".join("{host}:{port}".format_map(s.connection_pool.connection_kwargs)
                              for s in self.sentinels)
            raise MasterNotFoundError(f"no Sentinel at {where} names a master "
                                      f"{service_name!r}") from None
