"""What the MCP server answers, as plain functions of one app (no SDK here).

Each returns the JSON the CLI's ``--json`` documents (docs/json.md), paged so no reply holds
more than ``MAX_PAGE`` chords, header parts or dead letters, with every URL's password masked.
Bad input raises ``ToolInputError`` with one line; a view that cannot vouch for a chord never
acts on it. Acting methods return a plan unless ``confirm`` is true.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from celery import Celery

from .._urls import mask_text
from ..actions import OperatorFail, broker_kind, fail_chord, plan_fail
from ..actions.dead_letters import drop, replay, waiting
from ..config import configured_store
from ..errors import ChordguardError
from ..model import READY_STATES, Chord, Snapshot, to_jsonable
from ..monitor.api import blind_spot, find_chord
from ..monitor.collect import collect
from ..monitor.documents import catalog_json, doctor_json, snapshot_head, snapshot_json
from ..monitor.filters import ChordFilter, chord_fields
from ..monitor.store_view import store_view
from ..store import Store, open_store
from ..store.records import DLQ_DEAD

MAX_PAGE = 200
MAX_ID = 255
SNAPSHOT_SECONDS = 5.0  # a list and its next pages read one snapshot
SAFE_ID = re.compile(r"[\w.:@+-]+")


class ToolInputError(ChordguardError):
    """A tool was called with arguments it cannot take (one line, nothing done)."""


class Tools:
    """The tools of one server: ``app``'s chords, journal and dead letters."""

    def __init__(self, app: Celery, stuck_after_hours: float = 1.0) -> None:
        self.app, self.stuck_after_hours = app, stuck_after_hours
        self._lock = threading.Lock()
        self._snapshot: tuple[float, Snapshot] | None = None

    # read-only

    def health(self) -> dict[str, Any]:
        """The verdict (healthy / unhealthy / unknown), its one-line reason, the sources."""
        return _masked(snapshot_head(self._collect(), "check"))

    def chords(self, kind: str = "", state: str = "", diagnosis: str = "", callback: str = "",
               offset: int = 0, limit: int = 50) -> dict[str, Any]:
        """In-flight chords matching the filters, a page at a time, without their header
        parts and callback signature (``chord`` has those)."""
        offset, limit = _page(offset, limit)
        snapshot = self._collect()
        wanted = ChordFilter(kind=_word(kind), state=_word(state), diagnosis=_word(diagnosis),
                             callback=_bounded(callback, "callback"))
        matched = [c for c in snapshot.chords if wanted.matches(chord_fields(c))]
        end = min(len(matched), offset + limit)
        document = {**snapshot_head(snapshot, "status"), "chords_total": len(snapshot.chords),
                    "matched": len(matched), "offset": offset, "limit": limit,
                    "next_offset": end if end < len(matched) else None,
                    "chords": [_summary(c) for c in matched[offset:end]]}
        return _masked(document)

    def chord(self, chord_id: str, header_offset: int = 0, header_limit: int = 50,
              ) -> dict[str, Any]:
        """One chord by group or callback id: header parts (paged), callback, evidence, every
        diagnosis with its next step, the journal's history and, once over, how it ended."""
        chord_id = _id(chord_id)
        header_offset, header_limit = _page(header_offset, header_limit)
        snapshot, chord = find_chord(self.app, chord_id)
        document = snapshot_json(snapshot, "inspect", [chord])
        found = document["chords"][0]
        found["header_total"] = len(chord.header)
        found["header"] = found["header"][header_offset:header_offset + header_limit]
        document.update(verdict=_chord_verdict(snapshot, chord), history=self._history(chord))
        return _masked(document)

    def diagnoses(self) -> dict[str, Any]:
        """Every diagnosis code: severity, what it means, the next step."""
        return catalog_json()

    def doctor(self) -> dict[str, Any]:
        """The configuration's chord hazards and the installed Celery's known ones."""
        return _masked(doctor_json(self.app))

    def dead_letters(self, include_settled: bool = False, offset: int = 0, limit: int = 50,
                     ) -> dict[str, Any]:
        """The guard's dead letters (waiting ones, or all), newest first, a page at a time."""
        offset, limit = _page(offset, limit)
        store = self._store()
        if store is None:
            return {"schema": "chordguard.dlq/1", "store": None, "dead_letters": []}
        letters = store.dead_letters(None if include_settled else DLQ_DEAD,
                                     limit=offset + limit)
        return _masked({"schema": "chordguard.dlq/1", "store": store.describe(),
                        "offset": offset, "limit": limit,
                        "dead_letters": to_jsonable(letters[offset:offset + limit])})

    def dead_letter(self, letter_id: str) -> dict[str, Any]:
        """One dead letter: why, its inputs and the traceback."""
        store = self._require_store()
        letter = store.dead_letter(_id(letter_id))
        if letter is None:
            waiting(store, letter_id)  # raises the named error
        return _masked({"schema": "chordguard.dlq/1", "dead_letter": to_jsonable(letter)})

    # acting (registered only with --allow-actions)

    def revoke_chord(self, chord_id: str, reason: str = "", confirm: bool = False,
                     ) -> dict[str, Any]:
        """Fail one chord (callback FAILURE with ChordError, errbacks run in a guarded
        worker, pending header tasks revoked): the plan, or with ``confirm`` the deed."""
        chord_id = _id(chord_id)
        reason = _bounded(reason, "reason") or "failed on request (chordguard mcp)"
        snapshot, chord = find_chord(self.app, chord_id)
        if chord.ended is not None:
            raise ToolInputError(f"chord {chord.id} has already ended; nothing to do")
        if _chord_verdict(snapshot, chord) == "unknown":
            raise ToolInputError("not acting on a partial view: "
                                 + mask_text(chord.unseen or blind_spot(snapshot) or ""))
        if not confirm:
            plan = plan_fail(chord, reason, broker_kind(self.app))
        else:
            operator = OperatorFail(in_process=False)
            if chord.callback_state not in READY_STATES:
                operator.check(self.app, chord.callback_signature)
            plan = fail_chord(self.app, chord, reason, operator)
            self._snapshot = None
        return _masked({"schema": "chordguard.revoke/1", "dry_run": not confirm,
                        "chords": to_jsonable([plan])})

    def replay_dead_letter(self, letter_id: str, confirm: bool = False) -> dict[str, Any]:
        """Run a dead letter's callback once more with its stored inputs (after the fix)."""
        letter = self.dead_letter(letter_id)["dead_letter"]
        if not confirm:
            return {"schema": "chordguard.dlq/1", "dry_run": True, "would_replay": letter}
        return _masked({"schema": "chordguard.dlq/1",
                        "replayed": replay(self.app, self._require_store(), letter["id"])})

    def drop_dead_letter(self, letter_id: str, reason: str, confirm: bool = False,
                         ) -> dict[str, Any]:
        """Settle a dead letter without replaying it; the record and the reason stay."""
        reason = _bounded(reason, "reason")
        if not reason:
            raise ToolInputError("dropping a dead letter needs a reason")
        letter = self.dead_letter(letter_id)["dead_letter"]
        if not confirm:
            return {"schema": "chordguard.dlq/1", "dry_run": True, "would_drop": letter}
        return _masked({"schema": "chordguard.dlq/1",
                        "dropped": drop(self._require_store(), letter["id"], reason)})

    # helpers

    def _collect(self) -> Snapshot:
        with self._lock:
            now = time.monotonic()
            if self._snapshot is None or now - self._snapshot[0] > SNAPSHOT_SECONDS:
                self._snapshot = (now, collect(self.app,
                                               stuck_after_hours=self.stuck_after_hours))
            return self._snapshot[1]

    def _store(self) -> Store | None:
        url = configured_store(self.app)
        return open_store(str(url)) if url else None

    def _require_store(self) -> Store:
        store = self._store()
        if store is None:
            raise ToolInputError("no dead-letter queue: the guard's store is not configured "
                                 "(chordguard_store or CHORDGUARD_STORE)")
        return store

    def _history(self, chord: Chord) -> list[dict[str, Any]]:
        return store_view(self.app).journal(chord.id) or []


