"""Read-only commands: status, check, inspect."""

from __future__ import annotations

import click

from ..model import Snapshot
from ..monitor.api import HEALTHY, UNHEALTHY, find_chord, stuck_chords, verdict
from ..monitor.collect import collect
from . import COMMANDS, EXIT_OK, EXIT_PROBLEMS, EXIT_UNKNOWN, FiniteFloat, command, settings
from .render import chord_detail, print_status, snapshot_json, sources_line

MAX_HOURS = click.option("--max-hours", type=FiniteFloat(min=0), default=1.0,
                         show_default=True,
                         help="A chord idle longer than this many hours is stuck (0 allowed).")


@command(COMMANDS, name="status")
def status() -> int:
    """Every in-flight chord, its progress, age and diagnoses."""
    opts = settings()
    snapshot = collect(opts.app)
    if opts.json:
        opts.emit_json(snapshot_json(snapshot, "status"))
    else:
        print_status(opts.console, snapshot)
    return exit_code(snapshot)


@command(COMMANDS, name="check")
@MAX_HOURS
def check(max_hours: float) -> int:
    """Chords idle longer than --max-hours or with a blocking diagnosis; exit 1 if any."""
    opts = settings()
    snapshot = collect(opts.app, stuck_after_hours=max_hours)
    stuck = stuck_chords(snapshot)
    if opts.json:
        opts.emit_json(snapshot_json(snapshot, "check", stuck))
    else:
        if stuck:
            print_status(opts.console, snapshot, stuck)
        else:
            status, reason = verdict(snapshot)
            if status == HEALTHY:
                opts.console.print(f"[green]no stuck chords[/] ({len(snapshot.chords)} in "
                                   f"flight, limit {max_hours:g} h)")
            else:
                opts.console.print(f"[bold yellow]{status}[/]: {reason}")
            opts.console.print(sources_line(snapshot))
    return exit_code(snapshot)


def exit_code(snapshot: Snapshot) -> int:
    """0 healthy, 1 problems found, 3 unknown (the monitor could not see enough)."""
    status, _ = verdict(snapshot)
    return {HEALTHY: EXIT_OK, UNHEALTHY: EXIT_PROBLEMS}.get(status, EXIT_UNKNOWN)


@command(COMMANDS, name="inspect")
@click.argument("chord_id")
def inspect_chord(chord_id: str) -> int:
    """One chord by group id or callback task id: header, callback, timings, diagnoses."""
    opts = settings()
    snapshot, chord = find_chord(opts.app, chord_id)
    if opts.json:
        opts.emit_json(snapshot_json(snapshot, "inspect", [chord]))
    else:
        opts.console.print(chord_detail(chord, opts.verbose))
    return EXIT_PROBLEMS if chord.blocking else EXIT_OK
