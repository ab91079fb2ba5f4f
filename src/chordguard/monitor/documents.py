"""The JSON documents every view returns (docs/json.md): the CLI's ``--json``, the MCP
server's tool results."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import celery
from celery import Celery

from ..coordination import kind_of
from ..model import Chord, Snapshot, json_default, to_jsonable
from .api import health_from
from .celery_hazards import hazards
from .diagnose import CATALOG
from .doctor import config_from_app, lint

SCHEMA_VERSION = 1
JSON_PAGE = 500  # chords serialised per write


def snapshot_head(snapshot: Snapshot, command: str) -> dict[str, Any]:
    """Every field of the ``status``/``check``/``inspect`` document but its chords."""
    return {"schema": f"chordguard.{command}/{SCHEMA_VERSION}",
            "taken_at": snapshot.taken_at.isoformat(),
            "celery_version": snapshot.celery_version, "health": health_from(snapshot),
            "sources": to_jsonable(snapshot.sources)}


def snapshot_json(snapshot: Snapshot, command: str, chords: list[Chord] | None = None,
                  ) -> dict[str, Any]:
    """The documented ``--json`` document (docs/json.md), as one dictionary."""
    chosen = snapshot.chords if chords is None else chords
    return {**snapshot_head(snapshot, command), "chords_total": len(chosen),
            "next_offset": None, "chords": to_jsonable(chosen)}


def write_snapshot_json(write: Callable[[str], Any], snapshot: Snapshot, command: str,
                        chords: list[Chord] | None = None, limit: int = 0,
                        offset: int = 0) -> None:
    """The same document, the chords from ``offset``, at most ``limit`` of them (0: all),
    written a page at a time (one chord per line), so 100,000 chords are never one string
    in memory."""
    chosen = snapshot.chords if chords is None else chords
    end = len(chosen) if not limit else min(len(chosen), offset + limit)
    head = {**snapshot_head(snapshot, command), "chords_total": len(chosen),
            "next_offset": end if end < len(chosen) else None}
    write(json.dumps(head, default=json_default)[:-1] + ', "chords": [')
    for start in range(offset, end, JSON_PAGE):
        page = chosen[start:min(end, start + JSON_PAGE)]
        write(("\n" if start == offset else ",\n") +
              ",\n".join(json.dumps(c, default=json_default) for c in page))
    write("\n]}\n")


def doctor_json(app: Celery) -> dict[str, Any]:
    """``chordguard doctor --json``: the configuration's chord hazards (asks the workers which
    store they use), the installed Celery's known hazards."""
    config = config_from_app(app, ask_workers=True)
    kind = kind_of(app)
    return {"schema": f"chordguard.doctor/{SCHEMA_VERSION}", "chord_kind": kind and kind.value,
            "findings": to_jsonable(lint(config)),
            "celery": {"version": celery.__version__, "supported": config.celery.supported,
                       "hazards": to_jsonable(hazards(config.celery))}}


def catalog_json() -> dict[str, Any]:
    """Every diagnosis code: its severity, what it means and the next step."""
    return {"schema": f"chordguard.diagnoses/{SCHEMA_VERSION}",
            "diagnoses": [{"code": c.code, "severity": c.severity.value,
                           "explanation": c.explanation, "next_step": c.next_step}
                          for c in CATALOG.values()]}
