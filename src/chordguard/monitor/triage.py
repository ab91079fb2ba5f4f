"""Deciding what to do with stuck chords, shared by ``chordguard fix`` and periodic checks.

A chord is *stuck* when it has a blocking diagnosis (``stuck`` included: idle longer than the
limit given to ``collect``). Stuck chords idle longer than ``fail_after`` are failed without
asking; the others are offered. Nothing here writes: see ``actions.fail_chord``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import Chord, Severity, Snapshot
from .api import stuck_chords
from .diagnose import CATALOG
from .doctor import Finding


@dataclass
class Triage:
    """Stuck chords split into those to fail now and those to ask about."""

    fail: list[Chord] = field(default_factory=list)
    ask: list[Chord] = field(default_factory=list)

    @property
    def stuck(self) -> list[Chord]:
        return self.fail + self.ask


def idle_seconds(chord: Chord) -> float | None:
    """How long the chord has gone without progress (its age when idle is unknown)."""
    hours = chord.idle_hours()
    return None if hours is None else hours * 3600


def triage(snapshot: Snapshot, fail_after: float | None) -> Triage:
    """Split the snapshot's stuck chords; ``fail_after`` in seconds, None: never without asking.

    A chord whose idle time no source knows is always asked about.
    """
    out = Triage()
    for chord in stuck_chords(snapshot):
        idle = idle_seconds(chord)
        if fail_after is not None and idle is not None and idle >= fail_after:
            out.fail.append(chord)
        else:
            out.ask.append(chord)
    return out


def reason(chord: Chord, prefix: str) -> str:
    """Why a chord is being failed, for its ChordError and our record."""
    blocking = [d.summary for d in chord.diagnoses if d.severity is Severity.BLOCKING]
    return f"{prefix}: " + ("; ".join(blocking) or "stuck")


def recommendations(snapshot: Snapshot, findings: list[Finding]) -> list[str]:
    """Next steps drawn from the snapshot's diagnoses and the configuration's hazards."""
    out: list[str] = []
    codes = sorted({d.code for c in snapshot.chords for d in c.diagnoses if d.code != "stuck"})
    for code in codes:
        out.append(f"{code}: {CATALOG[code].next_step}" if code in CATALOG else code)
    for finding in findings:
        if finding.severity is Severity.BLOCKING:
            out.append(f"{finding.code} ({finding.setting}): {finding.fix}")
    for report in snapshot.sources:
        if not report.ok:
            out.append(f"source {report.name} did not answer ({report.detail}): its chords "
                       "are not shown; check that service")
    if not out and stuck_chords(snapshot):
        out.append(CATALOG["stuck"].next_step)
    return out
