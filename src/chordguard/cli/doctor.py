"""``chordguard doctor``: lint the app's configuration for chord hazards."""

from __future__ import annotations

import celery
from rich.panel import Panel
from rich.text import Text

from ..coordination import kind_of
from ..model import ChordKind, Severity
from ..monitor.celery_hazards import Hazard, hazards
from ..monitor.doctor import Finding, config_from_app, lint
from ..monitor.documents import doctor_json
from . import COMMANDS, EXIT_OK, EXIT_PROBLEMS, command, settings

JOINS = {ChordKind.REDIS: "joined by the Redis result backend's counter keys (kind redis)",
         ChordKind.DJANGO: "joined by django-db's ChordCounter rows (django-celery-results; "
                           "kind django)",
         ChordKind.UNLOCK: "joined by celery.chord_unlock polling the header (kind unlock)"}


def finding_panel(item: Finding) -> Panel:
    colour = "red" if item.severity is Severity.BLOCKING else "yellow"
    body = Text(item.summary + "\n", style="bold") + Text("why: " + item.why + "\n") + \
        Text("fix: " + item.fix, style="cyan")
    return Panel(body, title=f"{item.code} ({item.severity.value}) — {item.setting}",
                 title_align="left", border_style=colour)


def hazards_panel(known: list[Hazard]) -> Panel:
    """The installed Celery's known chord hazards and what chordguard does about each."""
    body = Text()
    for hazard in known:
        body += Text(f"{hazard.code} ({', '.join(hazard.kinds)} chords): ", style="bold") + \
            Text(hazard.what + "\n") + Text("chordguard: " + hazard.chordguard + "\n",
                                             style="cyan")
    return Panel(body or Text("none known"), title_align="left",
                 title=f"Celery {celery.__version__}: known chord hazards")


@command(COMMANDS, name="doctor")
def doctor() -> int:
    """Lint the app's configuration for chord hazards; exit 1 when any is found. Also names
    the installed Celery's known chord hazards and what chordguard does about each, and
    warns when guarded workers use another store than this command."""
    opts = settings()
    if opts.json:
        document = doctor_json(opts.app)
        opts.emit_json(document)
        return EXIT_PROBLEMS if document["findings"] else EXIT_OK
    config = config_from_app(opts.app, ask_workers=True)
    findings = lint(config)
    known = hazards(config.celery)
    kind = kind_of(opts.app)
    joins = JOINS[kind] if kind else "unknown (no source reads this result backend's chords)"
    opts.console.print(f"chords of this app: {joins}")
    opts.console.print(hazards_panel(known))
    if findings:
        for item in findings:
            opts.console.print(finding_panel(item))
        blocking = sum(1 for f in findings if f.severity is Severity.BLOCKING)
        opts.console.print(f"[bold red]{len(findings)} hazard(s)[/], {blocking} blocking")
    else:
        opts.console.print("[green]no chord hazards found in the configuration[/]")
    return EXIT_PROBLEMS if findings else EXIT_OK
