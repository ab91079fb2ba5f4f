"""Fixtures for the serve tests, loaded with ``pytest_plugins = ("tests.serve_fixtures",)``."""

from __future__ import annotations

import pytest

from tests.cluster import PG_BACKEND, REDIS_URL, Cluster
from tests.serving import Server


@pytest.fixture
def served():
    """``served(cluster, token=None)`` -> a running Server, stopped after the test."""
    servers: list[Server] = []

    def start(cluster: Cluster, token: str | None = None) -> Server:
        server = Server(cluster, token)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def redis_cluster(make_cluster):
    """A Redis-broker, Redis-backend cluster with one worker."""
    cluster = make_cluster(REDIS_URL, REDIS_URL)
    cluster.start_worker()
    return cluster


@pytest.fixture
def pg_cluster(make_cluster):
    """A Redis-broker, PostgreSQL-backend cluster (chords joined by chord_unlock) with one
    worker; lost_header is called after 2 s."""
    cluster = make_cluster(REDIS_URL, PG_BACKEND, {"chordguard_lost_header_grace": 2})
    cluster.start_worker()
    return cluster