def _chord_verdict(snapshot: Snapshot, chord: Chord) -> str:
    """``problem`` (a blocking diagnosis), ``ok`` (seen and healthy, or ended) or
    ``unknown`` (what the snapshot saw cannot vouch for it)."""
    if chord.blocking:
        return "problem"
    if chord.ended is not None or not (chord.unseen or blind_spot(snapshot)):
        return "ok"
    return "unknown"


def _summary(chord: Chord) -> dict[str, Any]:
    out = to_jsonable(chord)
    out["header_total"] = len(out.pop("header"))
    out.pop("callback_signature", None)
    return out


def _page(offset: int, limit: int) -> tuple[int, int]:
    if not 0 <= offset <= 10_000_000:
        raise ToolInputError("offset must be between 0 and 10,000,000")
    if not 1 <= limit <= MAX_PAGE:
        raise ToolInputError(f"limit must be between 1 and {MAX_PAGE}")
    return offset, limit


def _id(value: str) -> str:
    value = (value or "").strip()
    if not value or len(value) > MAX_ID or not SAFE_ID.fullmatch(value):
        raise ToolInputError(f"not a chord, task or dead-letter id: {value[:60]!r}")
    return value


def _word(value: str) -> str:
    value = (value or "").strip()
    if len(value) > 64 or (value and not SAFE_ID.fullmatch(value)):
        raise ToolInputError(f"not a filter value: {value[:60]!r}")
    return value


def _bounded(value: str, name: str, limit: int = 500) -> str:
    value = (value or "").strip()
    if len(value) > limit:
        raise ToolInputError(f"{name} is longer than {limit} characters")
    return value


def _masked(document: Any) -> Any:
    """``document`` with a password in any URL it holds masked."""
    if isinstance(document, str):
        return mask_text(document)
    if isinstance(document, dict):
        return {key: _masked(value) for key, value in document.items()}
    if isinstance(document, list):
        return [_masked(value) for value in document]
    return document
