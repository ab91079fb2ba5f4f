"""The action token: read-only without one; with one, every write must present it."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from .forms import body_fields

TOKEN_HEADER = "x-chordguard-token"
TOKEN_FIELD = "token"


async def presented_token(request: Request) -> str | None:
    """The token a request carries: ``X-Chordguard-Token``, ``Authorization: Bearer``, or a
    ``token`` field of the body (form-urlencoded or JSON)."""
    if token := request.headers.get(TOKEN_HEADER):
        return token
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return credentials.strip()
    return (await body_fields(request)).get(TOKEN_FIELD)


def token_matches(expected: str | None, presented: str | None) -> bool:
    """Constant-time comparison; always False when no token was configured."""
    if not expected or presented is None:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())
