"""Which store an app uses: its URL."""

from __future__ import annotations

import os

from celery import Celery

DEFAULT_STORE = "sqlite:///chordguard.sqlite"


def store_url(app: Celery | None = None, explicit: str | None = None) -> str:
    """The store to use: ``explicit``, else ``app.conf.chordguard_store``, else the default.

    ``CHORDGUARD_STORE`` in the environment overrides the default file.
    """
    if explicit:
        return explicit
    configured = app.conf.get("chordguard_store") if app is not None else None
    return configured or os.environ.get("CHORDGUARD_STORE") or DEFAULT_STORE


def is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))
