"""What the dashboard reads from the guard's store: journal history, dead letters, breakers.

The store is the one the app's guard uses (``app.conf.chordguard_store``) or
``CHORDGUARD_STORE``; with neither, every read answers "nothing known" and the dead-letter
page says there is no queue.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from celery import Celery

from .._urls import mask_text
from ..config import configured_store
from ..errors import ChordguardError, UnreachableError
from ..store import Store, open_store
from ..store.records import DLQ_DEAD, ChordRecord, jsonable
from .metrics import StoreFigures

log = logging.getLogger(__name__)
T = TypeVar("T")

DLQ_COUNT_LIMIT = 100_000


class StoreView:
    """No store: nothing recorded, no dead-letter queue."""

    has_dead_letters = False

    def refresh(self) -> None:
        """Re-read the figures (runs in the collection thread)."""

    def figures(self) -> StoreFigures:
        return StoreFigures()

    def journal(self, chord_id: str) -> list[dict[str, Any]] | None:
        return None

    def dead_letters(self) -> list[dict[str, Any]] | None:
        return None


def _reads_store(method: Callable[..., T]) -> Callable[..., T]:
    """A store failure (database or Redis error) becomes an UnreachableError naming it."""

    @functools.wraps(method)
    def guarded(self: JournalView, *args: Any) -> T:
        try:
            return method(self, *args)
        except ChordguardError:
            raise
        except Exception as exc:  # driver errors of SQLAlchemy/redis-py, whatever they are
            raise UnreachableError(f"store {self.store.describe()}: "
                                   f"{mask_text(str(exc)) or type(exc).__name__}") from exc

    return guarded


class JournalView(StoreView):
    """The guard's store: its journal, dead letters and circuit breakers."""

    has_dead_letters = True

    def __init__(self, app: Celery, store: Store) -> None:
        self.app, self.store = app, store
        self._figures = StoreFigures()

    def refresh(self) -> None:
        """Keeps the last figures when the store does not answer (logged)."""
        try:
            self._figures = self._read_figures()
        except UnreachableError as exc:
            log.warning("%s", exc)

    @_reads_store
    def _read_figures(self) -> StoreFigures:
        dead = len(self.store.dead_letters(state=DLQ_DEAD, limit=DLQ_COUNT_LIMIT))
        return StoreFigures(dead_letters=dead,
                            breakers={b.name: b.state for b in self.store.breakers()})

    def figures(self) -> StoreFigures:
        return self._figures

    @_reads_store
    def journal(self, chord_id: str) -> list[dict[str, Any]]:
        record = self.store.chord(chord_id)
        return [] if record is None else history(record, self.store.parts(chord_id))

    @_reads_store
    def dead_letters(self) -> list[dict[str, Any]]:
        return [{"id": letter.id, "state": letter.state, "chord_id": letter.chord_id,
                 "callback": letter.callback_name, "reason": letter.reason,
                 "error": letter.error, "created": _when(letter.created_at),
                 "note": letter.note, "inputs": jsonable(letter.inputs)}
                for letter in self.store.dead_letters()]


def history(record: ChordRecord, parts: dict[str, str]) -> list[dict[str, Any]]:
    """The journal's account of one chord, as dated lines (undated facts last)."""
    lines = [{"at": _when(record.created_at), "event": "published",
              "detail": f"callback {record.callback_name or '?'} ({record.callback_id or '?'}), "
                        f"{len(record.header_ids)} header task(s), kind {record.kind}"
                        + (f", deadline {_when(record.deadline_at)}" if record.deadline_at
                           else "")}]
    if record.last_progress_at:
        lines.append({"at": _when(record.last_progress_at), "event": "last progress",
                      "detail": f"{record.done} part(s) done, {record.failed} failed"})
    if record.ended_at:
        lines.append({"at": _when(record.ended_at), "event": record.state,
                      "detail": record.reason or ""})
    if record.polls or record.duplicates:
        lines.append({"at": None, "event": "unlock polls",
                      "detail": f"{record.polls} poll(s), {record.duplicates} duplicate "
                                "chain(s) stopped"})
    lines += [{"at": None, "event": f"part {task_id}", "detail": state}
              for task_id, state in parts.items()]
    return lines


def _when(stamp: float | None) -> str | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC).isoformat()


def store_view(app: Celery) -> StoreView:
    """The view of the store ``app``'s guard is configured with (a null view without one)."""
    url = configured_store(app)
    return JournalView(app, open_store(str(url))) if url else StoreView()
