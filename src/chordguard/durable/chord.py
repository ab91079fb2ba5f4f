"""``durable_chord``: publish a header and a callback joined by a barrier in our store."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from celery import Celery, group
from celery.canvas import Signature, _chain, chord

from .._compat import publish_batch
from ..config import store_url
from ..errors import ConfigurationError
from ..store import open_store
from ..store.clock import store_now
from .actions import fail_durable_chord
from .barrier import Barrier, BarrierState, Policy
from .dispatch import HEADER_KEY, dispatch
from .handle import DurableChord
from .hook import enable

DEFAULT_DEADLINE = 86400.0
DEFAULT_STALL = 3600.0
BY_REFERENCE_ABOVE = 1000  # parts; larger chords hand the callback a LazyResults


def durable_chord(header: Iterable[Signature] | group, callback: Signature,
                  deadline: float | timedelta | datetime | None = None,
                  on_header_failure: str = "fail", store: str | None = None,
                  stall_timeout: float | None = None, by_reference: bool | None = None,
                  app: Celery | None = None) -> DurableChord:
    """Run ``header`` in parallel, then ``callback`` with their results in header order.

    ``deadline``: seconds from now, a timedelta or an aware datetime (default
    ``chordguard_deadline`` or 24 h); ``stall_timeout``: seconds without a finished part
    before the reaper fails the chord (``chordguard_stall_timeout`` or 1 h).
    ``on_header_failure``: ``"fail"`` or ``"continue"`` (the callback gets every envelope).
    ``store``: a store URL instead of the app's. ``by_reference``: hand the callback a lazy
    sequence instead of a list (default: above 1,000 parts).
    Raises ConfigurationError for bad arguments, UnreachableError if the store is down
    (then nothing was published).
    """
    app = app or callback.app
    parts = list(header.tasks if isinstance(header, group) else header)
    for sig in [*parts, callback]:
        if not isinstance(sig, Signature) or isinstance(sig, group | _chain | chord):
            raise ConfigurationError(f"durable_chord takes plain task signatures, not {sig!r}")
    try:
        policy = Policy(on_header_failure)
    except ValueError:
        raise ConfigurationError("on_header_failure must be 'fail' or 'continue', not "
                                 f"{on_header_failure!r}") from None
    enable(app)
    barriers = open_store(store_url(app, store))
    now = store_now(barriers)  # deadlines are judged on the store's clock
    deadline_at = _deadline(app, deadline, now)
    stall = float(stall_timeout or app.conf.get("chordguard_stall_timeout") or DEFAULT_STALL)
    callback = callback.clone()
    callback.freeze()
    header_ids = [sig.id or uuid.uuid4().hex for sig in parts]  # no copies: ids only
    barrier = Barrier(
        id=uuid.uuid4().hex, app=app.main or "", state=BarrierState.WAITING, policy=policy,
        total=len(parts), remaining=len(parts), callback=dict(callback),
        callback_id=callback.id, created_at=now, updated_at=now, deadline_at=deadline_at,
        stall_seconds=stall, by_reference=len(parts) > BY_REFERENCE_ABOVE
        if by_reference is None else by_reference, store=store,
        header_ids=header_ids)
    if not parts:
        barrier.state, barrier.claim_token = BarrierState.DISPATCHING, uuid.uuid4().hex
        barrier.claimed_at = now
        barriers.create_barrier(barrier)
        dispatch(app, barriers, barrier, [])
    else:
        barriers.create_barrier(barrier)
        _publish(app, barrier, parts)
    return DurableChord(app, barrier.id, callback.id, store)


def _publish(app: Celery, barrier: Barrier, parts: list[Signature]) -> None:
    try:
        with app.producer_or_acquire() as producer, publish_batch(producer):
            for index, (sig, task_id) in enumerate(zip(parts, barrier.header_ids, strict=True)):
                headers = dict(sig.options.get("headers") or {})
                headers[HEADER_KEY] = {"b": barrier.id, "i": index, "a": barrier.app,
                                       "s": barrier.store, "d": barrier.deadline_at}
                sig.apply_async(producer=producer, headers=headers, task_id=task_id)
    except Exception as exc:
        fail_durable_chord(app, barrier.id, f"publishing the header failed: {exc}",
                           store=barrier.store)
        raise


def _deadline(app: Celery, deadline: float | timedelta | datetime | None, now: float) -> float:
    if deadline is None:
        deadline = float(app.conf.get("chordguard_deadline") or DEFAULT_DEADLINE)
    if isinstance(deadline, datetime):
        if deadline.tzinfo is None:
            raise ConfigurationError("deadline datetime must be timezone-aware")
        return deadline.timestamp()
    seconds = deadline.total_seconds() if isinstance(deadline, timedelta) else float(deadline)
    if seconds <= 0:
        raise ConfigurationError(f"deadline must be in the future, got {seconds:g} s")
    return now + seconds
