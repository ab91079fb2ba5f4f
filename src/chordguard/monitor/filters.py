"""Which chords a list shows: each chord's state word and the filters of every chord list
(the dashboard's, the MCP server's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from ..model import Chord

STATES = ("blocked", "at_risk", "running")


def chord_state(chord: Chord) -> str:
    """``blocked`` (a blocking diagnosis), ``at_risk`` (only warnings) or ``running``."""
    if chord.blocking:
        return "blocked"
    return "at_risk" if chord.diagnoses else "running"


class ChordFields(NamedTuple):
    """What the list filters look at, computed once per chord and snapshot."""

    kind: str
    state: str
    codes: tuple[str, ...]
    callback: str  # lower-cased callback task name, empty when unknown


def chord_fields(chord: Chord) -> ChordFields:
    return ChordFields(chord.kind.value, chord_state(chord), tuple(chord.codes),
                       (chord.callback_name or "").lower())


@dataclass(frozen=True)
class ChordFilter:
    """The list filters; empty fields match everything. ``callback`` matches a substring."""

    kind: str = ""
    state: str = ""
    diagnosis: str = ""
    callback: str = ""

    @classmethod
    def from_query(cls, query: Any) -> ChordFilter:
        return cls(**{name: (query.get(name) or "").strip() for name in
                      ("kind", "state", "diagnosis", "callback")})

    @property
    def empty(self) -> bool:
        return not (self.kind or self.state or self.diagnosis or self.callback)

    def matches(self, fields: ChordFields) -> bool:
        return ((not self.kind or fields.kind == self.kind)
                and (not self.state or fields.state == self.state)
                and (not self.diagnosis or self.diagnosis in fields.codes)
                and (not self.callback or self.callback.lower() in fields.callback))
