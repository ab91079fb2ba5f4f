"""Fixtures: real services (checked loudly, never skipped) and real clusters."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.cluster import Cluster
from tests.durable_helpers import Trace

SERVICES = {"Redis": 6379, "RabbitMQ": 5672, "PostgreSQL": 5432}
TESTS = Path(__file__).resolve().parent
OWN_CHECKS = (TESTS / "unit", TESTS / "contract")  # these check only what they need, if any


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Integration tests need every service: refuse to start without them (never skip).
    ``tests/unit`` needs none and ``tests/contract`` checks its own, per backend."""
    if all(any(item.path.is_relative_to(folder) for folder in OWN_CHECKS) for item in items):
        return
    missing = []
    for name, port in SERVICES.items():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            missing.append(f"{name} (127.0.0.1:{port})")
    if missing:
        raise pytest.UsageError(
            "services not answering: " + ", ".join(missing)
            + " — run scripts/test, which starts them, instead of pytest directly")


@pytest.fixture
def make_cluster(tmp_path):
    """``make_cluster(broker, backend, conf)`` -> a Cluster whose workers stop after the test."""
    clusters: list[Cluster] = []

    def factory(broker: str, backend: str | None, conf: dict | None = None) -> Cluster:
        cluster = Cluster(broker, backend, conf, tmp=tmp_path)
        clusters.append(cluster)
        return cluster

    yield factory
    for cluster in clusters:
        cluster.close()


@pytest.fixture
def trace():
    """A Redis list test tasks append to (``durable_helpers.Trace``), removed afterwards."""
    trace = Trace()
    yield trace
    trace.close()
