"""Finding the user's Celery app (``-A proj``) or building one from URLs, set to fail fast."""

from __future__ import annotations

import importlib
import os
import sys

from celery import Celery
from celery.app.utils import find_app
from celery.fixups.django import DjangoFixup

from ..errors import ConfigurationError

CONNECT_TIMEOUT = 3.0


def load_app(app_path: str | None = None, broker: str | None = None,
             backend: str | None = None) -> Celery:
    """Return the app named by ``app_path`` (as ``celery -A``) or one built from URLs.

    ``broker``/``backend`` override the app's own URLs. Raises ConfigurationError when the
    app cannot be imported or nothing says where the broker is.
    """
    if app_path:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        app = _find_app(app_path)
        set_up_framework(app)
    else:
        broker = broker or os.environ.get("CELERY_BROKER_URL")
        backend = backend or os.environ.get("CELERY_RESULT_BACKEND")
        if not broker:
            raise ConfigurationError("no app: give -A/--app, or --broker (and --backend)")
        app = Celery("chordguard-monitor")
    if broker:
        app.conf.broker_url = broker
    if backend:
        app.conf.result_backend = backend
    fail_fast(app)
    return app


def _find_app(app_path: str) -> Celery:
    """``find_app`` with errors that say what to type instead."""
    if "/" in app_path or app_path.endswith(".py"):
        module = app_path.removesuffix(".py").strip("./").replace("/", ".")
        raise ConfigurationError(f"-A takes a module path, not a file: try -A {module}")
    module, _, attribute = app_path.partition(":")
    try:
        if attribute:
            found = getattr(importlib.import_module(module), attribute, None)
            if found is None:
                raise ConfigurationError(f"module {module!r} has no attribute {attribute!r}: "
                                         f"try -A {module} (Celery finds its app)")
        return find_app(app_path)
    except ConfigurationError:
        raise
    except ModuleNotFoundError as exc:
        raise ConfigurationError(f"cannot load Celery app {app_path!r}: {exc} (run from the "
                                 "directory that holds it, or set PYTHONPATH)") from exc
    except Exception as exc:  # errors raised by the user's module itself
        raise ConfigurationError(f"cannot load Celery app {app_path!r}: "
                                 f"{type(exc).__name__}: {exc}") from exc


def set_up_framework(app: Celery) -> None:
    """Set up the app's framework as ``celery -A proj worker`` does before anything touches
    its backend: with Celery's Django fixup (``DJANGO_SETTINGS_MODULE`` set when the app was
    made), importing the default modules runs ``django.setup()`` (the ``django-db`` backend
    and the guard's journal read Django models). Any other app is left as it is."""
    if not any(isinstance(fixup, DjangoFixup) for fixup in app._fixups or ()):
        return
    try:
        app.loader.import_default_modules()
    except Exception as exc:  # the user's settings or modules failed: say so, plainly
        raise ConfigurationError(f"cannot set up Django for app {app.main!r}: "
                                 f"{type(exc).__name__}: {exc}") from exc


def fail_fast(app: Celery, timeout: float = CONNECT_TIMEOUT) -> None:
    """Bound every connection attempt the monitor makes so nothing hangs."""
    conf = app.conf
    conf.broker_connection_timeout = timeout
    conf.broker_connection_retry = False
    conf.broker_connection_retry_on_startup = False
    conf.broker_connection_max_retries = 1
    conf.redis_socket_connect_timeout = timeout
    conf.redis_socket_timeout = max(timeout, 5.0)
    conf.redis_retry_on_timeout = False
    conf.result_backend_always_retry = False
    transport = dict(conf.broker_transport_options or {})
    transport.setdefault("max_retries", 1)
    transport.setdefault("socket_connect_timeout", timeout)
    transport.setdefault("socket_timeout", max(timeout, 5.0))
    conf.broker_transport_options = transport
    engine = dict(conf.database_engine_options or {})
    backend = str(conf.result_backend or "")
    if "postgresql" in backend or "mysql" in backend:
        connect_args = dict(engine.get("connect_args") or {})
        connect_args.setdefault("connect_timeout", int(timeout))
        engine["connect_args"] = connect_args
    engine.setdefault("pool_pre_ping", True)
    conf.database_engine_options = engine
