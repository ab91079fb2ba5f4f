"""Celery's result tuples, as chord_unlock carries them in ``kwargs['result']``.

``AsyncResult.as_tuple()`` is ``[[id, parent], None]`` and ``GroupResult.as_tuple()`` is
``[[id, parent], [child tuples]]``, where ``parent`` is the tuple of the result before it in
a chain. A header member that is a chain is its last task, with the earlier tasks as parents.
"""

from __future__ import annotations

from typing import Any


def header_ids(result: Any) -> list[str]:
    """Task ids of the header, from result tuples ``[[id, parent], children-or-None]``."""
    out: list[str] = []
    for node in result or []:
        out += _leaves(node)
    return out


def upstream_ids(result: Any) -> dict[str, list[str]]:
    """Header task id -> ids of the tasks before it in its chain (nearest first): the tasks
    whose failure celery#9674 leaves unpropagated. Header tasks outside a chain are absent."""
    out: dict[str, list[str]] = {}
    for node in result or []:
        for task_id, parent in _leaf_nodes(node):
            if before := _ancestors(parent):
                out[task_id] = before
    return out


def _split(node: Any) -> tuple[Any, Any, Any] | None:
    """(id, parent, children) of a tuple, or None for anything else."""
    if not isinstance(node, list | tuple) or len(node) != 2:
        return None
    head, children = node
    if not isinstance(head, list | tuple) or not head or not isinstance(head[0], str):
        return None
    return head[0], head[1] if len(head) > 1 else None, children


def _leaf_nodes(node: Any) -> list[tuple[str, Any]]:
    split = _split(node)
    if split is None:
        return []
    task_id, parent, children = split
    if isinstance(children, list | tuple) and children:
        return [leaf for child in children for leaf in _leaf_nodes(child)]
    return [(task_id, parent)]


def _leaves(node: Any) -> list[str]:
    return [task_id for task_id, _ in _leaf_nodes(node)]


def _ancestors(parent: Any, depth: int = 0) -> list[str]:
    split = _split(parent)
    if split is None or depth > 100:
        return []
    _, grandparent, _ = split
    return _leaves(parent) + _ancestors(grandparent, depth + 1)
