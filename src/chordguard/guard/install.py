"""``install(app)``: put the guard inside a Celery app (and its workers)."""

from __future__ import annotations

from typing import Any

from celery import Celery, signals
from celery.backends.redis import RedisBackend

from ..config import apply_store_timeouts, resolve
from ..durable.hook import enable as enable_durable_hooks
from ..model import ChordKind
from ..store import open_store
from . import journal, reaper, unlock
from .parts import PartBuffer
from .state import ATTRIBUTE, Guard, guard_of


def install(app: Celery, store: str | None = None, deadline: float | None = None,
            **settings: Any) -> Guard:
    """Guard every chord of ``app``; return the Guard (installing twice returns the first).

    ``store``: SQLAlchemy URL (``sqlite:///file``, the default ``sqlite:///chordguard.sqlite``;
    ``postgresql+psycopg://…``) or ``redis://…``; ``deadline``: seconds each chord may take
    (``with_deadline(callback, s)`` overrides it per chord). Other settings
    (``unlock_max_interval``, ``lost_header_grace``, ``breaker_failures``, ``breaker_window``,
    ``breaker_cooldown``, ``reaper_interval``, ``flush_interval``, ``retention``) may be given
    here or as ``app.conf.chordguard_<name>``. Call it once the app is configured (its
    result backend is read here). Raises ConfigurationError on bad values.
    """
    existing = guard_of(app)
    if existing is not None:
        return existing
    resolved = resolve(app, store=store, deadline=deadline, **settings)
    app.conf.chordguard_store = resolved.store
    apply_store_timeouts(app)
    backing = open_store(resolved.store, resolved.retention)
    kind = ChordKind.REDIS if isinstance(app.backend, RedisBackend) else ChordKind.UNLOCK
    guard = Guard(app=app, settings=resolved, store=backing,
                  parts=PartBuffer(backing, resolved.flush_interval), kind=kind)
    setattr(app, ATTRIBUTE, guard)
    journal.wrap_apply_chord(guard)
    journal.connect_signals(app)
    enable_durable_hooks()  # durable_chord headers record their completion in this store
    if app.finalized:
        unlock.register(app)
    else:
        app.on_after_finalize.connect(lambda sender, **_: unlock.register(sender), weak=False)
    _connect_worker(guard)
    return guard


def _connect_worker(guard: Guard) -> None:
    app = guard.app

    def on_ready(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            reaper.start(guard)

    def on_shutdown(**_: Any) -> None:
        guard.parts.flush()

    signals.worker_ready.connect(on_ready, weak=False)
    signals.worker_process_shutdown.connect(on_shutdown, weak=False)
    signals.worker_shutdown.connect(on_shutdown, weak=False)
