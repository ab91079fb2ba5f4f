"""The fields of a POST body: ``application/x-www-form-urlencoded`` or a JSON object."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from starlette.requests import Request

MAX_BODY = 64 * 1024


async def body_fields(request: Request) -> dict[str, str]:
    """String fields of the body (parsed once per request); empty for other content types or
    malformed bodies, and for bodies over ``MAX_BODY`` bytes."""
    cached = getattr(request.state, "fields", None)
    if cached is not None:
        return cached
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields: dict[str, str] = {}
    if content_type in ("application/x-www-form-urlencoded", "application/json"):
        body = await request.body()
        if len(body) <= MAX_BODY:
            fields = _parse(content_type, body)
    request.state.fields = fields
    return fields


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
