"""Periodic chord checks run by ``celery beat``: log each problem once, export the figures,
fail chords stuck too long when asked.

``setup_periodic_monitoring(app, ...)`` registers the task ``chordguard.periodic_check`` on
the app and its entry in ``app.conf.beat_schedule``. Each run takes a snapshot and:

- logs every blocking diagnosis of every stuck chord once, at WARNING on the
  ``chordguard.periodic`` logger — not on every run. What was logged is remembered in the
  guard's store when ``chordguard_store`` is configured (so every worker process agrees),
  otherwise in this process's memory (at most ``MEMORY_LIMIT`` keys);
- feeds the snapshot to a ``ChordTracker`` and keeps the ``Figures`` (plus dead letters and
  circuit breakers when the guard's store is configured) for ``registry``
  (a Prometheus registry to expose in the worker) and, when ``textfile`` is given, writes them
  in the Prometheus text format for node_exporter's textfile collector;
- fails (``actions.fail_chord``) every stuck chord idle longer than ``auto_fail_after``,
  once each, when that is set.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import OrderedDict
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Celery

from ..actions import fail_chord
from ..config import configured_store
from ..errors import ChordguardError, ConfigurationError
from ..monitor.api import health_from
from ..monitor.collect import collect
from ..monitor.metrics import exposition, make_registry
from ..monitor.store_view import store_view
from ..monitor.tracker import ChordTracker, Figures
from ..monitor.triage import reason, triage
from ..store import open_store

log = logging.getLogger("chordguard.periodic")

TASK_NAME = "chordguard.periodic_check"
MEMORY_LIMIT = 100_000
Seconds = float | timedelta


def _seconds(value: Seconds | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class PeriodicMonitor:
    """The state one process keeps between periodic checks. ``check()`` runs one."""

    def __init__(self, app: Celery, stuck_after: float, auto_fail_after: float | None,
                 textfile: str | None = None) -> None:
        self.app, self.stuck_after, self.auto_fail_after = app, stuck_after, auto_fail_after
        self.textfile = textfile
        self.tracker = ChordTracker(app)
        self.figures: Figures | None = None
        self.store_view = store_view(app)
        self.registry = make_registry(lambda: self.figures, self.store_view.figures)
        self._remembered: OrderedDict[str, None] = OrderedDict()

    def check(self) -> dict[str, Any]:
        """One check: returns the health figures, what was logged and what was failed."""
        snapshot = collect(self.app, stuck_after_hours=self.stuck_after / 3600)
        self.figures = self.tracker.observe(snapshot)
        try:
            self.store_view.refresh()
        except Exception as exc:  # the store is optional for figures: say so once
            if self._remember(f"store-figures:{type(exc).__name__}"):
                log.error("cannot read dead letters and breakers from the store: %s", exc)
        if self.textfile:
            self._write_textfile()
        split = triage(snapshot, self.auto_fail_after)
        logged = []
        for chord in split.stuck:
            for diagnosis in chord.diagnoses:
                if self._first_time(f"logged:{chord.id}:{diagnosis.code}"):
                    log.warning("chord %s (%s, callback %s) %s: %s. Next: %s", chord.id,
                                chord.kind.value, chord.callback_name or "?", diagnosis.code,
                                diagnosis.summary, diagnosis.next_step)
                    logged.append({"chord_id": chord.id, "code": diagnosis.code})
        for report in snapshot.sources:
            if not report.ok and self._first_time(f"source:{report.name}:{report.detail}"):
                log.warning("source %s did not answer: %s", report.name, report.detail)
        failed = []
        for chord in split.fail:
            if not self._first_time(f"failed:{chord.id}"):
                continue
            why = reason(chord, "chordguard periodic check")
            try:
                fail_chord(self.app, chord, why)
            except ChordguardError as exc:
                log.error("could not fail chord %s: %s", chord.id, exc)
                continue
            log.warning("failed chord %s: %s", chord.id, why)
            failed.append(chord.id)
        return {**health_from(snapshot), "logged": logged, "failed": failed}

    def _first_time(self, key: str) -> bool:
        """True the first time ``key`` is seen by any process sharing the store."""
        if configured_store(self.app):
            try:
                store = open_store(configured_store(self.app))
                return store.claim(f"chordguard:periodic:{key}", os.uname().nodename) is None
            except Exception as exc:  # store down: fall back to memory, say so once
                if self._remember("store-down"):
                    log.error("chordguard store unavailable, remembering in memory: %s", exc)
        return self._remember(key)

    def _remember(self, key: str) -> bool:
        if key in self._remembered:
            return False
        self._remembered[key] = None
        while len(self._remembered) > MEMORY_LIMIT:
            self._remembered.popitem(last=False)
        return True

    def _write_textfile(self) -> None:
        """Replace ``textfile`` atomically, so a collector never reads half a file."""
        target = Path(self.textfile)
        handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(handle, "wb") as out:
            out.write(exposition(self.registry))
        os.replace(tmp, target)


def setup_periodic_monitoring(app: Celery, every: Seconds = 300.0,
                              stuck_after: Seconds = 3600.0,
                              auto_fail_after: Seconds | None = None,
                              textfile: str | None = None) -> PeriodicMonitor:
    """Register ``chordguard.periodic_check`` on ``app`` and schedule it every ``every``.

    Durations are seconds or timedeltas. ``stuck_after``: a chord idle this long is stuck.
    ``auto_fail_after``: fail stuck chords idle this long (None: never). ``textfile``: also
    write the Prometheus figures there after each run. Returns the monitor, whose
    ``registry`` can be served by ``prometheus_client.start_http_server(port, registry=...)``.
    Raises ConfigurationError when ``auto_fail_after`` is shorter than ``stuck_after``.
    """
    interval, stuck = _seconds(every), _seconds(stuck_after)
    fail = _seconds(auto_fail_after)
    if fail is not None and fail < stuck:
        raise ConfigurationError("auto_fail_after must not be shorter than stuck_after")
    monitor = PeriodicMonitor(app, stuck, fail, textfile)

    @app.task(name=TASK_NAME, shared=False, ignore_result=True)
    def periodic_check() -> dict[str, Any]:
        return monitor.check()

    schedule = dict(app.conf.beat_schedule or {})
    schedule[TASK_NAME] = {"task": TASK_NAME, "schedule": interval,
                           "options": {"expires": interval}}
    app.conf.beat_schedule = schedule
    return monitor
