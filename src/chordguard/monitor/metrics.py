"""Prometheus figures for chords: a custom collector over the latest ``Figures``.

Nothing is mutated per request: each scrape renders the figures of the latest snapshot (and
the tracker's running totals). Labels are bounded sets only — kind, diagnosis code,
callback task name, source name, outcome — never a chord or task id.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.registry import Collector

from ..model import ChordKind, Snapshot
from .api import HEALTHY, UNHEALTHY, UNKNOWN, verdict
from .tracker import DURATION_BUCKETS, Figures

PREFIX = "chordguard"
BREAKER_STATES = ("closed", "half_open", "open")


@dataclass(frozen=True)
class StoreFigures:
    """What the guard's store says, when one is configured: dead letters and breakers."""

    dead_letters: int | None = None
    breakers: dict[str, str] = field(default_factory=dict)  # callback name -> state


class ChordCollector(Collector):
    """Renders ``figures()`` (None before the first snapshot) as metric families."""

    def __init__(self, figures: Callable[[], Figures | None],
                 store: Callable[[], StoreFigures] = StoreFigures) -> None:
        self._figures = figures
        self._store = store
        self._built: list[tuple[weakref.ref[Snapshot], list[Metric]]] = []  # latest two

    def describe(self) -> list[Metric]:
        return []  # families are built per scrape; nothing to pre-register

    def collect(self) -> Iterator[Metric]:
        figures = self._figures()
        yield from self.snapshot_families(figures)
        yield from _tracker_families(figures)
        yield from _store_families(self._store())

    def snapshot_families(self, figures: Figures | None) -> list[Metric]:
        """The families of ``figures``' snapshot, built once per snapshot (they walk every
        chord), not per scrape; call it where snapshots are made to keep scrapes cheap. The
        previous snapshot's are kept too, for scrapes until the new one is published."""
        if figures is None:
            return list(_snapshot_families(None))
        built = self._built
        for snapshot, families in built:
            if snapshot() is figures.snapshot:
                return families
        families = list(_snapshot_families(figures))
        self._built = [*built[-1:], (weakref.ref(figures.snapshot), families)]
        return families


def _snapshot_families(figures: Figures | None) -> Iterator[Metric]:
    in_flight = GaugeMetricFamily(f"{PREFIX}_chords_in_flight",
                                  "Chords whose callback has not been published yet.",
                                  labels=["kind"])
    stuck = GaugeMetricFamily(f"{PREFIX}_chords_stuck",
                              "In-flight chords with a blocking diagnosis (they will not finish "
                              "by themselves).", labels=["kind"])
    idle = GaugeMetricFamily(f"{PREFIX}_chord_idle_seconds_max",
                             "Longest time an in-flight chord has gone without a finished part "
                             "(its age when idle is unknown; may be a lower bound).",
                             labels=["kind"])
    diagnoses = GaugeMetricFamily(f"{PREFIX}_chord_diagnoses",
                                  "In-flight chords carrying each diagnosis code.",
                                  labels=["code"])
    duplicates = GaugeMetricFamily(f"{PREFIX}_unlock_duplicate_chains",
                                   "Live chord_unlock chains beyond the first (confirmed by two "
                                   "observations), summed over chords.")
    interval = GaugeMetricFamily(f"{PREFIX}_unlock_retry_interval_seconds",
                                 "result_chord_retry_interval: the normal time between polls.")
    sources = GaugeMetricFamily(f"{PREFIX}_source_up",
                                "1 when the source answered the last snapshot, else 0.",
                                labels=["source"])
    taken = GaugeMetricFamily(f"{PREFIX}_snapshot_timestamp_seconds",
                              "When the last snapshot was taken (Unix time).")
    info = InfoMetricFamily(f"{PREFIX}_celery", "The Celery version chordguard runs with.")
    health = StateSetMetricFamily(f"{PREFIX}_health",
                                  "The monitor's verdict, as /healthz and `check` give it: "
                                  "unknown when it could not see enough.")
    status = verdict(figures.snapshot)[0] if figures is not None else UNKNOWN
    health.add_metric([], {state: state == status for state in (HEALTHY, UNHEALTHY, UNKNOWN)})
    if figures is not None:
        snapshot = figures.snapshot
        kinds = Counter(c.kind.value for c in snapshot.chords)
        blocked = Counter(c.kind.value for c in snapshot.chords if c.blocking)
        longest: dict[str, float] = {}
        for chord in snapshot.chords:
            span = chord.idle or chord.age
            if span is not None:
                longest[chord.kind.value] = max(longest.get(chord.kind.value, 0.0), span.seconds)
        for kind in ChordKind:
            in_flight.add_metric([kind.value], kinds[kind.value])
            stuck.add_metric([kind.value], blocked[kind.value])
            idle.add_metric([kind.value], longest.get(kind.value, 0.0))
        for code, count in sorted(Counter(d for c in snapshot.chords for d in c.codes).items()):
            diagnoses.add_metric([code], count)
        duplicates.add_metric([], sum(max(0, (c.unlock_chains or 0) - 1) for c in snapshot.chords))
        interval.add_metric([], snapshot.facts.retry_interval)
        for report in snapshot.sources:
            sources.add_metric([report.name], 1.0 if report.ok else 0.0)
        taken.add_metric([], snapshot.taken_at.timestamp())
        info.add_metric([], {"version": snapshot.celery_version})
    yield from (in_flight, stuck, idle, diagnoses, duplicates, interval, sources, taken, info,
                health)


