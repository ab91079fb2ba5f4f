"""Changing every result backend instance an app makes, lazily.

``app.backend`` is one instance per thread unless the backend is thread safe, so the app's
backend factory is wrapped as well as the instance already made, if any. Nothing here makes
a backend: under Django its module imports models, which must wait for ``django.setup()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery


def on_every_backend(app: Celery, change: Callable[[Any], None]) -> None:
    """Apply ``change`` to each backend instance ``app`` makes from now on, and to the one
    it has already made."""
    make_backend = app._get_backend

    def get_backend() -> Any:
        backend = make_backend()
        change(backend)
        return backend

    app._get_backend = get_backend
    if app._backend is not None:
        change(app._backend)
