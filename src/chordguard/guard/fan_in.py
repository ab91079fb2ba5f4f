"""``fan_in="store"``: the app's result backend joins its chords through chordguard's barrier.

The backend's join is two methods (``apply_chord`` when a chord is published,
``on_chord_part_return`` when each part ends); both are wrapped on every backend instance
the app makes, lazily (the factory is wrapped; nothing touches ``app.backend`` here):

- ``apply_chord``: a chord of a shape the store joins (see ``_parts``) gets a barrier whose
  id is the group id (policy ``celery``, the guard's deadline) instead of Celery's join — no
  ``celery.chord_unlock``, no Redis counter keys — and its body is marked (``MARK`` in its
  options) so the header tasks, which carry the body, know. Any other chord, or any chord
  when the store refuses the barrier, is joined by the backend exactly as Celery joins it;
- ``on_chord_part_return``: a marked part records its result once under its
  ``group_index`` (``durable.hook.record_part``); the completion that counts the last part
  claims the dispatch (``durable.dispatch``). Unmarked parts go to the backend's own join;
- ``set_chord_size`` (Celery sizes a chord while publishing its header) is skipped for
  store-joined chords; ``add_to_chord`` (``Task.add_to_chord``) grows the barrier by one
  part and gives the added task its own place in the body's mark (``"x"``: task id ->
  index), since it inherits the adding task's ``group_index``.

Chords published before the switch carry no mark and finish the way they started.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from celery._state import get_current_task
from celery.result import AsyncResult, ResultSet
from celery.states import PROPAGATE_STATES
from celery.utils.functional import _regen

from ..coordination import join_of
from ..durable.barrier import failed
from ..durable.hook import record_part
from ..errors import BarrierExists
from ..model import FAN_IN_MARK, ChordKind
from ..store.clock import store_now
from ..store.records import Barrier, BarrierState, Policy, dumps
from .backends import on_every_backend
from .journal import DEADLINE_OPTION
from .state import Guard

logger = logging.getLogger(__name__)
MARK = FAN_IN_MARK  # option on a store-joined chord's body: {"a", "s", "d"}
WRAPPED = "_chordguard_fan_in"
MAX_ID = 64  # longest group/callback id a barrier holds
_sized: OrderedDict[str, int] = OrderedDict()  # group id -> parts, until Celery sizes it
SIZED_KEPT = 10_000
UNROLLING_JOINS = (ChordKind.UNLOCK, ChordKind.DJANGO)  # Celery's joins that list the header


def wrap(guard: Guard) -> None:
    """Join every chord of the guard's app through the store, from any thread."""
    on_every_backend(guard.app, lambda backend: _wrap_backend(guard, backend))


def _wrap_backend(guard: Guard, backend: Any) -> None:
    if getattr(backend, WRAPPED, False):
        return
    celery_apply, celery_part = backend.apply_chord, backend.on_chord_part_return
    celery_size, celery_add = backend.set_chord_size, backend.add_to_chord

    def apply_chord(header_result_args: Any, body: Any, **kwargs: Any) -> Any:
        body.options.pop(MARK, None)  # a frozen chord applied again is a new run
        if not _join(guard, backend, header_result_args, body):
            return celery_apply(header_result_args, body, **kwargs)
        return None

    def on_chord_part_return(request: Any, state: str, result: Any, **kwargs: Any) -> Any:
        mark = marked(request)
        if mark is None:
            return celery_part(request, state, result, **kwargs)
        _record(guard, backend, request, mark, state, result)
        return None

    def set_chord_size(group_id: str, chord_size: int) -> Any:
        parts = _sized.pop(group_id, None)
        if parts is None:
            return celery_size(group_id, chord_size)
        if parts != chord_size:  # _parts admits no shape where Celery counts otherwise
            logger.error("chordguard: chord %s has %d parts, Celery counts %d: it will not "
                         "end by itself (the reaper fails it at its deadline)", group_id,
                         parts, chord_size)
        return None

    def add_to_chord(group_id: str, result: Any) -> Any:
        request = getattr(get_current_task(), "request", None)
        mark = marked(request) if getattr(request, "group", None) == group_id else None
        if mark is None:
            return celery_add(group_id, result)
        index = guard.store.grow_barrier(group_id)
        if index is None:
            raise ValueError(f"chord {group_id} no longer waits for parts")
        # the added task carries this very body (Task.add_to_chord): its place goes with it
        mark.setdefault("x", {})[result.id] = index
        return None

    backend.apply_chord, backend.on_chord_part_return = apply_chord, on_chord_part_return
    backend.set_chord_size, backend.add_to_chord = set_chord_size, add_to_chord
    setattr(backend, WRAPPED, True)


def marked(request: Any) -> dict | None:
    """The mark of a store-joined chord on a header part's request, or None."""
    body = getattr(request, "chord", None)
    mark = (body.get("options") or {}).get(MARK) if isinstance(body, dict) else None
    return mark if isinstance(mark, dict) else None


