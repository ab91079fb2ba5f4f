"""Readers of Celery's real state, one module per coordination kind or place.

Each module exposes ``SOURCE``: a name, a predicate saying whether it applies to an app,
and ``read(app, facts, holdings) -> list[Chord]``. ``holdings`` is the snapshot's one shared
look at what workers and queues hold (``holdings.Holdings``), taken only if a source asks. A
source may also fill in ``facts`` (workers, consumed queues, queued task ids) for diagnosis.
``collect.SOURCES`` lists them in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from celery import Celery

from ...model import Chord, ClusterFacts

if TYPE_CHECKING:
    from .holdings import Holdings

Reader = Callable[[Celery, ClusterFacts, "Holdings"], list[Chord]]


@dataclass(frozen=True)
class Source:
    name: str
    applies: Callable[[Celery], bool]
    read: Reader


def backend_url(app: Celery) -> str:
    return str(app.conf.result_backend or "")


def broker_url(app: Celery) -> str:
    return str(app.conf.broker_url or "")


def uses_redis_backend(app: Celery) -> bool:
    """Celery's Redis result backend: one server, a socket, or a master found through
    Sentinel (``sentinel://``, a subclass of the same backend, same keys)."""
    return backend_url(app).startswith(("redis://", "rediss://", "redis+socket://",
                                        "sentinel://"))
