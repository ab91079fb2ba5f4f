"""Masking secrets in URLs before anything prints them."""

import re

from kombu.utils.url import maybe_sanitize_url

# Bounded parts and a scheme that must start a word: one pass over any text, however long.
_USERINFO = re.compile(r"(?<![a-z0-9+.\-])(?P<scheme>[a-z][a-z0-9+.\-]{0,31}://)"
                       r"(?P<user>[^:@/\s]{0,256}):(?P<pw>[^@/\s]+)@", re.IGNORECASE)


def mask_url(url: str | None) -> str:
    """``redis://:secret@host/0`` -> ``redis://:**@host/0``; ``None`` -> ``""``. Each part
    of a ``;``-separated list (``sentinel://…;sentinel://…``) is masked on its own."""
    if not url:
        return ""
    return ";".join(_USERINFO.sub(r"\g<scheme>\g<user>:**@", maybe_sanitize_url(part))
                    for part in url.split(";"))


def mask_text(text: str) -> str:
    """Mask every URL password found in free text (error messages, tracebacks)."""
    return _USERINFO.sub(r"\g<scheme>\g<user>:**@", text)
