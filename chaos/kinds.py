"""The matrix's columns: how a chord is joined, with or without chordguard."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """``join``: ``redis`` (Celery's Redis chord), ``unlock`` (celery.chord_unlock over a
    PostgreSQL ``db+`` backend) or ``durable`` (``durable_chord``, no result backend);
    ``guarded``: ``chordguard.install(app)`` and a ``chord_callback``; ``store``: the server
    that holds the result backend and chordguard's store (``redis``, ``postgres``, ``sqlite``);
    ``fan_in``: the guard installed with ``fan_in="store"``, so the backend's chords (Redis or
    ``db+``, by ``join``) are joined by the store's barrier instead.
    """

    name: str
    join: str
    guarded: bool
    store: str
    fan_in: bool = False

    @property
    def server(self) -> str | None:
        """The private server a store fault hits (None: a local SQLite file)."""
        return None if self.store == "sqlite" else self.store


KINDS = [
    Kind("redis", "redis", False, "redis"),
    Kind("redis+guard", "redis", True, "redis"),
    Kind("unlock", "unlock", False, "postgres"),
    Kind("unlock+guard", "unlock", True, "postgres"),
    Kind("durable:redis", "durable", True, "redis"),
    Kind("durable:pg", "durable", True, "postgres"),
    Kind("durable:sqlite", "durable", True, "sqlite"),
    Kind("store:redis", "redis", True, "redis", fan_in=True),
    Kind("store:pg", "unlock", True, "postgres", fan_in=True),
]
