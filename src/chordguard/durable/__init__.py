"""durable_chord: a chord joined by a barrier in chordguard's own store, not by Celery.

Public: ``durable_chord``, ``DurableChord`` (the handle), ``fail_durable_chord`` (what
``chordguard revoke`` calls), ``reap``/``reap_forever``/``register_beat_task`` (the reaper),
``enable`` (connects the worker-side hooks; ``chordguard.install`` calls it).
"""

from .actions import fail_durable_chord
from .barrier import Barrier, BarrierState, Policy
from .chord import durable_chord
from .handle import DurableChord, Progress
from .hook import enable
from .lazy import LazyResults
from .reaper import ReapReport, reap, reap_forever, register_beat_task

__all__ = [
    "Barrier",
    "BarrierState",
    "DurableChord",
    "LazyResults",
    "Policy",
    "Progress",
    "ReapReport",
    "durable_chord",
    "enable",
    "fail_durable_chord",
    "reap",
    "reap_forever",
    "register_beat_task",
]
