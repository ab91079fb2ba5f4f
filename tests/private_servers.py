"""Private, disposable servers for fault tests: a ``redis-server`` and a PostgreSQL cluster
on ports of the caller's range, never the machine's shared ones.

API (kept stable for the chaos harness)::

    with private_redis(range(7420, 7440)) as server:      # redis-server --save ''
        server.url                     # "redis://127.0.0.1:<port>/0"
        server.pause(); server.resume()  # SIGSTOP / SIGCONT: a hung store
        with server.hung(15): ...      # paused for the block, resumed after (or after N s)
        server.restart()               # stop + start on the same port: loses everything
    with private_postgres(range(5460, 5470)) as server:   # initdb + pg_ctl in a temp dir
        server.url                     # "postgresql+psycopg://postgres@127.0.0.1:<port>/postgres"
        server.pause(); server.resume()  # SIGSTOP / SIGCONT the postmaster and its backends
        server.restart()               # pg_ctl restart -m immediate: data kept

Both also have ``stop()`` and ``pids()``. A port is taken only if nothing listens on it.
PostgreSQL refuses to run as root, so as root its tools run as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

PG_BIN = Path(os.environ.get("CG_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port(ports: Iterable[int]) -> int:
    """The first port of ``ports`` nothing on 127.0.0.1 listens on or holds."""
    for port in ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports!r}")


def _wait_listening(port: int, process: subprocess.Popen | None, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not listen within {timeout:.0f} s")


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


class _Pausable:
    """SIGSTOP/SIGCONT of a server's processes, first the parent (so nothing new forks)."""

    def pids(self) -> list[int]:
        raise NotImplementedError

    def pause(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in reversed(self.pids()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    @contextlib.contextmanager
    def hung(self, seconds: float | None = None) -> Iterator[None]:
        """Paused inside the block; with ``seconds``, resumed by a timer after that long
        even if the block is still running (it is resumed at the block's end regardless)."""
        self.pause()
        timer = threading.Timer(seconds, self.resume) if seconds is not None else None
        if timer:
            timer.start()
        try:
            yield
        finally:
            if timer:
                timer.cancel()
            self.resume()


class PrivateRedis(_Pausable):
    """A ``redis-server`` without persistence on a port of its own."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_listening(self.port, self.process)

    def pids(self) -> list[int]:
        alive = self.process is not None and self.process.poll() is None
        return [self.process.pid] if alive else []

    def stop(self) -> None:
        if self.process is None:
            return
        self.resume()
        self.process.kill()
        self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port: every key is gone."""
        self.stop()
        self.start()


class PrivatePostgres(_Pausable):
    """A PostgreSQL cluster made with ``initdb`` in a temp dir, run by ``pg_ctl``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        self.dir = Path(tempfile.mkdtemp(prefix=f"cg-pg-{port}-"))
        self.data = self.dir / "data"

    def _run(self, *args: str) -> None:
        command = [str(PG_BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.dir}'\nfsync = off\n"
                       "synchronous_commit = off\nfull_page_writes = off\n"
                       "max_connections = 200\n")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "start")
        _wait_listening(self.port, None)

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().split()[0])
        return None

    def pids(self) -> list[int]:
        pid = self.postmaster_pid()
        return [pid, *_children(pid)] if pid else []

    def stop(self) -> None:
        self.resume()
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def restart(self) -> None:
        """An immediate restart (as a crash): connections drop, committed data is kept."""
        self.resume()
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self.start()

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def private_redis(ports: Iterable[int] = range(7420, 7440)) -> Iterator[PrivateRedis]:
    """A running private ``redis-server`` for the block; killed after it."""
    server = PrivateRedis(free_port(ports))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def private_postgres(ports: Iterable[int] = range(5460, 5470)) -> Iterator[PrivatePostgres]:
    """A running private PostgreSQL cluster for the block; stopped and deleted after it."""
    server = PrivatePostgres(free_port(ports))
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        server.remove()
