"""A loopback TCP proxy between workers and a store: added delay, connection resets."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterable

from tests.private_servers import free_port

_binding = threading.Lock()  # two lanes must not pick the same free port


class Proxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target``; ``delay`` seconds are added to
    every chunk in either direction; ``reset()`` drops every open connection with a RST."""

    def __init__(self, port: int, target: int, delay: float = 0.0) -> None:
        self.port, self.target, self.delay = port, target, delay
        self._listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name=f"proxy-{port}", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _abort(client)
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                if self.delay:
                    time.sleep(self.delay)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                self._forget(sock)

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            known = sock in self._sockets
            self._sockets.discard(sock)
        if known:
            _abort(sock)

    def reset(self) -> int:
        """Reset every open connection (both sides get ECONNRESET); how many were open."""
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            _abort(sock)
        return len(sockets) // 2

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):  # wakes the accept() blocked in its thread
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        self.reset()


def _abort(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer sees a reset, not an orderly end."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def start_proxy(ports: Iterable[int], target: int, delay: float = 0.0) -> Proxy:
    """A Proxy to ``target`` on the first free port of ``ports``."""
    with _binding:
        return Proxy(free_port(ports), target, delay)
