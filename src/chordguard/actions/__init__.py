"""The WRITE side for operators: fail a chord (one implementation), purge coordination
messages, replay or drop dead letters. Used by the guard, durable chords, the CLI and the
dashboard; never by the monitor."""

from .callback import OperatorFail, fail_callback
from .fail import FailPlan, fail_chord, plan_fail
from .purge import PurgeReport, purge_coordination

__all__ = ["FailPlan", "OperatorFail", "PurgeReport", "fail_callback", "fail_chord", "plan_fail",
           "purge_coordination"]
