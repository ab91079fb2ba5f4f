"""Redis-native chords: in-flight chords read from Celery's own chord keys in the result backend.

Progress: ``total`` = ``.s`` + ``.t``, ``done`` = entries of ``.j``, ``failed`` = entries whose
state is a failure. Times: every part return resets the TTL of ``.s``/``.j`` to
``chord_expires`` (``result_chord_expires``, else ``result_expires``), and ``set_chord_size``
sets it when the chord is applied, so ``chord_expires - TTL`` is the time since the last part
returned (or since the chord was applied, when none has). Celery keeps no creation time once
a part has returned: age is then a lower bound, said so in its basis.

Pending parts, the callback and parts held nowhere come from the header messages in the
snapshot's shared look at workers and queues (``redis_holdings``); a look that suggests a
lost part is confirmed by a second one, as for unlock chords.

Chords that are over are left out: only a ``done`` marker left (``.c``), or a failed part in
``.j`` once Celery failed the callback with a ChordError (5.7 then deletes ``.s``; 5.3 - 5.6
leave every key, complete, until it expires).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from threading import Thread
from typing import Any

from celery import Celery

from ..._compat import redis_chord_expires
from ..._timeouts import within
from ..._urls import mask_text
from ...model import FAILED_STATES, Chord, ChordKind, ClusterFacts, Duration, HeaderPart
from ..diagnose import lost_header
from . import Source, joined_by
from .holdings import Holdings, Observation, confirm_pause, facts_from, gaps, unseen
from .redis_holdings import attach, members_by_chord, set_callback_state, unattributed
from .redis_keys import SUFFIXES, RawChord, RawPart, read_chords, read_metas, scan_group_ids
from .results import read_states

NAME = "redis_chords"
STREAM = 5000  # chords read and modelled per step


def read(app: Celery, facts: ClusterFacts, holdings: Holdings) -> list[Chord]:
    """In-flight chords from their keys, completed by what workers and queues hold (the look
    is taken while the keys are read: a part that moves meanwhile is seen twice or, seen
    nowhere, confirmed by a second look as ever). A look that fails or is late costs the
    claims it would support, never the chords."""
    chords = read_keys(app, facts, early=holdings.first)
    if not chords:
        return chords
    deadline = time.monotonic() + facts.look_budget
    try:
        looks = within(facts.look_budget, "workers and queues", holdings.first)
    except Exception as exc:
        for chord in chords:
            chord.evidence["holdings"] = f"unknown: {_why(exc)}"
            chord.evidence["callback"] = "unknown: no header message could be read"
            chord.unseen = "the look at workers and queues failed (why: its evidence)"
        return chords
    chords = see_holdings(app, chords, looks, facts)
    unconfirmed = ""
    first = facts_from(looks, facts)
    suspects = {c.id for c in chords if lost_header(c, first)}
    if suspects:  # confirm: a second look, and the suspects' keys read again
        try:
            looks = within(max(0.0, deadline - time.monotonic()), "workers and queues (again)",
                           holdings.confirm, confirm_pause(facts.retry_interval))
            again = {c.id: c for c in see_holdings(app, read_keys(app, facts, suspects),
                                                   looks, facts)}
            chords = [again[c.id] if c.id in suspects else c for c in chords
                      if c.id not in suspects or c.id in again]
        except Exception as exc:
            unconfirmed = f"; parts seen nowhere not confirmed by a second look ({_why(exc)})"
    problems = [p for look in looks for p in look.problems]
    for chord in chords:
        chord.evidence["observations"] = f"{len(looks)} (inspect round + broker peek)" + \
            ("; problems: " + "; ".join(dict.fromkeys(problems)) if problems else "")
        if unconfirmed:
            chord.unaccounted = None
            chord.evidence["holdings"] += unconfirmed
    holdings.fill(facts, looks)
    if unconfirmed:
        facts.holdings_complete = False
    missing = gaps(looks) + ([unconfirmed.removeprefix("; ")] if unconfirmed else [])
    for chord in chords:
        chord.unseen = unseen(chord, facts, missing)
    return chords


def _quietly(look: Callable[[], object]) -> None:
    """Take the shared look now; its outcome (or failure) is kept by ``Holdings``."""
    with contextlib.suppress(Exception):
        look()


def _why(exc: BaseException) -> str:
    return mask_text(str(exc)) or type(exc).__name__


def read_keys(app: Celery, facts: ClusterFacts, only: set[str] | None = None,
              early: Callable[[], object] | None = None) -> list[Chord]:
    """In-flight chords as their Redis keys alone show them (all, or the group ids ``only``),
    modelled ``STREAM`` chords at a time: the raw keys of one batch are dropped before the
    next is read, so memory holds the models, not the keys. ``early`` (the shared look) is
    started once chord keys are found, to run while they are read."""
    backend = app.backend
    client = backend.client
    ids = sorted(scan_group_ids(client, backend.group_keyprefix) if only is None else only)
    if ids and early is not None:
        Thread(target=_quietly, args=(early,), daemon=True).start()
    options = app.conf.get("result_backend_transport_options") or {}
    ordered = bool(options.get("result_chord_ordered", True))  # as RedisBackend._chord_zset
    expires = redis_chord_expires(backend)
    prefix = backend.group_keyprefix.decode(errors="replace")
    chords: list[Chord] = []
    for start in range(0, len(ids), STREAM):
        raws = [raw for raw in read_chords(client, backend.group_keyprefix, ordered,
                                           ids[start:start + STREAM]) if in_flight(raw)]
        read_metas(client, backend.task_keyprefix, raws)
        chords += [to_chord(raw, expires, facts.now, prefix) for raw in raws]
    return chords


def see_holdings(app: Celery, chords: list[Chord], looks: list[Observation],
                 facts: ClusterFacts) -> list[Chord]:
    """``chords`` with their pending parts, callback and unaccounted count from ``looks``;
    the queues of pending parts go into ``facts.queued`` (for ``no_consumer``). A callback's
    state is read only where the count may be complete: Celery publishes it then, never
    before (its state stays unknown, None, otherwise)."""
    seen = members_by_chord(looks)
    unknown_held = max(unattributed(look) for look in looks)
    for chord in chords:
        facts.queued.update(attach(chord, seen.get(chord.id, []), unknown_held))
    published = [c for c in chords if c.callback_id and (c.total is None or c.done >= c.total)]
    states, _ = read_states(app, [c.callback_id for c in published])
    for chord in published:
        set_callback_state(chord, states)
    return chords


def in_flight(raw: RawChord) -> bool:
    """False for keys of a chord that is over (see the module docstring)."""
    if not any(raw.exists(s) for s in (".s", ".j", ".t", ".d")):
        return False
    complete = raw.size is not None and len(raw.parts) >= raw.size + raw.extra
    failed = any(p.state in FAILED_STATES for p in raw.parts)
    # Celery failed it: 5.7 deletes .s, 5.3 - 5.6 leave every key until it expires
    return not (failed and (complete or not raw.exists(".s")))


def to_chord(raw: RawChord, expires: int, now: datetime, group_prefix: str) -> Chord:
    """The model of one chord from its raw keys (pure)."""
    chord = Chord(id=raw.group_id, kind=ChordKind.REDIS, sources=[NAME])
    chord.done = len(raw.parts)
    chord.failed = sum(1 for p in raw.parts if p.state in FAILED_STATES)
    chord.header = [header_part(p) for p in raw.parts if p.task_id]
    chord.header.sort(key=lambda p: (p.index is None, p.index or 0))
    for suffix in SUFFIXES:
        ttl = raw.ttl_ms.get(suffix, -2)
        if suffix == ".s" or ttl != -2:
            seconds = None if ttl == -2 else (-1 if ttl == -1 else ttl // 1000)
            chord.redis_keys[group_prefix + raw.group_id + suffix] = seconds
    if raw.size is not None:
        chord.total = raw.size + raw.extra
        chord.evidence["total"] = f".s = {raw.size}" + (f" + .t = {raw.extra}" if raw.extra
                                                        else "") + " (header size)"
    else:
        chord.evidence["total"] = "unknown: the .s counter key is gone"
    chord.evidence["done"] = f"{chord.done} entries in .j (finished header parts)"
    if raw.undecodable:
        chord.evidence["done"] += f"; {raw.undecodable} not JSON-encoded, states unknown"
    if chord.failed:
        chord.evidence["failed"] = f"{chord.failed} .j entries in a failure state"
    if raw.claim:
        chord.evidence["claim"] = f".c = {raw.claim!r}: a worker claimed the callback dispatch"
    chord.idle = idle(raw, expires)
    chord.age = age(raw, chord.idle, now)
    if chord.age and not chord.age.lower_bound:
        chord.created_at = now - timedelta(seconds=chord.age.seconds)
    for name in ("idle", "age"):
        span = getattr(chord, name)
        chord.evidence[name] = span.basis if span else _no_time(raw, expires)
    return chord


def header_part(raw: RawPart) -> HeaderPart:
    meta = raw.meta or {}
    return HeaderPart(task_id=raw.task_id or "", state=raw.state, index=raw.index,
                      name=meta.get("name"), date_done=_date(meta.get("date_done")),
                      result=raw.result, traceback=meta.get("traceback"))


def idle(raw: RawChord, expires: int) -> Duration | None:
    """Time since the last part returned (or since the chord was applied), from a key's TTL."""
    suffix = ".s" if raw.exists(".s") else ".j"
    ttl_ms = raw.ttl_ms.get(suffix, -2)
    if not expires or ttl_ms < 0 or ttl_ms > expires * 1000 + 1000:
        return None
    since = "the chord was applied (set_chord_size)" if not raw.parts else \
        "the last header part returned"
    basis = (f"since {since}: chord_expires {expires} s - {suffix} TTL {ttl_ms / 1000:.0f} s "
             f"(exact unless something else re-set the key's expiry)")
    return Duration(max(0.0, expires - ttl_ms / 1000), basis)


