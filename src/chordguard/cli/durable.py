"""``chordguard reap``: the durable-chord reaper, once or in a loop."""

from __future__ import annotations

import threading

import click

from .._urls import mask_url
from ..config import store_url
from ..durable.reaper import ReapReport, reap, reap_forever
from ..model import to_jsonable
from . import COMMANDS, EXIT_OK, EXIT_PROBLEMS, FiniteFloat, command, settings


@command(COMMANDS, name="reap")
@click.option("--store", metavar="URL", help="Barrier store (default: the app's).")
@click.option("--interval", type=FiniteFloat(min=0.1), default=5.0, show_default=True,
              help="Seconds between passes.")
@click.option("--once", is_flag=True, help="One pass, then exit (1 if another reaper is active).")
def reap_command(store: str | None, interval: float, once: bool) -> int:
    """Fail durable chords past their deadline or stalled; re-dispatch dead claims.

    Runs pass after pass until interrupted (Ctrl-C: exit 130), one reaper at a time across
    hosts; --once does one pass and exits. A guarded worker already reaps on its own.
    """
    opts = settings()
    app = opts.app

    def show(report: ReapReport) -> None:
        if opts.json:
            opts.emit_json({"schema": "chordguard.reap/1", **to_jsonable(report)})
            return
        if not report.locked:
            opts.console.print("[yellow]another reaper holds the lease; standing by[/]")
        if report.settling:
            opts.console.print("[yellow]the store was out of sight: letting held completions "
                               "land before judging[/]")
        for chord_id, reason in report.failed.items():
            opts.console.print(f"[bold red]failed[/] durable chord {chord_id}: {reason}")
        for chord_id in report.redispatched:
            opts.console.print(f"[bold]re-dispatched[/] durable chord {chord_id}")

    if once:
        report = reap(app, store, keep_lease=False)
        show(report)
        return EXIT_OK if report.locked else EXIT_PROBLEMS
    if not opts.json:
        opts.console.print(f"reaping durable chords of {app.main} in "
                           f"{mask_url(store_url(app, store))} every {interval:g} s "
                           "until interrupted (Ctrl-C; --once for a single pass)")
    reap_forever(app, interval, store, threading.Event(), on_pass=show)
    return EXIT_OK
