"""Readers of Celery's real state, one module per coordination kind or place.

Each module exposes ``SOURCE``: a name, a predicate saying whether it applies to an app
(for a chord source: the app's coordination kind, ``chordguard.coordination``), what it
reads, and ``read(app, facts, holdings) -> list[Chord]``. ``holdings`` is the snapshot's one shared
look at what workers and queues hold (``holdings.Holdings``), taken only if a source asks. A
source may also fill in ``facts`` (workers, consumed queues, queued task ids) for diagnosis.
``collect.SOURCES`` lists them in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from celery import Celery

from ...coordination import kind_of
from ...model import Chord, ChordKind, ClusterFacts

if TYPE_CHECKING:
    from .holdings import Holdings

Reader = Callable[[Celery, ClusterFacts, "Holdings"], list[Chord]]


@dataclass(frozen=True)
class Source:
    """``needs``: the places it reads ("broker", "backend", "store"); a source is read only
    when each of them answered (``reach``), so a place that is down is reported once."""

    name: str
    applies: Callable[[Celery], bool]
    read: Reader
    needs: tuple[str, ...] = ()


def joined_by(kind: ChordKind) -> Callable[[Celery], bool]:
    """``applies`` for the source of one coordination kind (decided by ``coordination``)."""
    return lambda app: kind_of(app) is kind
