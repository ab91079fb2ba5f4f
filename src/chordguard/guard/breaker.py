"""A circuit breaker per callback task name, kept in the store so every worker agrees.

closed -> open after ``breaker_failures`` failures within ``breaker_window``; while open, new
chords of that callback go straight to the dead-letter queue; after ``breaker_cooldown`` one
chord is let through as a probe (half-open): its success closes the breaker, its failure
opens it again.
"""

from __future__ import annotations

import time

from ..store.records import CLOSED, HALF_OPEN, OPENED, Breaker
from .state import Guard

CACHE_SECONDS = 1.0


class _ClosedCache:
    """Names seen closed recently, so a healthy callback costs no store read per chord."""

    def __init__(self) -> None:
        self.until: dict[str, float] = {}

    def fresh(self, name: str) -> bool:
        return self.until.get(name, 0.0) > time.monotonic()

    def remember(self, name: str, closed: bool) -> None:
        if closed:
            self.until[name] = time.monotonic() + CACHE_SECONDS
        else:
            self.until.pop(name, None)


_closed = _ClosedCache()


def allow(guard: Guard, name: str) -> bool:
    """May a new chord of callback ``name`` run its callback? Takes the probe when due."""
    key = guard.store.url + "|" + name
    if _closed.fresh(key):
        return True
    current = guard.store.breaker(name)
    _closed.remember(key, current.state == CLOSED)
    if current.state == CLOSED:
        return True
    now = time.time()
    cooldown = guard.settings.breaker_cooldown
    since = current.probe_at if current.state == HALF_OPEN else current.opened_at
    if since is not None and now - since < cooldown:
        return False
    token = f"{now:.6f}"

    def take_probe(b: Breaker) -> Breaker:
        stamp = b.probe_at if b.state == HALF_OPEN else b.opened_at
        if b.state != CLOSED and (stamp is None or now - stamp >= cooldown):
            b.state, b.probe_at = HALF_OPEN, float(token)
        return b

    taken = guard.store.update_breaker(name, take_probe)
    return taken.state == CLOSED or (taken.state == HALF_OPEN and taken.probe_at == float(token))


def record(guard: Guard, name: str, succeeded: bool) -> Breaker | None:
    """Count one finished callback run; returns the breaker when it changed."""
    key = guard.store.url + "|" + name
    if succeeded and _closed.fresh(key):
        return None
    now = time.time()
    settings = guard.settings

    def change(b: Breaker) -> Breaker:
        if succeeded:
            if b.state != CLOSED:
                b.state, b.failures, b.opened_at, b.probe_at = CLOSED, [], None, None
            return b
        b.failures = [t for t in b.failures if now - t < settings.breaker_window] + [now]
        if b.state == HALF_OPEN or len(b.failures) >= settings.breaker_failures:
            b.state, b.opened_at, b.probe_at = OPENED, now, None
        return b

    updated = guard.store.update_breaker(name, change)
    _closed.remember(key, updated.state == CLOSED)
    return updated


def states(guard: Guard) -> dict[str, str]:
    """Every breaker's state by callback name (for ``status`` and ``health_check``)."""
    return {b.name: b.state for b in guard.store.breakers()}
