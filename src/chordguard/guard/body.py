"""A chord's body, as Celery waits on it: its final tasks and the result tree they fill.

A body is a single task, a chain (Celery waits on its last step), a group (on every member)
or a chord (on its own body), nested in any way. The walk reads a live signature or the
JSON the journal keeps of it, and never unrolls a lazy (generator) group: such a body is
``unknown`` and nothing is decided from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery
from celery.result import result_from_tuple
from celery.utils.functional import _regen


class UnknownBody(Exception):
    """The body's shape cannot be read without changing it (a lazy group, a missing id)."""


def _kind(node: Mapping) -> str:
    kind = node.get("subtask_type")
    if kind:
        return kind
    return {"celery.group": "group", "celery.chain": "chain",
            "celery.chord": "chord"}.get(node.get("task") or "", "task")


def _members(node: Mapping) -> list:
    tasks = (node.get("kwargs") or {}).get("tasks")
    if isinstance(tasks, _regen) and not getattr(tasks, "_regen__done", False):
        raise UnknownBody("a lazily unrolled group")
    if not isinstance(tasks, list | tuple) or not tasks:
        raise UnknownBody("a canvas without tasks")
    return list(tasks)


def _id(node: Mapping) -> str:
    task_id = (node.get("options") or {}).get("task_id")
    if not task_id:
        raise UnknownBody(f"{node.get('task')} has no task id")
    return task_id


def final_tasks(body: Mapping) -> list[Mapping]:
    """The task signatures (live objects or dicts) whose results end ``body``.

    Raises UnknownBody.
    """
    kind = _kind(body)
    if kind == "chain":
        return final_tasks(_members(body)[-1])
    if kind == "group":
        return [task for member in _members(body) for task in final_tasks(member)]
    if kind == "chord":
        return final_tasks((body.get("kwargs") or {})["body"])
    _id(body)
    return [body]


def result_tree(body: Mapping) -> tuple:
    """The result ``body`` ends with, as the tuple ``result_from_tuple`` reads (Celery's
    ``as_tuple``): ``(task id, None)`` for a task, ``((group id, None), [members])``.

    Raises UnknownBody.
    """
    kind = _kind(body)
    if kind == "chain":
        return result_tree(_members(body)[-1])
    if kind == "group":
        return ((_id(body), None), [result_tree(member) for member in _members(body)])
    if kind == "chord":
        return result_tree((body.get("kwargs") or {})["body"])
    return (_id(body), None)


def is_single_task(body: Mapping) -> bool:
    """Is ``body`` one plain task (whose id is the chord's callback id)?"""
    return _kind(body) == "task"


def body_outcome(app: Celery, tree: Any) -> str | None:
    """``"SUCCESS"`` or ``"FAILURE"`` once every final task of the body is ready, else None.

    A FAILURE of any final task (or REVOKED) makes the body's outcome FAILURE. ``tree`` is
    a ``result_tree`` or its JSON form (lists for tuples).
    """
    result = result_from_tuple(tree, app=app)
    if not result.ready():
        return None
    return "SUCCESS" if result.successful() else "FAILURE"

