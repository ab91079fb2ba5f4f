"""``install(app)``: put the guard inside a Celery app (and its workers)."""

from __future__ import annotations

import functools
from typing import Any

from celery import Celery, signals

from ..config import apply_store_timeouts, resolve
from ..config import fan_in as fan_in_mode
from ..durable.hook import enable as enable_durable_hooks
from ..store import open_store
from . import journal, reaper, remote, unlock
from .body_watch import BodyWatch
from .fan_in import wrap as wrap_fan_in
from .parts import PartBuffer
from .state import ATTRIBUTE, Guard, guard_of


def install(app: Celery, store: str | None = None, deadline: float | None = None,
            fan_in: str | None = None, **settings: Any) -> Guard:
    """Guard every chord of ``app``; return the Guard (installing twice returns the first).

    ``store``: SQLAlchemy URL (``sqlite:///file``, by default ``config.DEFAULT_STORE``;
    ``postgresql+psycopg://…``) or ``redis://…``; ``deadline``: seconds each chord may take
    (``with_deadline(callback, s)`` overrides it per chord). Other settings
    (``unlock_max_interval``, ``lost_header_grace``, ``breaker_failures``, ``breaker_window``,
    ``breaker_cooldown``, ``reaper_interval``, ``flush_interval``, ``retention``) may be given
    here or as ``app.conf.chordguard_<name>``. ``fan_in="store"`` (or ``chordguard_fan_in``)
    joins every chord through chordguard's store instead of Celery's join (docs/fan-in.md).
    Call it once the app is configured; its result backend is not made here (in Django,
    ``proj/celery.py`` after ``config_from_object`` is the place) but on first use. Raises
    ConfigurationError on bad values.
    """
    existing = guard_of(app)
    if existing is not None:
        return existing
    resolved = resolve(app, store=store, deadline=deadline, **settings)
    joins = fan_in_mode(app, fan_in)
    app.conf.chordguard_store = resolved.store
    apply_store_timeouts(app)
    backing = open_store(resolved.store, resolved.retention)
    guard = Guard(app=app, settings=resolved, store=backing,
                  parts=PartBuffer(backing, resolved.flush_interval),
                  bodies=BodyWatch(app, backing, resolved.flush_interval,
                                   functools.partial(journal.body_ended, app)))
    setattr(app, ATTRIBUTE, guard)
    journal.wrap_apply_chord(guard)
    if joins == "store":
        wrap_fan_in(guard)  # outside the journal's wrapper: Celery's join only for fallbacks
    journal.connect_signals(app)
    enable_durable_hooks()  # durable_chord headers record their completion in this store
    remote.register(app)
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
        guard.bodies.flush()

    signals.worker_ready.connect(on_ready, weak=False)
    signals.worker_process_shutdown.connect(on_shutdown, weak=False)
    signals.worker_shutdown.connect(on_shutdown, weak=False)
