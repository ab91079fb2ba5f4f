"""Task states from a result backend in batches, never unpickling code.

The database backend is read with one SELECT per batch on its own table (Celery's
``get_task_meta`` would fall back to ``pickle.loads`` for legacy rows). Other backends are
asked task by task, and only when their accepted content excludes pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Celery

from ..._compat import stored_result
from ...model import utc_datetime
from .read_backend import read_backend

BATCH = 1000
PER_TASK_LIMIT = 2000
PICKLE = "application/x-python-serialize"


@dataclass
class TaskState:
    """What the backend keeps for one task; a task it does not know is PENDING."""

    task_id: str
    state: str
    date_done: datetime | None = None
    result: Any = None
    traceback: str | None = None


def read_states(app: Celery, task_ids: list[str]) -> tuple[dict[str, TaskState], str]:
    """States of the tasks the backend knows, and a note on how they were read."""
    backend = read_backend(app)
    ids = list(dict.fromkeys(task_ids))
    if not ids:
        return {}, "nothing to read"
    if hasattr(backend, "ResultSession") and hasattr(backend, "task_cls"):
        table = backend.task_cls.__table__
        return _read_table(backend, ids), f"{table.name}, {-(-len(ids) // BATCH)} SELECT(s)"
    if PICKLE in (backend.accept or ()):
        return {}, "not read: the backend accepts pickle and chordguard never unpickles"
    states = {}
    for task_id in ids[:PER_TASK_LIMIT]:
        meta = backend.get_task_meta(task_id)
        if meta.get("status") and meta["status"] != "PENDING":
            states[task_id] = TaskState(task_id, meta["status"],
                                        utc_datetime(meta.get("date_done")),
                                        meta.get("result"), meta.get("traceback"))
    return states, f"{type(backend).__name__}.get_task_meta per task"


def _read_table(backend: Any, ids: list[str]) -> dict[str, TaskState]:
    from sqlalchemy import LargeBinary, select, type_coerce  # loaded by the backend already

    table = backend.task_cls.__table__
    columns = (table.c.task_id, table.c.status, table.c.date_done, table.c.traceback,
               type_coerce(table.c.result, LargeBinary).label("result"))  # raw: no PickleType
    json_results = backend.content_type in ("application/json", "json")
    out: dict[str, TaskState] = {}
    session = backend.ResultSession()
    try:
        for start in range(0, len(ids), BATCH):
            batch = ids[start:start + BATCH]
            for row in session.execute(select(*columns).where(table.c.task_id.in_(batch))):
                out[row.task_id] = TaskState(row.task_id, row.status, utc_datetime(row.date_done),
                                             _result(row.result, json_results), row.traceback)
    finally:
        session.close()
    return out


def _result(payload: bytes | None, json_results: bool) -> Any:
    if payload is None:
        return None
    if not json_results:
        return "<not decoded: the result serializer is not JSON>"
    try:
        return stored_result(payload, json.loads)
    except (ValueError, TypeError):
        return "<not decoded: not valid JSON>"
