"""The chaos harness's small, fast cells (``python -m chaos`` runs the whole matrix): real
workers, private servers, a real fault, and the goal — nothing lost, no callback twice,
every chord ended by its deadline."""

from __future__ import annotations

import dataclasses
import socket
import time

import pytest

from chaos.cell import Servers, Tally, run_cell
from chaos.faults import FAULTS
from chaos.kinds import KINDS
from chaos.proxy import start_proxy
from tests.private_servers import private_redis

FAULT = {fault.name: fault for fault in FAULTS}
KIND = {kind.name: kind for kind in KINDS}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """A lane of private servers: broker and store redis-server (no PostgreSQL here)."""
    with private_redis(range(7460, 7470)) as broker, private_redis(range(7470, 7480)) as store:
        yield Servers(broker=broker, redis=store, postgres=None,
                      tmp=tmp_path_factory.mktemp("chaos"))


def cell(servers: Servers, fault: str, kind: str, chords: int = 3, **changes) -> Tally:
    chosen = dataclasses.replace(FAULT[fault], **changes)
    tally = run_cell(KIND[kind], chosen, servers, chords, servers.tmp)
    assert tally.na is None and tally.started == chords
    return tally


def test_guarded_redis_chord_worker_killed_mid_header_fails_properly_by_deadline(servers):
    tally = cell(servers, "kill-header", "redis+guard", deadline=10)
    # the headers died with the worker (no acks_late): a chord that lost one is failed by the
    # reaper (callback FAILURE + errback + dead letter); one whose parts all went to the
    # surviving worker may finish normally. None lost, none twice, none late or early.
    assert tally.failed >= 1 and tally.failed + tally.once == 3, tally
    assert (tally.lost, tally.dup, tally.late, tally.early, tally.both) == (0, 0, 0, 0, 0), tally
    assert tally.slowest is not None and tally.slowest <= 10 + 3


def test_store_joined_redis_chord_worker_killed_mid_header_fails_properly_by_deadline(servers):
    tally = cell(servers, "kill-header", "store:redis", deadline=10)
    # install(app, fan_in="store"): the barrier joins Celery's chords; the reaper ends a chord
    # whose header died with its worker (callback FAILURE + errback + dead letter)
    assert tally.notes == [] and tally.failed >= 1 and tally.failed + tally.once == 3, tally
    assert (tally.lost, tally.dup, tally.late, tally.early, tally.both) == (0, 0, 0, 0, 0), tally


def test_durable_redis_duplicate_headers_and_connection_resets(servers):
    duplicated = cell(servers, "dup-header", "durable:redis")
    assert (duplicated.once, duplicated.lost, duplicated.dup) == (3, 0, 0)
    reset = cell(servers, "net-reset", "durable:redis")
    assert (reset.once, reset.lost, reset.dup, reset.late) == (3, 0, 0, 0)


def test_proxy_adds_delay_and_resets_connections(servers):
    proxy = start_proxy(range(7480, 7490), servers.redis.port, delay=0.1)
    try:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        began = time.monotonic()
        client.sendall(b"PING\r\n")
        assert client.recv(64) == b"+PONG\r\n"
        assert time.monotonic() - began >= 0.2  # 0.1 s each way
        assert proxy.reset() == 1
        with pytest.raises(OSError):
            client.sendall(b"PING\r\n")
            if not client.recv(64):
                raise ConnectionResetError("closed")
        client.close()
    finally:
        proxy.close()


def test_guarded_callback_delivered_twice_runs_once_and_keeps_its_success(servers):
    # the second delivery of an ended callback is dropped: no dead letter, no errback
    for kind in ("redis+guard", "durable:redis"):
        tally = cell(servers, "dup-callback", kind, chords=2)
        assert (tally.once, tally.failed, tally.lost, tally.dup, tally.both) == (2, 0, 0, 0, 0)


def test_guarded_callback_whose_result_cannot_be_stored_ends_failed_with_errbacks(servers):
    tally = cell(servers, "callback-unjsonable", "redis+guard")
    # Celery stores FAILURE (EncodeError): the journal follows it — dead letter, errbacks
    assert (tally.failed, tally.once, tally.lost, tally.both) == (3, 0, 0, 0)
