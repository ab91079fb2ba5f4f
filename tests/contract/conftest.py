"""The contract suite's fixtures: one store per backend, each checking only its own service.

memory and SQLite need nothing; PostgreSQL and Redis must answer on loopback, or the test
fails loudly (never skips): start them (``scripts/test`` does) or deselect with ``-k``.
The distributed deployments (marked ``distributed``) are private servers the tests start
themselves (``tests/distributed_servers``): a Redis Cluster, a Sentinel, PgBouncer.
"""

from __future__ import annotations

import functools
import socket
import uuid
from urllib.parse import urlsplit

import pytest

from chordguard.store import Store, open_store
from tests import distributed_servers as servers
from tests.cluster import PG_URL, REDIS_URL

SERVICES = {"postgres": ("PostgreSQL", PG_URL), "redis": ("Redis", REDIS_URL)}
DISTRIBUTED = {"redis-cluster": servers.redis_cluster,
               "redis-sentinel": servers.sentinel_store,
               "pgbouncer": servers.pgbouncer}
BACKENDS = ("memory", "sqlite", "postgres", "redis",
            *(pytest.param(name, marks=pytest.mark.distributed) for name in DISTRIBUTED))


@functools.cache
def _answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


def backend_url(backend: str, tmp_path) -> str:
    """A URL of ``backend`` for one test: its own memory store or SQLite file; the shared
    PostgreSQL database and Redis (tests use fresh ids there); the private deployments."""
    if backend in DISTRIBUTED:
        return DISTRIBUTED[backend]()
    if backend in SERVICES:
        name, url = SERVICES[backend]
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 0
        if not _answers(host, port):
            pytest.fail(f"{name} is not answering at {host}:{port}, and the {backend} store "
                        "contract needs it: start it (scripts/test starts every service)",
                        pytrace=False)
        return url
    if backend == "memory":
        return f"memory://{uuid.uuid4().hex}"
    return f"sqlite:///{tmp_path}/store-{uuid.uuid4().hex[:6]}.sqlite"


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def store(backend, tmp_path) -> Store:
    """The store of each backend in turn."""
    return open_store(backend_url(backend, tmp_path))