def age(raw: RawChord, idle_span: Duration | None, now: datetime) -> Duration | None:
    """Exact before any part returns; afterwards the best lower bound, which says what it is."""
    if not raw.parts:
        if idle_span is None:
            return None
        return Duration(idle_span.seconds, "exact: no header part has returned, so the .s "
                        "TTL still counts from set_chord_size")
    dates = [(d, p.task_id) for p in raw.parts if (d := _date((p.meta or {}).get("date_done")))]
    first = min(dates, default=None)
    by_date = (now - first[0]).total_seconds() if first else 0.0
    by_idle = idle_span.seconds if idle_span else 0.0
    if not first and idle_span is None:
        return None
    if first and by_date >= by_idle:
        basis = (f"≥: header part {first[1]} finished {first[0].isoformat()} "
                 f"(earliest date_done of {len(dates)} part(s) read); Celery keeps no creation "
                 "time")
        return Duration(max(0.0, by_date), basis, lower_bound=True)
    return Duration(by_idle, "≥ idle: a part returned since the chord was applied; Celery keeps "
                    "no creation time", lower_bound=True)


def _no_time(raw: RawChord, expires: int) -> str:
    if not expires:
        return "unknown: chord keys never expire here (result_chord_expires/result_expires 0)"
    ttl = max(raw.ttl_ms.get(".s", -2), raw.ttl_ms.get(".j", -2))
    if ttl == -1:
        return "unknown: the chord keys have no expiry"
    if ttl > expires * 1000:
        return (f"unknown: key TTL {ttl // 1000} s exceeds this app's chord_expires {expires} s "
                "(workers configured differently?)")
    return "unknown: neither .s nor .j exists"


def _date(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


SOURCE = Source(NAME, joined_by(ChordKind.REDIS), read, needs=("backend",))
