"""The fields of a POST body: ``application/x-www-form-urlencoded`` or a JSON object."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from starlette.requests import Request

MAX_BODY = 64 * 1024


class BodyTooLarge(Exception):
    """A POST body over ``MAX_BODY`` bytes: refused (413) before it is read whole."""


async def body_fields(request: Request) -> dict[str, str]:
    """String fields of the body (parsed once per request); empty for other content types or
    malformed bodies. Raises BodyTooLarge past ``MAX_BODY`` bytes, by its Content-Length or
    while it streams in (never more than ``MAX_BODY`` bytes are held)."""
    cached = getattr(request.state, "fields", None)
    if cached is not None:
        return cached
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields: dict[str, str] = {}
    if content_type in ("application/x-www-form-urlencoded", "application/json"):
        fields = _parse(content_type, await _capped_body(request))
    request.state.fields = fields
    return fields


async def _capped_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise BodyTooLarge(f"body of {declared} bytes; at most {MAX_BODY}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BodyTooLarge(f"body over {MAX_BODY} bytes")
    return bytes(body)


def _parse(content_type: str, body: bytes) -> dict[str, str]:
    text = body.decode("utf-8", errors="replace")
    if content_type == "application/json":
        try:
            document = json.loads(text)
        except ValueError:
            return {}
        return {k: v for k, v in document.items() if isinstance(v, str)} \
            if isinstance(document, dict) else {}
    return dict(parse_qsl(text, keep_blank_values=True))
