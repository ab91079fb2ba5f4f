"""Which coordination kind an app's chords use is decided by what its backend is, never by
a method the guard wraps, and without building (connecting) the backend."""

from __future__ import annotations

import pytest
from celery import Celery

import chordguard
from chordguard.coordination import backend_class, join_of, kind_of
from chordguard.model import ChordKind

UNREACHABLE_DB = "db+postgresql+psycopg://postgres@127.0.0.1:1/test"


@pytest.mark.parametrize(("url", "kind", "why"), [
    ("redis://127.0.0.1:1/0", ChordKind.REDIS, ""),
    ("sentinel://127.0.0.1:1/0", ChordKind.REDIS, ""),
    ("db+sqlite:///x.db", ChordKind.UNLOCK, ""),
    ("mongodb://127.0.0.1:1/", ChordKind.UNLOCK, ""),
    ("cache+memcached://127.0.0.1:1/", None, "CacheBackend counts chord parts in its own keys"),
    ("rpc://", None, "RPCBackend does not support chords"),
    (None, None, "DisabledBackend does not support chords"),
])
def test_the_kind_follows_the_backend_class(url, kind, why):
    app = Celery("k", backend=url)
    assert kind_of(app) is kind
    assert join_of(backend_class(app)).why == why


def test_a_guarded_database_app_still_joins_by_unlock(tmp_path):
    """install() wraps apply_chord on the backend instance; the kind stays unlock, and
    neither install nor the decision connects to the (unreachable) database."""
    app = Celery("g", broker="memory://", backend=UNREACHABLE_DB)
    guard = chordguard.install(app, store=f"sqlite:///{tmp_path / 'store.db'}")
    assert guard.kind is ChordKind.UNLOCK and app._backend is None
    assert kind_of(app) is ChordKind.UNLOCK
    built = Celery("b", broker="memory://", backend=f"db+sqlite:///{tmp_path / 'r.db'}")
    chordguard.install(built, store=f"sqlite:///{tmp_path / 'store.db'}")
    wrapped = built.backend.apply_chord
    assert getattr(wrapped, "__func__", None) is not type(built.backend).apply_chord
    assert kind_of(built) is ChordKind.UNLOCK


def test_an_unknown_scheme_is_no_kind():
    assert kind_of(Celery("u", backend="reddis://127.0.0.1:6379/0")) is None
