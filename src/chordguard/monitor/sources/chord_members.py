"""Which chord a task message works for, and that chord's callback, read from the message.

Celery keeps a chord's callback nowhere but in its header messages: a header task's message
carries the group id (protocol 2 header ``group``, protocol 1 ``taskset``) and the callback
signature (``embed['chord']``). A header member that is a chain is published as the chain's
first task: its ``embed['chain']`` holds the later tasks (last first), and the one that
reports to the chord carries ``group_id`` and ``chord`` in its options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .broker import TaskMessage


@dataclass(slots=True)
class Member:
    """A message on its way to finishing one header part of a chord."""

    group_id: str
    part_id: str  # the task whose return counts for the chord (a chain's last task)
    message: TaskMessage
    index: int | None = None
    callback: dict[str, Any] | None = None  # the chord's body signature, as sent


def member(message: TaskMessage) -> Member | None:
    """The header part ``message`` works toward, or None when it belongs to no chord."""
    embed = message.embed or {}
    if message.group and message.task_id:
        return Member(message.group, message.task_id, message, message.group_index,
                      _signature(embed.get("chord")))
    for link in embed.get("chain") or []:
        options = link.get("options") if isinstance(link, dict) else None
        if isinstance(options, dict) and isinstance(options.get("group_id"), str) \
                and isinstance(options.get("task_id"), str):
            index = options.get("group_index")
            return Member(options["group_id"], options["task_id"], message,
                          index if isinstance(index, int) else None,
                          _signature(options.get("chord")))
    return None


def _signature(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) and isinstance(value.get("task"), str) else None
