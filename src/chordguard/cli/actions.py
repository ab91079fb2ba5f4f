"""Commands that change the cluster: revoke (fail) stuck chords, clean coordination messages."""

from __future__ import annotations

import click

from ..actions import fail_chord, plan_fail
from ..collect import collect
from ..model import to_jsonable
from ..monitor import stuck_chords
from . import COMMANDS, EXIT_OK, EXIT_PROBLEMS, command, settings
from .monitor import MAX_HOURS


@command(COMMANDS, name="revoke")
@MAX_HOURS
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
def revoke(max_hours: float, dry_run: bool) -> int:
    """Fail every stuck chord: revoke its pending tasks, mark its callback FAILURE."""
    opts = settings()
    snapshot = collect(opts.app, stuck_after_hours=max_hours)
    stuck = stuck_chords(snapshot)
    done = []
    for chord in stuck:
        reason = "; ".join(d.summary for d in chord.diagnoses if d.severity == "blocking")
        plan = plan_fail(chord, reason) if dry_run else fail_chord(opts.app, chord, reason)
        done.append(plan)
        if not opts.json:
            verb = "would fail" if dry_run else "failed"
            opts.console.print(f"[bold]{verb}[/] {chord.kind.value} chord {chord.id}: {reason}")
            for step in plan.steps:
                opts.console.print(f"  - {step}")
    if opts.json:
        opts.emit_json({"schema": "chordguard.revoke/1", "dry_run": dry_run,
                        "chords": to_jsonable(done)})
    elif not stuck:
        opts.console.print(f"[green]no stuck chords[/] (limit {max_hours:g} h)")
    failed_sources = [s for s in snapshot.sources if not s.ok]
    return EXIT_PROBLEMS if failed_sources else EXIT_OK
