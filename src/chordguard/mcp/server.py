"""The MCP server: ``Tools`` registered with the official SDK, on stdio or streamable HTTP.

Read-only tools always; acting tools only when ``allow_actions``. Over HTTP the server binds
loopback unless told otherwise, accepts only loopback ``Host`` headers on a loopback bind, and
with a token refuses every request that does not present it (``Authorization: Bearer`` or
``X-Chordguard-Token``, compared in constant time).
"""

from __future__ import annotations

import functools
from typing import Any

from celery import Celery
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from starlette.requests import Request
from starlette.responses import JSONResponse

from .._urls import mask_text
from .._version import VERSION
from ..errors import ChordguardError
from ..web.auth import token_matches
from .tools import Tools

READ_ONLY = ("health", "chords", "chord", "diagnoses", "doctor", "dead_letters", "dead_letter")
ACTING = ("revoke_chord", "replay_dead_letter", "drop_dead_letter")
INSTRUCTIONS = (
    "chordguard sees Celery chords (a group of tasks plus one callback) as units. Start with "
    "`health` (healthy / unhealthy / unknown and why), list chords with `chords` (filter by "
    "state=blocked to find stuck ones), read one with `chord` (each diagnosis has evidence "
    "and a next step), `diagnoses` explains every code. Acting tools, when enabled, return a "
    "plan unless confirm=true.")


def build_server(app: Celery, allow_actions: bool = False, stuck_after_hours: float = 1.0,
                 ) -> MCPServer:
    """An MCP server over ``app``'s chords; acting tools only with ``allow_actions``."""
    tools = Tools(app, stuck_after_hours=stuck_after_hours)
    server = MCPServer("chordguard", version=VERSION, instructions=INSTRUCTIONS,
                       log_level="WARNING")
    for name in READ_ONLY + (ACTING if allow_actions else ()):
        method = getattr(tools, name)
        server.add_tool(_one_line_errors(method), name=name,
                        description=" ".join((method.__doc__ or "").split()),
                        annotations=ToolAnnotations(read_only_hint=name in READ_ONLY,
                                                    destructive_hint=name in ACTING))
    return server


def _one_line_errors(method: Any) -> Any:
    """``method`` with chordguard's errors turned into a one-line ToolError (URLs masked)."""
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except ChordguardError as exc:
            raise ToolError(mask_text(str(exc)).splitlines()[0] if str(exc) else
                            type(exc).__name__) from exc

    return call


def http_app(server: MCPServer, host: str, token: str | None) -> Any:
    """The streamable-HTTP ASGI app at ``/mcp``, behind the token when one is given."""
    loopback = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=host in ("127.0.0.1", "localhost", "::1"),
        allowed_hosts=loopback, allowed_origins=[f"http://{h}" for h in loopback])
    inner = server.streamable_http_app(transport_security=security, host=host)
    if not token:
        return inner

    async def guarded(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            presented = request.headers.get("x-chordguard-token") or \
                request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not token_matches(token, presented):
                await JSONResponse({"error": "missing or wrong token"}, status_code=401)(
                    scope, receive, send)
                return
        await inner(scope, receive, send)

    return guarded