def _tracker_families(figures: Figures | None) -> Iterator[Metric]:
    polls = CounterMetricFamily(f"{PREFIX}_unlock_polls",
                                "celery.chord_unlock polls observed since chordguard started.")
    rate = GaugeMetricFamily(f"{PREFIX}_unlock_polls_per_interval_max",
                             "Highest unlock poll rate of any chord, in polls per retry "
                             "interval (a lower bound; above 1 means duplicate chains).")
    completed = CounterMetricFamily(f"{PREFIX}_chords_completed",
                                    "Chords seen to finish, by callback and outcome.",
                                    labels=["callback", "outcome"])
    failures = CounterMetricFamily(f"{PREFIX}_callback_failures",
                                   "Chords whose callback ended FAILURE or REVOKED.",
                                   labels=["callback"])
    durations = HistogramMetricFamily(f"{PREFIX}_chord_duration_seconds",
                                      "Time from a chord's creation to its callback's end "
                                      "(from first sight when the creation time is unknown).",
                                      labels=["callback"])
    if figures is not None:
        polls.add_metric([], figures.unlock_polls_total)
        rate.add_metric([], figures.max_polls_per_interval)
        for (callback, outcome), count in sorted(figures.completed.items()):
            completed.add_metric([callback, outcome], count)
        for callback, count in sorted(figures.callback_failures.items()):
            failures.add_metric([callback], count)
        for callback, hist in sorted(figures.durations.items()):
            bounds = [*(f"{b:g}" for b in DURATION_BUCKETS), "+Inf"]
            durations.add_metric([callback], list(zip(bounds, hist.buckets, strict=True)),
                                 hist.total)
    yield from (polls, rate, completed, failures, durations)


def _store_families(store: StoreFigures) -> Iterator[Metric]:
    dead = GaugeMetricFamily(f"{PREFIX}_dead_letters",
                             "Chords waiting in the dead-letter queue (absent without a store).")
    breakers = StateSetMetricFamily(f"{PREFIX}_circuit_breaker_state",
                                    "Circuit-breaker state per callback task.",
                                    labels=["callback"])
    if store.dead_letters is not None:
        dead.add_metric([], store.dead_letters)
    for callback, state in sorted(store.breakers.items()):
        breakers.add_metric([callback], {s: s == state for s in BREAKER_STATES})
    yield from (dead, breakers)


def make_registry(figures: Callable[[], Figures | None],
                  store: Callable[[], StoreFigures] = StoreFigures) -> CollectorRegistry:
    """A registry holding only chordguard's collector (no process or GC metrics)."""
    return registry_for(ChordCollector(figures, store))


def registry_for(collector: ChordCollector) -> CollectorRegistry:
    """A registry holding only ``collector``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format for ``registry``."""
    return generate_latest(registry)
