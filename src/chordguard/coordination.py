"""How an app's result backend joins chords, decided from what the backend is (its class).

Never from the identity of a backend method: ``chordguard.install`` wraps ``apply_chord`` on
the instance, and a Django or Sentinel backend subclasses another. The class comes from the
URL's scheme, as Celery resolves it, without building the backend (a database backend
connects when built: a guarded app must import while its database is down). One table, ``BY_CLASS``,
maps a backend class (or any base class) to the kind of coordination its chords use; a new
backend with its own join (django-celery-results' ``ChordCounter``) is one line there and one
source in ``monitor/sources``. A backend not listed joins with ``celery.chord_unlock`` unless
its class counts parts itself or refuses chords.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from celery.app.backends import by_url
from celery.backends.base import Backend, BaseKeyValueStoreBackend

from .model import ChordKind

BY_CLASS: dict[str, ChordKind] = {
    "celery.backends.redis.RedisBackend": ChordKind.REDIS,  # Sentinel's subclasses it
    "django_celery_results.backends.database.DatabaseBackend": ChordKind.DJANGO,
}
_OWN_PART_RETURN = (Backend.on_chord_part_return, BaseKeyValueStoreBackend.on_chord_part_return)


@dataclass(frozen=True)
class Join:
    """The coordination kind of a backend's chords; ``kind`` None: no source reads them,
    ``why`` says how they are joined instead."""

    backend: str  # the backend's class name
    kind: ChordKind | None
    why: str = ""


def join_of(cls: type) -> Join:
    """How chords are joined on a backend of class ``cls``."""
    name = cls.__name__
    for base in cls.__mro__:
        kind = BY_CLASS.get(f"{base.__module__}.{base.__qualname__}")
        if kind is not None:
            return Join(name, kind)
    if cls.ensure_chords_allowed is not Backend.ensure_chords_allowed:
        return Join(name, None, f"{name} does not support chords")
    if getattr(cls, "implements_incr", False):
        return Join(name, None, f"{name} counts chord parts in its own keys")
    if cls.on_chord_part_return not in _OWN_PART_RETURN:
        return Join(name, None, f"{name} joins chords its own way")
    return Join(name, ChordKind.UNLOCK)


def backend_class(app: Celery) -> type:
    """The class of the app's result backend (the built one's, else resolved from its URL as
    Celery does). Raises what Celery raises for an unknown scheme (ImportError...)."""
    if app._backend is not None:
        return type(app._backend)
    return by_url(app.backend_cls or app.conf.result_backend, app.loader)[0]


def kind_of(app: Celery) -> ChordKind | None:
    """The app's chord kind; None when no source reads them or the scheme is unknown (the
    monitor's look at the backend says why)."""
    try:
        return join_of(backend_class(app)).kind
    except Exception:  # noqa: BLE001 - reported by monitor.sources.reach
        return None
