"""``chordguard fix``: the seed guide's interactive fix script, failing chords properly.

Shows the status, lists the stuck chords, fails those idle longer than ``--auto-fail-after``
without asking, asks about each other one (``--yes`` fails them all: for cron; without a
terminal and without ``--yes`` nothing is asked and they are only listed), and ends with
recommendations drawn from the diagnoses and the configuration's hazards.
"""

from __future__ import annotations

import re
import sys

import click

from ..actions import FailPlan, OperatorFail, broker_kind, fail_chord, plan_fail
from ..model import READY_STATES, Chord, format_seconds, to_jsonable
from ..monitor.api import blind_spot, look_twice
from ..monitor.doctor import config_from_app, lint
from ..monitor.triage import idle_seconds, reason, recommendations, triage
from . import (
    COMMANDS,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_UNKNOWN,
    IN_PROCESS,
    Settings,
    command,
    settings,
)
from .render import print_status

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


class DurationType(click.ParamType):
    """``90s``, ``30m``, ``2h``, ``1d``; a bare number is seconds."""

    name = "duration"

    def convert(self, value, param, ctx) -> float:
        if isinstance(value, int | float):
            return float(value)
        match = _DURATION.match(str(value))
        if match is None:
            self.fail(f"{value!r} is not a duration like 90s, 30m, 2h or 1d", param, ctx)
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def describe(chord: Chord) -> str:
    idle = idle_seconds(chord)
    shown = "idle ?" if idle is None else f"idle {format_seconds(idle)}"
    return (f"{chord.kind.value} chord {chord.id} (callback {chord.callback_name or '?'}, "
            f"{shown}): {', '.join(chord.codes)}")


def act(opts: Settings, chord: Chord, dry_run: bool, operator: OperatorFail) -> FailPlan:
    why = reason(chord, "chordguard fix")
    plan = plan_fail(chord, why, broker_kind(opts.app)) if dry_run \
        else fail_chord(opts.app, chord, why, operator)
    if not opts.json:
        verb = "would fail" if dry_run else "failed"
        opts.console.print(f"  [bold]{verb}[/] {chord.id}")
        for step in plan.steps:
            opts.console.print(f"    - {step}")
    return plan


@command(COMMANDS, name="fix")
@click.option("--stuck-after", type=DurationType(), default="30m", show_default=True,
              help="A chord idle this long is stuck (90s, 30m, 2h, 1d).")
@click.option("--auto-fail-after", type=DurationType(), default="2h", show_default=True,
              help="Fail stuck chords idle this long without asking.")
@click.option("--yes", "-y", is_flag=True, help="Fail every stuck chord without asking (cron).")
@click.option("--dry-run", is_flag=True, help="Say what would be failed; change nothing.")
@IN_PROCESS
def fix(stuck_after: float, auto_fail_after: float, yes: bool, dry_run: bool,
        in_process: bool) -> int:
    """Show status, fail stuck chords (asking first), recommend next steps.

    Exit 0 when nothing stuck is left, 1 otherwise, 3 when what could not be seen may hide
    stuck chords, 130 on Ctrl-C.
    """
    opts = settings()
    snapshot = look_twice(opts.app, stuck_after_hours=stuck_after / 3600)
    if not opts.json:
        print_status(opts.console, snapshot)
    split = triage(snapshot, max(auto_fail_after, stuck_after))
    interactive = not yes and not opts.json and sys.stdin.isatty()
    done: list[FailPlan] = []
    left: list[Chord] = []
    operator = OperatorFail(in_process=in_process)
    if not dry_run:  # refuse before failing any chord
        for chord in split.fail + (split.ask if yes else []):
            if chord.callback_state not in READY_STATES:
                operator.check(opts.app, chord.callback_signature)
    if not opts.json:
        opts.console.print(f"\n{len(split.stuck)} stuck chord(s) (idle > "
                           f"{format_seconds(stuck_after)} or blocked)")
    for chord in split.fail:
        if not opts.json:
            opts.console.print(f"[red]auto[/] {describe(chord)}")
        done.append(act(opts, chord, dry_run, operator))
    for chord in split.ask:
        if not opts.json:
            opts.console.print(describe(chord))
        if yes or (interactive and click.confirm(f"Fail chord {chord.id}?", default=False)):
            done.append(act(opts, chord, dry_run, operator))
        else:
            left.append(chord)
            if not opts.json and not interactive:
                opts.console.print("  left as it is (no terminal to ask; --yes fails it)")
    advice = recommendations(snapshot, lint(config_from_app(opts.app)))
    unseen = blind_spot(snapshot)
    if opts.json:
        opts.emit_json({"schema": "chordguard.fix/1", "dry_run": dry_run,
                        "failed": to_jsonable(done), "left": [c.id for c in left],
                        "recommendations": advice, "unseen": unseen})
    else:
        if unseen:
            opts.console.print(f"[bold yellow]unknown[/]: {unseen}: stuck chords there are "
                               "not shown")
        opts.console.print("\n[bold]Recommendations[/]" if advice else "")
        for line in advice:
            opts.console.print(f"  - {line}")
    if left or (dry_run and done):
        return EXIT_PROBLEMS
    return EXIT_UNKNOWN if unseen else EXIT_OK
