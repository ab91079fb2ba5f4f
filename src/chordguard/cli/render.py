"""Views of the model: rich tables for people, a stable JSON schema for machines."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text

from ..model import Chord, Severity, Snapshot, format_seconds
from ..monitor.api import health_from, verdict

BAR_WIDTH = 12
TABLE_ROWS = 100  # chords drawn in a table; --json lists every one

if TYPE_CHECKING:
    from rich.console import Console, Group
    from rich.table import Table


def progress_bar(chord: Chord) -> Text:
    if not chord.total:
        return Text(f"{chord.done}/?", style="dim")
    filled = round(BAR_WIDTH * min(chord.done, chord.total) / chord.total)
    colour = "red" if chord.failed else "green"
    bar = Text("█" * filled, style=colour) + Text("░" * (BAR_WIDTH - filled), style="dim")
    return bar + Text(f" {chord.done}/{chord.total}")


def diagnosis_text(chord: Chord) -> Text:
    if not chord.diagnoses:
        return Text("unknown: " + chord.unseen, style="yellow") if chord.unseen \
            else Text("ok", style="green")
    parts = [Text(d.code, style="bold red" if d.severity is Severity.BLOCKING else "yellow")
             for d in chord.diagnoses]
    return Text(" ").join(parts)


def status_table(snapshot: Snapshot, chords: list[Chord] | None = None) -> Table:
    """The first ``TABLE_ROWS`` chords (``--json`` lists every one)."""
    from rich.table import Table  # tables load only when one is drawn

    chosen = snapshot.chords if chords is None else chords
    more = len(chosen) - TABLE_ROWS
    table = Table(title=f"In-flight chords — celery {snapshot.celery_version}",
                  title_justify="left",
                  caption=f"… and {more:,} more: --json lists every one" if more > 0 else None)
    for column in ("kind", "chord id", "callback", "progress", "age", "idle", "unlock retries",
                   "diagnoses"):
        table.add_column(column, no_wrap=column in ("chord id", "progress"))
    for chord in chosen[:TABLE_ROWS]:
        table.add_row(chord.kind.value, chord.id, chord.callback_name or "unknown",
                      progress_bar(chord),
                      chord.age.label() if chord.age else "?",
                      chord.idle.label() if chord.idle else "?",
                      "" if chord.unlock_retries is None else
                      f"{chord.unlock_retries}" + (f" ×{len(chord.unlock_copies)} copies"
                                                   if len(chord.unlock_copies) > 1 else ""),
                      diagnosis_text(chord))
    return table


def totals_line(snapshot: Snapshot) -> Text:
    health = health_from(snapshot)
    style = {"healthy": "green", "unknown": "bold yellow"}.get(health["status"], "bold red")
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(health["by_kind"].items())) or "none"
    text = Text(f"{health['in_flight_chords']} in flight ({kinds}); "
                f"{health['stuck_chords']} with blocking problems; ")
    text += Text(health["status"], style=style)
    if health["status"] != "healthy":
        text += Text(f" ({health['reason']})")
    if health["diagnoses"]:
        text += Text("\ndiagnoses: " + ", ".join(
            f"{code} {count}" for code, count in sorted(health["diagnoses"].items())))
    return text


def sources_line(snapshot: Snapshot) -> Text:
    """Each source's name, and why a failed one failed unless the verdict's reason says it."""
    shown = verdict(snapshot)[1]
    text = Text("sources: ")
    for report in snapshot.sources:
        text += Text(f"{report.name} ", style="green" if report.ok else "bold red")
        if not report.ok:
            text += Text("FAILED " if report.detail in shown else
                         f"FAILED ({report.detail}) ", style="red")
    if not snapshot.sources:
        text += Text("none applied to this app", style="yellow")
    return text


def print_status(console: Console, snapshot: Snapshot, chords: list[Chord] | None = None) -> None:
    console.print(status_table(snapshot, chords))
    console.print(totals_line(snapshot))
    console.print(sources_line(snapshot))


def chord_detail(chord: Chord, verbose: bool) -> Group:
    """Everything known about one chord, for ``inspect``."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    rows = [
        ("chord (group) id", chord.id), ("kind", chord.kind.value),
        ("callback", f"{chord.callback_name or '?'}  id {chord.callback_id or '?'}  "
                     f"state {chord.callback_state or '?'}" if chord.callback_id
                     else chord.evidence.get("callback", "unknown")),
        ("progress", f"{chord.done}/{chord.total if chord.total is not None else '?'} done, "
                     f"{chord.failed} failed"),
        ("created", chord.created_at.isoformat() if chord.created_at else "not recorded"),
        ("age", f"{chord.age.label()} — {chord.age.basis}" if chord.age else "?"),
        ("idle", f"{chord.idle.label()} — {chord.idle.basis}" if chord.idle else "?"),
        ("unlock retries", "" if chord.unlock_retries is None else str(chord.unlock_retries)),
        ("sources", ", ".join(chord.sources)),
    ]
    if chord.deadline_at:
        rows.append(("deadline", chord.deadline_at.isoformat()))
    if chord.ended:
        rows.insert(0, ("ENDED", chord.ended))
    for key, value in rows:
        facts.add_row(key, value)
    parts: list[Any] = [facts]
    if chord.callback_signature and verbose:
        parts.append(Panel(repr(chord.callback_signature), title="callback signature"))
    if chord.unlock_copies:
        copies = Table("unlock task id", "retries", "where", "eta", title="chord_unlock copies")
        for c in chord.unlock_copies:
            copies.add_row(c.task_id, str(c.retries), c.where, c.eta.isoformat() if c.eta else "")
        parts.append(copies)
    if chord.redis_keys:
        keys = Table("redis key", "TTL", title="Redis keys")
        for key, ttl in chord.redis_keys.items():
            keys.add_row(key, "missing" if ttl is None else
                         ("no expiry" if ttl < 0 else format_seconds(ttl)))
        parts.append(keys)
    header = Table("#", "header task id", "state", "done at", "held by", title="header tasks")
    if verbose:
        header.add_column("result / traceback")
    for part in chord.header:
        row = ["" if part.index is None else str(part.index), part.task_id, part.state or "?",
               part.date_done.isoformat() if part.date_done else "", part.held_by or ""]
        if verbose:
            row.append(part.traceback or repr(part.result))
        header.add_row(*row)
    parts.append(header)
    for d in chord.diagnoses:
        colour = "red" if d.severity is Severity.BLOCKING else "yellow"
        body = Text(d.summary + "\n", style="bold") + Text(d.explanation + "\n") + \
            Text("next: " + d.next_step, style="cyan")
        if verbose and d.evidence:
            body += Text("\nevidence: " + repr(d.evidence), style="dim")
        parts.append(Panel(body, title=f"{d.code} ({d.severity.value})", border_style=colour))
    if chord.evidence:
        evidence = Table("figure", "evidence", title="where each figure comes from")
        for key, value in chord.evidence.items():
            evidence.add_row(key, value)
        parts.append(evidence)
    return Group(*parts)
