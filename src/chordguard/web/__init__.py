"""``chordguard serve``: the dashboard, ``/metrics`` and ``/healthz`` in one ASGI app."""

from .app import create_app

__all__ = ["create_app"]
