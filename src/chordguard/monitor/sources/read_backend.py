"""One result backend instance for every reader of a look, where that is safe and cheaper.

Celery gives each thread its own instance of a backend that is not thread safe, and a
``db+`` backend checks its tables (``create_all`` and a column migration, several round
trips) each time one is made: the probe and the sources, each on its own thread, would make
one each. The monitor only reads, and a ``db+`` backend opens a session per read, so one
instance serves every thread. Other backends stay Celery's per-thread instances.
"""

from __future__ import annotations

import threading
from typing import Any
from weakref import WeakKeyDictionary

from celery import Celery

from ...coordination import backend_class

_shared: WeakKeyDictionary[Celery, Any] = WeakKeyDictionary()
_lock = threading.Lock()


def read_backend(app: Celery) -> Any:
    """The app's result backend for reading results from any thread."""
    if not hasattr(backend_class(app), "ResultSession"):
        return app.backend
    with _lock:
        backend = _shared.get(app)
        if backend is None:
            backend = _shared[app] = app.backend
        return backend
