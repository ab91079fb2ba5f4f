"""``chordguard watch``: live unlock poll rates and anomalies from Celery events."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.table import Table

from ..model import to_jsonable
from ..monitor.events import Anomaly, UnlockWatch, follow
from . import COMMANDS, EXIT_OK, EXIT_PROBLEMS, FiniteFloat, command, settings

TOP = 10


def emit_line(document: dict[str, Any]) -> None:
    """One JSON document per line, flushed: ``--json`` output is a stream."""
    click.echo(json.dumps(document, default=str))


def rates_table(watch: UnlockWatch) -> Table:
    table = Table("chord id", "callback", "polls/s", "per interval", "chains", "retries",
                  title=f"unlock polling, last {watch.window:g} s", title_justify="left")
    for rate in watch.rates()[:TOP]:
        storm = rate.polls_per_interval > 1.5 or rate.chains > 1
        table.add_row(rate.chord_id, rate.callback_name or "?", f"{rate.polls_per_second:.2f}",
                      f"[bold red]{rate.polls_per_interval:.2f}[/]" if storm
                      else f"{rate.polls_per_interval:.2f}", str(rate.chains), str(rate.retries))
    return table


@command(COMMANDS, name="watch")
@click.option("--every", type=FiniteFloat(min=0.5), default=10.0, show_default=True,
              help="Print the rates every this many seconds.")
@click.option("--window", type=FiniteFloat(min=1), default=30.0, show_default=True,
              help="Sliding window for rates, in seconds.")
@click.option("--stuck-after", type=FiniteFloat(min=0), default=3600.0, show_default=True,
              help="Report a chord whose unlock has polled longer than this many seconds.")
@click.option("--duration", type=FiniteFloat(min=0), default=0.0,
              help="Stop after this many seconds (0: until Ctrl-C).")
@click.option("--max-chords", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Chords remembered at most (least recently polled forgotten first).")
def watch(every: float, window: float, stuck_after: float, duration: float,
          max_chords: int) -> int:
    """Follow Celery events (workers need -E): unlock poll rates per chord and anomalies.

    Exit 1 when an anomaly was seen, 0 otherwise, 130 on Ctrl-C.
    """
    opts = settings()
    app = opts.app
    state = UnlockWatch(interval=float(app.conf.result_chord_retry_interval or 1.0),
                        window=window, stuck_after=stuck_after or None, max_chords=max_chords)
    started = time.monotonic()
    next_report = started + every
    seen: list[Anomaly] = []

    def on_anomaly(anomaly: Anomaly) -> None:
        seen.append(anomaly)
        if opts.json:
            emit_line({"type": "anomaly", **to_jsonable(anomaly)})
        else:
            opts.console.print(f"[bold red]{anomaly.code}[/] {anomaly.summary}")

    def report() -> None:
        if opts.json:
            emit_line({"type": "rates", "chords": to_jsonable(state.rates()),
                            "size": state.size(), "events": state.events_seen})
        elif state.rates():
            opts.console.print(rates_table(state))

    def on_tick() -> bool:
        nonlocal next_report, listening
        if not listening:  # the first tick comes once the event queue is bound
            listening = True
            if opts.json:
                emit_line({"type": "watching", "exchange": app.conf.event_exchange})
            else:
                opts.console.print(f"watching events on {app.conf.event_exchange!r} "
                                   "(Ctrl-C to stop)")
        now = time.monotonic()
        if now >= next_report:
            report()
            next_report = now + every
        return not duration or now - started < duration

    listening = False
    follow(app, state, on_anomaly, on_tick)
    report()
    return EXIT_PROBLEMS if seen else EXIT_OK
