"""Errbacks Celery already ran for a failure in a chord's header are not run again.

Celery fails a chord nested in another chord's header by failing the inner body and running
its errbacks (``chord.link_error`` links the outer chord's errback there as well, whatever
``task_allow_error_cb_on_chord_header``), and leaves the outer body PENDING. When the guard
ends the outer chord, an errback of its body that the failed inner body also had has already
run for this failure. So at publication the journal notes which chord each header part ends
(``note_parts``, only for a chord whose body is another chord's header part); at the end,
``already_run`` reads the errbacks of every part Celery recorded as FAILURE from that
chord's journaled body, and ``without`` drops them from the body about to be failed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from ..store import Store
from .body import UnknownBody, final_tasks

PART = "chordguard:part-of:"  # + a header part's task id -> the chord whose body it ends


def note_parts(store: Store, chord_id: str, body: Any) -> None:
    """Remember that ``body``'s final tasks end chord ``chord_id``, when ``body`` is itself
    a part of another chord's header (Celery sets its ``chord`` option)."""
    if not (body.get("options") or {}).get("chord"):
        return
    try:
        finals = final_tasks(body)
    except UnknownBody:
        return
    store.claim_all({PART + task["options"]["task_id"]: chord_id for task in finals})


def already_run(store: Store, states: Mapping[str, str]) -> set[str]:
    """Keys (``key``) of the errbacks Celery ran when it failed one of these header parts
    (``states``: task id -> state): those of each FAILURE part that ends a journaled chord."""
    ran: set[str] = set()
    for task_id, state in states.items():
        if state != "FAILURE":
            continue
        inner = store.lease_holder(PART + task_id)
        record = store.chord(inner) if inner else None
        if record is not None and record.callback:
            ran |= {key(e) for e in _errbacks(record.callback)}
    return ran


def without(callback: Mapping[str, Any], ran: set[str]) -> dict[str, Any]:
    """A copy of the body ``callback`` (a signature's dict) without the errbacks in ``ran``,
    on it or on any task inside it."""
    body = copy.deepcopy(dict(callback))
    for node in _nodes(body):
        options = node.get("options") or {}
        if options.get("link_error"):
            options["link_error"] = [e for e in options["link_error"] if key(e) not in ran]
    return body


def key(errback: Mapping[str, Any]) -> str:
    """What makes two linked errbacks the same: the task, its arguments."""
    return json.dumps([errback.get("task"), list(errback.get("args") or ()),
                       dict(errback.get("kwargs") or {})], sort_keys=True, default=repr)


def _errbacks(callback: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [e for node in _nodes(callback)
            for e in (node.get("options") or {}).get("link_error") or []]


def _nodes(signature: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """``signature`` and every signature inside it (group and chain tasks, a chord's body)."""
    found, pending = [], [signature]
    while pending:
        node = pending.pop()
        found.append(node)
        kwargs = node.get("kwargs") or {}
        pending += [t for t in kwargs.get("tasks") or [] if isinstance(t, Mapping)]
        if isinstance(kwargs.get("body"), Mapping):
            pending.append(kwargs["body"])
    return found
