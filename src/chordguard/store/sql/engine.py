"""SQL connections: one engine per URL, one connection rule per dialect, one fork rule.

- SQLite files get WAL, ``synchronous=NORMAL`` and a 30 s busy timeout, so every worker
  process of a host can share one file;
- PostgreSQL gets the store timeouts (``store.timeouts``: connect, statement and lock
  timeouts, TCP keepalives) and pre-ping on the pool — a PgBouncer that refuses the
  ``options`` start-up parameter gets connections without the statement and lock timeouts
  (set ``query_timeout`` on PgBouncer instead); ``run`` gives each thread
  one autocommit connection of its own, detached from the pool, so a one-statement write
  costs exactly one round trip. Nothing outlives a transaction on the server connection
  (psycopg never prepares a statement server-side, no session setting, lock or cursor), so
  PgBouncer in transaction mode may hand each transaction to another server connection;
- the fork rule: a forked process (a prefork pool child) never reuses its parent's
  connections. Right after any ``os.fork`` every engine's pool is replaced without closing
  the parent's sockets, and the threads' own connections are forgotten. Everything SQL in
  chordguard gets its connections here, so nothing else has to care.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, exc

from .. import timeouts

T = TypeVar("T")
SQLITE_BUSY_TIMEOUT = 30

_engines: dict[str, Engine] = {}
_local = threading.local()  # .connections: id(engine) -> this thread's autocommit connection


def engine(url: str) -> Engine:
    """The pooled engine for ``url`` (one per process)."""
    found = _engines.get(url)
    if found is None:
        found = _engines.setdefault(url, _create(url))
    return found


def _create(url: str) -> Engine:
    if url.startswith("sqlite"):
        _make_parent(url)
        created = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT,
                                                   "check_same_thread": False})

        @event.listens_for(created, "connect")
        def _pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return created
    connect_args = _postgres_limits() if url.startswith("postgresql") else {}
    if url.startswith("postgresql+psycopg:"):  # psycopg 3 prepares a statement run 5 times
        connect_args["prepare_threshold"] = None
    created = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    if "options" in connect_args:
        event.listen(created, "do_connect", _without_refused_options)
    return created


REFUSED_OPTIONS = "unsupported startup parameter: options"  # PgBouncer's answer


def _without_refused_options(dialect, _record, cargs, cparams):
    """Connect; when the server (PgBouncer) refuses the ``options`` start-up parameter,
    connect again without it (SQLAlchemy keeps ``cparams`` for the engine's next ones)."""
    try:
        return dialect.connect(*cargs, **cparams)
    except dialect.loaded_dbapi.OperationalError as error:
        if REFUSED_OPTIONS not in str(error):
            raise
        cparams.pop("options", None)
        return dialect.connect(*cargs, **cparams)


def _postgres_limits() -> dict:
    """libpq arguments: no connect, statement or lock wait longer than the store timeouts,
    and keepalives so a server gone silent is given up on."""
    limits = timeouts.current()
    operation_ms = int(limits.operation * 1000)
    return {"connect_timeout": max(1, round(limits.connect)),
            "options": f"-c statement_timeout={operation_ms} -c lock_timeout={operation_ms}",
            "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
            "keepalives_count": 3, "tcp_user_timeout": operation_ms}


def _make_parent(url: str) -> None:
    """A writer's SQLite file gets its folder (the default store lives under ~/.local/state)."""
    path = url.removeprefix("sqlite:///").split("?")[0]
    if url.startswith("sqlite:///") and path and path != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def run(bound: Engine, fn: Callable[[Connection], T]) -> T:
    """Run ``fn`` as one transaction: a pooled transaction on SQLite; on PostgreSQL this
    thread's own autocommit connection (each statement commits by itself), replaced once
    when it broke."""
    if bound.dialect.name != "postgresql":
        with bound.begin() as conn:
            return fn(conn)
    for attempt in (1, 2):
        conn = _thread_connection(bound)
        try:
            return fn(conn)
        except exc.DBAPIError as error:
            if attempt == 2 or not (error.connection_invalidated
                                    or isinstance(error, exc.OperationalError)):
                raise
            _connections().pop(id(bound), None)
            conn.close()
    raise AssertionError("unreachable")


def _connections() -> dict[int, Connection]:
    if not hasattr(_local, "connections"):
        _local.connections = {}
    return _local.connections


def _thread_connection(bound: Engine) -> Connection:
    key = id(bound)
    conn = _connections().get(key)
    if conn is None:
        conn = bound.connect().execution_options(isolation_level="AUTOCOMMIT")
        conn.detach()
        _connections()[key] = conn
    return conn


def _after_fork_in_child() -> None:
    """The fork rule (see the module docstring): the child starts with fresh pools."""
    global _local
    _local = threading.local()
    for bound in list(_engines.values()):
        bound.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)
