"""The matrix as one Markdown table (and its legend)."""

from __future__ import annotations

from .cell import Tally
from .faults import Fault
from .kinds import Kind

LEGEND = ("Each cell: `started: once/failed/lost/dup, slowest/deadline`: chords started; "
          "callbacks run exactly once (and succeeded); chords failed properly (callback "
          "FAILURE + errbacks ran + a dead letter; plain Celery has no dead letters, so "
          "FAILURE + errbacks); chords lost (neither by deadline + 20 s); extra callback runs; "
          "the slowest chord's time to its end vs its deadline (late: more than 3 s past it, "
          "10 s for unlock chords, which the guard leaves unlock_max_interval + 5 s more); "
          "'also failed': the callback succeeded, then a second delivery failed it "
          "(errbacks ran, result FAILURE); 'early': failed for its deadline or a stall before "
          "the deadline. "
          "✗ marks a guarded/durable cell that misses the goal (0 lost, 0 dup, every chord "
          "ended by its deadline).")


def cell_text(kind: Kind, tally: Tally) -> str:
    if tally.na:
        return f"n/a ({tally.na})"
    if tally.error:
        return f"harness error ({tally.error})"
    slowest = "-" if tally.slowest is None else f"{tally.slowest:.0f}"
    text = (f"{tally.started}: {tally.once}/{tally.failed}/{tally.lost}/{tally.dup}, "
            f"{slowest}/{tally.deadline:.0f} s")
    if tally.late:
        text += f" ({tally.late} late)"
    if tally.early:
        text += f" ({tally.early} early)"
    if tally.both:
        text += f" ({tally.both} also failed)"
    if kind.guarded and not tally.meets_goal:
        text += " ✗"
    return text


def render(faults: list[Fault], kinds: list[Kind],
           results: dict[tuple[str, str], Tally]) -> str:
    lines = ["| fault | " + " | ".join(k.name for k in kinds) + " |",
             "|---|" + "---|" * len(kinds)]
    for fault in faults:
        cells = [cell_text(k, results[fault.name, k.name]) for k in kinds]
        lines.append(f"| {fault.name} | " + " | ".join(cells) + " |")
    notes = [f"- {fault.name} × {kind.name}: {note}" for fault in faults for kind in kinds
             for note in results[fault.name, kind.name].notes]
    rows = [f"- **{fault.name}**: {fault.what}" for fault in faults]
    return "\n".join([*lines, "", LEGEND, "", *rows, *([""] + notes if notes else [])])
