"""Chords as the dashboard shows them: list rows and the detail view."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..model import Chord, Duration, to_jsonable
from ..monitor.filters import chord_state
from ..monitor.tracker import ChordRate


def _span(span: Duration | None) -> dict[str, Any] | None:
    if span is None:
        return None
    return {"seconds": span.seconds, "label": span.label(), "basis": span.basis,
            "lower_bound": span.lower_bound}


def _rate(rate: ChordRate | None) -> dict[str, float] | None:
    return None if rate is None else to_jsonable(rate)


def chord_row(chord: Chord, rate: ChordRate | None) -> dict[str, Any]:
    """One line of the chord list."""
    return {
        "id": chord.id, "kind": chord.kind.value, "state": chord_state(chord),
        "callback_name": chord.callback_name, "callback_id": chord.callback_id,
        "callback_state": chord.callback_state,
        "total": chord.total, "done": chord.done, "failed": chord.failed,
        "age": _span(chord.age), "idle": _span(chord.idle),
        "unlock_retries": chord.unlock_retries, "unlock_chains": chord.unlock_chains,
        "unlock_rate": _rate(rate),
        "diagnoses": [{"code": d.code, "severity": d.severity.value, "summary": d.summary}
                      for d in chord.diagnoses],
    }


def chord_detail(chord: Chord, rate: ChordRate | None) -> dict[str, Any]:
    """Everything about one chord, plus the spans and rate the list shows."""
    out = to_jsonable(chord)
    out.update(state=chord_state(chord), age=_span(chord.age), idle=_span(chord.idle),
               unlock_rate=_rate(rate), timeline=timeline(chord))
    return out


def timeline(chord: Chord) -> list[dict[str, Any]]:
    """The chord's known moments, oldest first: its creation and each finished part."""
    moments: list[tuple[datetime, str, str]] = []
    if chord.created_at:
        moments.append((chord.created_at, "CREATED", "chord created"))
    for part in chord.header:
        if part.date_done:
            label = " ".join(x for x in ("part", None if part.index is None else str(part.index),
                                         part.name, part.task_id) if x)
            moments.append((part.date_done, part.state or "?", label))
    moments.sort(key=lambda m: _aware(m[0]))
    return [{"at": _aware(at).isoformat(), "state": state, "what": what}
            for at, state, what in moments]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
