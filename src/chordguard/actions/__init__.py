"""The WRITE side for operators: fail a chord (one implementation), purge coordination
messages, replay or drop dead letters. Used by the guard, durable chords, the CLI and the
dashboard; never by the monitor."""

from .callback import OperatorFail, fail_callback
from .fail import FailPlan, fail_chord, plan_fail
from .purge import PurgeReport, purge_coordination
from .queued import broker_kind, remove_queued

__all__ = ["FailPlan", "OperatorFail", "PurgeReport", "broker_kind", "fail_callback", "fail_chord",
           "plan_fail", "purge_coordination", "remove_queued"]
