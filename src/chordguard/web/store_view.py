"""What the dashboard reads from the guard's store: journal history, dead letters, breakers.

Without a configured store (``app.conf.chordguard_store`` or ``CHORDGUARD_STORE``) every
read answers "nothing known" and the dead-letter page says the queue does not exist.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from ..errors import ChordguardError
from ..metrics import StoreFigures


class UnknownDeadLetterError(ChordguardError):
    """No dead letter has that id."""


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

    def replay(self, letter_id: str, reason: str) -> Any:
        raise UnknownDeadLetterError(f"unknown dead letter {letter_id!r}")

    def drop(self, letter_id: str, reason: str) -> Any:
        raise UnknownDeadLetterError(f"unknown dead letter {letter_id!r}")


def store_view(app: Celery) -> StoreView:
    """The view of the store ``app`` is configured with (a null view when there is none)."""
    return StoreView()
