"""``chordguard serve``: dashboard, /metrics and /healthz over HTTP."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
from types import FrameType

import click
import uvicorn

from ..errors import ConfigurationError
from . import COMMANDS, FiniteFloat, command, settings

DEFAULT_PORT = 8765


@command(COMMANDS, name="serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback exposes the dashboard.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--token", envvar="CHORDGUARD_TOKEN", metavar="TOKEN",
              help="Allow actions to requests presenting this token (env CHORDGUARD_TOKEN). "
                   "Without it the dashboard is read-only.")
@click.option("--max-hours", type=FiniteFloat(min=0), default=1.0, show_default=True,
              help="A chord idle longer than this many hours is stuck (/healthz turns 503).")
@click.option("--refresh", type=FiniteFloat(min=1), default=15.0, show_default=True,
              help="Seconds between background snapshots when nobody is looking.")
@click.option("--cache", "cache_seconds", type=FiniteFloat(min=0), default=2.0,
              show_default=True, help="Seconds a snapshot is shared between requests (at "
              "least as long as its collection took).")
@click.option("--source-timeout", type=FiniteFloat(min=1), default=30.0, show_default=True,
              help="Seconds each source of a snapshot may take (100,000 Redis chords take "
                   "several); one that does not answer in time is reported down, health "
                   "unknown.")
def serve(host: str, port: int, token: str | None, max_hours: float, refresh: float,
          cache_seconds: float, source_timeout: float) -> int:
    """Serve the chord dashboard, /metrics (Prometheus) and /healthz (503 when unhealthy)."""
    from ..web import create_app

    if token is not None and len(token) < 8:
        raise ConfigurationError("--token must be at least 8 characters")
    with listen(host, port) as sock:
        web = create_app(settings().app, token=token or None, stuck_after_hours=max_hours,
                         refresh_interval=refresh, cache_seconds=cache_seconds,
                         trusted_hosts=_trusted_hosts(host), collect_timeout=source_timeout)
        mode = "actions allowed with the token" if token else "read-only"
        bound = sock.getsockname()[1]
        click.echo(f"chordguard serve: http://{url_host(host)}:{bound}/ ({mode})", err=True)
        os.environ.pop("CHORDGUARD_TOKEN", None)  # not inherited by anything we start
        server = Server(uvicorn.Config(web, log_level="warning", access_log=False,
                                        server_header=False))
        server.run(sockets=[sock])  # Ctrl-C: KeyboardInterrupt once uvicorn has shut down
    if signal.SIGINT in server.signals:  # ... unless SIGINT was ignored when we started
        raise KeyboardInterrupt
    return 0


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is printed (``port`` 0: any free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {url_host(host)}:{port}: "
                                 f"{os.strerror(exc.errno) if exc.errno else exc}") from None


class Server(uvicorn.Server):
    """uvicorn's server, remembering the signals that stopped it."""

    signals: frozenset[int] = frozenset()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.signals = self.signals | {sig}
        super().handle_exit(sig, frame)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _trusted_hosts(host: str) -> list[str] | None:
    """Loopback binds accept only loopback Host headers (no DNS rebinding); others any."""
    return ["127.0.0.1", "localhost", "[::1]"] if _is_loopback(host) else None


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
