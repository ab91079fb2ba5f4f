"""Ending a durable chord by hand (``chordguard revoke`` calls ``fail_durable_chord``), and
what the reaper does to the headers of a chord it failed (``drop_unfinished_headers``)."""

from __future__ import annotations

import time
import uuid

from celery import Celery

from ..actions.callback import OperatorFail
from ..actions.queued import broker_kind, remove_queued
from ..config import store_url
from ..store import Store, open_store
from .barrier import Barrier
from .dispatch import fail_chord


def fail_durable_chord(app: Celery, chord_id: str, reason: str = "failed by request",
                       store: str | None = None, revoke_headers: bool = True,
                       operator: OperatorFail | None = None) -> Barrier | None:
    """Fail an in-flight durable chord: the barrier records ``reason``, the callback is
    marked FAILURE with a ChordError and its errbacks run; header tasks not finished yet
    are revoked. ``operator``: called from an operator's process (see ``OperatorFail``).
    Returns the failed barrier, or None when it had already ended or is unknown.
    """
    barriers = open_store(store_url(app, store))
    barrier = barriers.fail_barrier(chord_id, reason, time.time(), uuid.uuid4().hex)
    if barrier is None:
        return None
    if revoke_headers:
        ids = barriers.barrier(chord_id, with_header_ids=True)
        if ids is not None and ids.header_ids:
            app.control.revoke(ids.header_ids)
    fail_chord(app, barriers, barrier, reason, operator)
    return barrier


def drop_unfinished_headers(app: Celery, barriers: Store, chord_id: str) -> list[str]:
    """Revoke the header tasks of failed chord ``chord_id`` that never reported, and remove
    their messages still on a Redis broker (``actions.queued``); return their ids."""
    full = barriers.barrier(chord_id, with_header_ids=True)
    if full is None or not full.header_ids:
        return []
    envelopes = barriers.envelopes(chord_id, 0, full.total)
    ids = [task_id for task_id, envelope in zip(full.header_ids, envelopes, strict=False)
           if envelope is None]
    if ids:
        app.control.revoke(ids)
        if broker_kind(app) == "redis":
            remove_queued(app, ids)
    return ids
