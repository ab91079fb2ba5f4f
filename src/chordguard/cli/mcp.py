"""``chordguard mcp``: the chord tools for assistants, over MCP on stdio or streamable HTTP."""

from __future__ import annotations

import os
import signal

import click

from ..errors import ConfigurationError
from . import COMMANDS, FiniteFloat, command, settings


@command(COMMANDS, name="mcp")
@click.option("--http", "port", type=click.IntRange(0, 65535), default=None, metavar="PORT",
              help="Serve streamable HTTP on PORT (0: any free port) instead of stdio.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind with --http; anything but loopback exposes the tools.")
@click.option("--token", envvar="CHORDGUARD_TOKEN", metavar="TOKEN",
              help="With --http: every request must present it (Authorization: Bearer or "
                   "X-Chordguard-Token; env CHORDGUARD_TOKEN). Required with --allow-actions "
                   "over HTTP.")
@click.option("--allow-actions", is_flag=True,
              help="Also offer revoke_chord, replay_dead_letter and drop_dead_letter (each "
                   "returns its plan unless called with confirm=true).")
@click.option("--max-hours", type=FiniteFloat(min=0), default=1.0, show_default=True,
              help="A chord idle longer than this many hours is stuck.")
def mcp_command(port: int | None, host: str, token: str | None, allow_actions: bool,
                max_hours: float) -> int:
    """Serve chord health to AI assistants over the Model Context Protocol (stdio by
    default). Needs the mcp extra: pip install 'chordguard[mcp]'."""
    try:
        from ..mcp.server import build_server, http_app
    except ImportError as exc:
        raise ConfigurationError("chordguard mcp needs the MCP SDK: pip install "
                                 f"'chordguard[mcp]' ({exc})") from exc
    if token is not None and len(token) < 8:
        raise ConfigurationError("--token must be at least 8 characters")
    if port is not None and allow_actions and not token:
        raise ConfigurationError("--allow-actions over --http needs --token (or "
                                 "CHORDGUARD_TOKEN)")
    os.environ.pop("CHORDGUARD_TOKEN", None)  # not inherited by anything we start
    server = build_server(settings().app, allow_actions=allow_actions,
                          stuck_after_hours=max_hours)
    if port is None:
        server.run("stdio")
        return 0
    import uvicorn

    from .serve import Server, listen, url_host

    with listen(host, port) as listener:
        mode = "actions allowed" if allow_actions else "read-only"
        click.echo(f"chordguard mcp: http://{url_host(host)}:{listener.getsockname()[1]}/mcp "
                   f"({mode}{', token required' if token else ''})", err=True)
        http = Server(uvicorn.Config(http_app(server, host, token), log_level="warning",
                                        access_log=False, server_header=False))
        http.run(sockets=[listener])
    if signal.SIGINT in http.signals:  # Ctrl-C exits 130, as serve does
        raise KeyboardInterrupt
    return 0
