"""Commands that change the cluster: revoke (fail) stuck chords, clean coordination messages."""

from __future__ import annotations

import sys

import click

from ..actions import OperatorFail, broker_kind, fail_chord, plan_fail, purge_coordination
from ..errors import CannotVouchError, ChordguardError
from ..model import READY_STATES, to_jsonable
from ..monitor.api import blind_spot, find_each, look_twice, stuck_chords
from ..monitor.collect import collect
from ..monitor.sources.holdings import candidate_queues
from . import COMMANDS, EXIT_OK, EXIT_PROBLEMS, EXIT_UNKNOWN, IN_PROCESS, command, settings
from .monitor import MAX_HOURS


@command(COMMANDS, name="revoke")
@click.argument("chord_ids", nargs=-1, metavar="[CHORD_ID]...")
@MAX_HOURS
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--force", "--yes", "-y", "force", is_flag=True,
              help="Fail every stuck chord without asking (needed off a terminal).")
@IN_PROCESS
def revoke(chord_ids: tuple[str, ...], max_hours: float, dry_run: bool, force: bool,
           in_process: bool) -> int:
    """Fail chords: revoke their pending tasks, mark their callback FAILURE with ChordError.

    With CHORD_IDs, exactly those chords (stuck or not); without, every stuck chord, after
    asking (on a terminal) or with --force. A guarded worker fails each callback (its
    errbacks run there); see --in-process for apps without the guard in their workers.
    """
    opts = settings()
    if chord_ids:
        snapshot = collect(opts.app, stuck_after_hours=max_hours)
        snapshot, chosen = find_each(opts.app, snapshot, list(chord_ids), max_hours)
        unknown = [i for i, c in zip(chord_ids, chosen, strict=True) if c is None]
        if unknown:
            raise ChordguardError(f"unknown chord id(s): {', '.join(unknown)} (see chordguard "
                                  "status; nothing was failed)")
        targets = [c for c in chosen if c is not None]
    else:
        snapshot = look_twice(opts.app, stuck_after_hours=max_hours)
        targets = stuck_chords(snapshot)
        if targets and not (dry_run or force):
            _confirm(f"Fail {len(targets)} stuck chord(s) idle over {max_hours:g} h? "
                     "Their callbacks will be marked FAILURE")
    operator = OperatorFail(in_process=in_process)
    if not dry_run:  # refuse before failing any chord
        for chord in targets:
            if chord.callback_state not in READY_STATES:
                operator.check(opts.app, chord.callback_signature)
    done = []
    for chord in targets:
        reason = "; ".join(d.summary for d in chord.diagnoses if d.severity == "blocking") \
            or "failed on request (chordguard revoke)"
        plan = plan_fail(chord, reason, broker_kind(opts.app)) if dry_run else \
            fail_chord(opts.app, chord, reason, operator)
        done.append(plan)
        if not opts.json:
            verb = "would fail" if dry_run else "failed"
            opts.console.print(f"[bold]{verb}[/] {chord.kind.value} chord {chord.id}: {reason}")
            for step in plan.steps:
                opts.console.print(f"  - {step}")
    unseen = None if chord_ids else blind_spot(snapshot)
    if opts.json:
        opts.emit_json({"schema": "chordguard.revoke/1", "dry_run": dry_run,
                        "chords": to_jsonable(done), "unseen": unseen})
    elif unseen:
        opts.console.print(f"[bold yellow]unknown[/]: {unseen}: stuck chords there are not shown")
    elif not targets:
        opts.console.print(f"[green]no stuck chords[/] (limit {max_hours:g} h)")
    if unseen:
        return EXIT_UNKNOWN
    failed_sources = [s for s in snapshot.sources if not s.ok]
    return EXIT_PROBLEMS if failed_sources else EXIT_OK


def _confirm(question: str) -> None:
    """Ask on a terminal; off one, refuse (usage error) without --force."""
    if not sys.stdin.isatty():
        raise click.UsageError("revoke fails every stuck chord: add --force (or --yes), "
                               "name the chords (revoke CHORD_ID...), or use --dry-run")
    if not click.confirm(question, default=False):
        raise ChordguardError("declined: nothing was failed")


@command(COMMANDS, name="clean")
@click.option("--force", is_flag=True, help="Required: this deletes messages.")
@click.option("--all-queues", is_flag=True,
              help="Purge every message of every queue the app knows, not only chord_unlock.")
@click.option("--dry-run", is_flag=True, help="Count what would go; change nothing.")
@IN_PROCESS
def clean(force: bool, all_queues: bool, dry_run: bool, in_process: bool) -> int:
    """Purge chord-coordination (chord_unlock) messages and fail the chords they served."""
    if not (force or dry_run):
        raise click.UsageError("clean deletes broker messages: add --force (or --dry-run)")
    opts = settings()
    snapshot = collect(opts.app)
    unseen = blind_spot(snapshot)
    if unseen:
        raise CannotVouchError(f"not cleaning on a partial view: {unseen}")
    queues = candidate_queues(opts.app, snapshot.facts.consumed_queues or set())
    report = purge_coordination(opts.app, snapshot.chords, queues, all_queues, dry_run,
                                OperatorFail(in_process=in_process))
    if opts.json:
        opts.emit_json({"schema": "chordguard.clean/1", **to_jsonable(report)})
        return EXIT_OK
    verb = "would remove" if dry_run else "removed"
    for queue, count in sorted(report.removed.items()):
        if count:
            opts.console.print(f"{verb} {count} message(s) from {queue}")
    if not any(report.removed.values()):
        opts.console.print("no matching messages")
    for plan in report.failed_chords:
        opts.console.print(f"{'would fail' if dry_run else 'failed'} chord {plan.chord_id}: "
                           f"{plan.callback}")
    return EXIT_OK
