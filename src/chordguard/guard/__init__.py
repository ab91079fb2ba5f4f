"""The guard: what ``install(app)`` puts inside a Celery app.

Journal (``journal``, ``celery_failed``), bounded ``celery.chord_unlock`` (``unlock``),
lost-header detection (``presence``), the deadline reaper (``reaper``), task patterns
(``tasks``), circuit breakers (``breaker``) and how a chord is ended and dead-lettered
(``ending``).
"""

from .install import install
from .journal import with_deadline
from .state import Guard, guard_of
from .tasks import chord_callback, header_task, split_results

__all__ = ["Guard", "chord_callback", "guard_of", "header_task", "install", "split_results",
           "with_deadline"]
