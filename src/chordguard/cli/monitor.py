"""Read-only commands: status, check, inspect."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from ..model import Snapshot
from ..monitor.api import HEALTHY, UNHEALTHY, blind_spot, find_chord, stuck_chords, verdict
from ..monitor.collect import SOURCE_TIMEOUT, collect
from ..monitor.documents import write_snapshot_json
from . import COMMANDS, EXIT_OK, EXIT_PROBLEMS, EXIT_UNKNOWN, FiniteFloat, command, settings
from .render import chord_detail, print_status, sources_line

MAX_HOURS = click.option("--max-hours", type=FiniteFloat(min=0), default=1.0,
                         show_default=True,
                         help="A chord idle longer than this many hours is stuck (0 allowed).")


SOURCE_TIMEOUT_OPTION = click.option(
    "--source-timeout", type=FiniteFloat(min=1), default=SOURCE_TIMEOUT, show_default=True,
    help="Seconds each source may take (100,000 Redis chords take longer on small machines); "
         "one still reading then makes the verdict unknown, never healthy.")

PAGE = [click.option("--limit", type=click.IntRange(min=0), default=1000, show_default=True,
                     help="--json: list at most this many chords (0: all); the document "
                          "says where the next page starts (next_offset)."),
        click.option("--offset", type=click.IntRange(min=0), default=0,
                     help="--json: the first chord listed.")]


def paged(fn: Callable) -> Callable:
    for option in reversed(PAGE):
        fn = option(fn)
    return fn


@command(COMMANDS, name="status")
@SOURCE_TIMEOUT_OPTION
@paged
def status(source_timeout: float, limit: int, offset: int) -> int:
    """Every in-flight chord, its progress, age and diagnoses."""
    opts = settings()
    snapshot = collect(opts.app, timeout=source_timeout)
    if opts.json:
        write_snapshot_json(sys.stdout.write, snapshot, "status", None, limit, offset)
    else:
        print_status(opts.console, snapshot)
    return exit_code(snapshot)


@command(COMMANDS, name="check")
@MAX_HOURS
@SOURCE_TIMEOUT_OPTION
@paged
def check(max_hours: float, source_timeout: float, limit: int, offset: int) -> int:
    """Chords idle longer than --max-hours or with a blocking diagnosis (exit 1 if any), and
    those whose verdict rests on what could not be seen (exit 3 if any, and nothing stuck)."""
    opts = settings()
    snapshot = collect(opts.app, stuck_after_hours=max_hours, timeout=source_timeout)
    stuck = stuck_chords(snapshot)
    unseen = [c for c in snapshot.chords if c.unseen and not c.blocking]
    if opts.json:
        write_snapshot_json(sys.stdout.write, snapshot, "check", stuck + unseen, limit, offset)
    else:
        if stuck or unseen:
            print_status(opts.console, snapshot, stuck + unseen)
        else:
            status, reason = verdict(snapshot)
            if status == HEALTHY:
                opts.console.print(f"[green]no stuck chords[/] ({len(snapshot.chords)} in "
                                   f"flight, limit {max_hours:g} h)")
            else:
                hint = "; a slow source gets longer with --source-timeout" \
                    if "did not answer within" in reason else ""
                opts.console.print(f"[bold yellow]{status}[/]: {reason}{hint}")
            opts.console.print(sources_line(snapshot))
    return exit_code(snapshot)


def exit_code(snapshot: Snapshot) -> int:
    """0 healthy, 1 problems found, 3 unknown (the monitor could not see enough)."""
    status, _ = verdict(snapshot)
    return {HEALTHY: EXIT_OK, UNHEALTHY: EXIT_PROBLEMS}.get(status, EXIT_UNKNOWN)


@command(COMMANDS, name="inspect")
@click.argument("chord_id")
def inspect_chord(chord_id: str) -> int:
    """One chord by group id or callback task id: header, callback, timings, diagnoses.

    Exit 0 only when it is seen and healthy, 1 for a problem, 3 when the view cannot vouch
    (a place did not answer, the look was incomplete)."""
    opts = settings()
    snapshot, chord = find_chord(opts.app, chord_id)
    if opts.json:
        write_snapshot_json(sys.stdout.write, snapshot, "inspect", [chord])
    else:
        opts.console.print(chord_detail(chord, opts.verbose))
    if chord.blocking:
        return EXIT_PROBLEMS
    unseen = None if chord.ended else blind_spot(snapshot)
    if unseen:  # seen, but not all that vouches for it could be
        if not opts.json:
            opts.console.print(f"[bold yellow]unknown[/]: {unseen}")
        return EXIT_UNKNOWN
    return EXIT_OK