def _parts(app: Any, backend: Any, header_result_args: Any, body: Any) -> list[str] | None:
    """The header's task ids when the store can join this chord as Celery would, else None:
    JSON results, single results (not groups: Celery rebuilds those from a saved
    GroupResult), ids a barrier holds. A generator header is unrolled here where the
    backend's own join unrolls it too (chord_unlock, django-db: the tasks it yields are
    frozen once, publication reuses them); Celery's Redis join publishes while it unrolls,
    and keeps such a chord."""
    if str(app.conf.result_serializer) != "json":
        return None
    results = header_result_args[1]
    if isinstance(results, _regen):
        if join_of(type(backend)).kind not in UNROLLING_JOINS:
            return None
        results = list(results)
    if not isinstance(results, list | tuple) or not results:
        return None
    if any(not isinstance(r, AsyncResult) or isinstance(r, ResultSet) for r in results):
        return None
    if len(str(header_result_args[0])) > MAX_ID or not body.id or len(body.id) > MAX_ID:
        return None
    return [r.id for r in results]


def _join(guard: Guard, backend: Any, header_result_args: Any, body: Any) -> bool:
    """Create the chord's barrier and mark its body; False: Celery's join takes it."""
    app = guard.app
    header_ids = _parts(app, backend, header_result_args, body)
    if header_ids is None:
        return False
    group_id = str(header_result_args[0])
    seconds = float(body.options.get(DEADLINE_OPTION) or guard.settings.deadline)
    try:
        now = store_now(guard.store)  # deadlines are judged on the store's clock
        stall = float(app.conf.get("chordguard_stall_timeout") or seconds)
        guard.store.create_barrier(Barrier(
            id=group_id, app=app.main or "", state=BarrierState.WAITING,
            policy=Policy.CELERY, total=len(header_ids), remaining=len(header_ids),
            callback=dict(body), callback_id=body.id, created_at=now, updated_at=now,
            deadline_at=now + seconds, stall_seconds=stall, header_ids=header_ids))
    except BarrierExists:
        logger.warning("chordguard: chord %s was joined by the store before; this run is "
                       "joined by Celery", group_id)
        return False
    except Exception:  # the store is down: Celery's own join, exactly as without us
        logger.exception("chordguard: no barrier for chord %s; Celery joins it", group_id)
        return False
    body.options.pop(DEADLINE_OPTION, None)
    body.options[MARK] = {"a": app.main or "", "s": None, "d": now + seconds}
    _sized[group_id] = len(header_ids)
    while len(_sized) > SIZED_KEPT:  # a header that failed to publish is never sized
        _sized.popitem(last=False)
    return True


def _record(guard: Guard, backend: Any, request: Any, mark: dict, state: str,
            result: Any) -> None:
    """Record one part; dispatch or fail the chord if it was the last. Never raises into
    Celery's task tracer: a dispatch that failed is the reaper's (after the claim grace)."""
    task_id, group_id = request.id, request.group
    try:
        index = _index(guard, request, mark)
        if index is None:
            logger.error("chordguard: part %s of chord %s has no place in its barrier",
                         task_id, group_id)
            return
        envelope, is_failure = _envelope(backend, task_id, state, result)
        meta = {"b": group_id, "i": index, "a": mark.get("a"), "s": mark.get("s"),
                "d": mark.get("d")}
        record_part(guard.app, meta, task_id, envelope, is_failure,
                    f"header part {index} ({task_id}) ended {state}")
    except Exception:
        logger.exception("chordguard: part %s of chord %s: recording or dispatching failed; "
                         "the reaper takes over", task_id, group_id)


def _envelope(backend: Any, task_id: str, state: str, result: Any) -> tuple[str, bool]:
    """The part as the barrier keeps it (JSON), and whether it failed: its result, or its
    exception as the backend encodes it (``dispatch`` rebuilds it for the ChordError)."""
    if state in PROPAGATE_STATES:
        part = {"status": "failed", "error": str(result), "type": type(result).__name__,
                "exc": backend.encode_result(result, state)}
    else:
        part = {"status": "succeeded", "result": backend.encode_result(result, state)}
    try:
        return dumps({**part, "task_id": task_id, "state": state}), part["status"] == "failed"
    except (TypeError, ValueError):  # what the JSON serializer could not store either
        return failed(task_id, "a result JSON cannot hold", "EncodeError"), True


def _index(guard: Guard, request: Any, mark: dict) -> int | None:
    """The part's place: an added task's own, else Celery's ``group_index``, else its id's
    place in the header."""
    added = (mark.get("x") or {}).get(request.id)
    if added is not None:
        return int(added)
    if request.group_index is not None:
        return int(request.group_index)
    found = guard.store.barrier(request.group, with_header_ids=True)
    ids = found.header_ids if found is not None else []
    return ids.index(request.id) if request.id in ids else None
