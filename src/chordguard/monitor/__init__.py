"""The READ side: what Celery's chords look like right now, and what is wrong with them.

``sources/`` read Celery's state per coordination kind (and the guard's journal, durable
barriers); ``collect`` reads them side by side into one ``Snapshot``; ``diagnose`` names each
pathology; ``triage`` and ``doctor`` turn findings into advice; ``tracker`` and ``events``
follow chords over time; ``metrics`` renders figures; ``store_view`` reads the guard's store
for the dashboard; ``api`` is the Python API. Nothing here writes to Celery or the store.
"""

from .api import (
    HEALTHY,
    UNHEALTHY,
    UNKNOWN,
    check_stuck_chords,
    find_chord,
    get_active_chord_unlocks,
    health_check,
    health_from,
    stuck_chords,
    verdict,
)
from .collect import collect

__all__ = [
    "HEALTHY",
    "UNHEALTHY",
    "UNKNOWN",
    "check_stuck_chords",
    "collect",
    "find_chord",
    "get_active_chord_unlocks",
    "health_check",
    "health_from",
    "stuck_chords",
    "verdict",
]
