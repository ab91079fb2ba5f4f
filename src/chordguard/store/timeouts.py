"""Client timeouts of every store connection, so a hung store never blocks a thread for ever.

One process-wide ``Timeouts`` (``current()``), set from the app's configuration by
``config.apply_store_timeouts`` when the guard is installed or durable chords are enabled,
and otherwise from the environment (``CHORDGUARD_STORE_TIMEOUT``,
``CHORDGUARD_STORE_CONNECT_TIMEOUT``). Connections made after ``configure`` use it.

- Redis: ``socket_connect_timeout`` = connect, ``socket_timeout`` = operation, a health
  check (PING) on a connection idle longer than ``health_check``;
- PostgreSQL: ``connect_timeout`` = connect, ``statement_timeout`` and ``lock_timeout`` =
  operation, TCP keepalives so a vanished server is noticed;
- SQLite: the busy timeout (``sql.engine``) bounds waiting for a lock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CONNECT_ENV = "CHORDGUARD_STORE_CONNECT_TIMEOUT"
OPERATION_ENV = "CHORDGUARD_STORE_TIMEOUT"


@dataclass(frozen=True)
class Timeouts:
    """Seconds: to connect, for one operation (a read or a statement), between health
    checks of an idle Redis connection."""

    connect: float = 3.0
    operation: float = 10.0
    health_check: float = 30.0


def from_environment() -> Timeouts:
    """The defaults, overridden by the two environment variables when they are set."""
    default = Timeouts()
    return Timeouts(connect=float(os.environ.get(CONNECT_ENV) or default.connect),
                    operation=float(os.environ.get(OPERATION_ENV) or default.operation))


_current: Timeouts | None = None


def current() -> Timeouts:
    """The timeouts new store connections get."""
    global _current
    if _current is None:
        _current = from_environment()
    return _current


def configure(timeouts: Timeouts) -> None:
    """Use ``timeouts`` for store connections made from now on in this process."""
    global _current
    _current = timeouts
