"""The private servers of one lane of the matrix, on ports of the harness's own ranges."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.private_servers import private_postgres, private_redis

from .cell import Servers

BROKER_PORTS, STORE_PORTS, PG_PORTS = range(7440, 7450), range(7450, 7460), range(5470, 5480)
_starting = threading.Lock()  # two lanes must not pick the same free port


@contextmanager
def lane_servers(tmp: Path) -> Iterator[Servers]:
    """A broker redis-server, a store redis-server and a PostgreSQL cluster for one lane."""
    with ExitStack() as stack:
        with _starting:
            broker = stack.enter_context(private_redis(BROKER_PORTS))
            store = stack.enter_context(private_redis(STORE_PORTS))
            postgres = stack.enter_context(private_postgres(PG_PORTS))
        yield Servers(broker=broker, redis=store, postgres=postgres, tmp=tmp)
