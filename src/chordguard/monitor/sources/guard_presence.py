"""Which workers run the guard, and with which store: one bounded broadcast of the guard's
control command (``config.PRESENCE_COMMAND``). A worker without the guard answers with an
error and is not listed."""

from __future__ import annotations

from dataclasses import dataclass, field

from celery import Celery
from celery.app.control import Control, flatten_reply

from ..._timeouts import within
from ...config import PRESENCE_COMMAND

PRESENCE_TIMEOUT = 1.0


@dataclass(frozen=True)
class Presence:
    """What one guarded worker says about itself."""

    worker: str
    store: str  # config.store_identity of its store (masked; SQLite path absolute)
    host: str
    pid: int
    fail_task: bool  # it runs chordguard's fail-callback task
    queues: list[str] = field(default_factory=list)


def guard_presence(app: Celery, timeout: float = PRESENCE_TIMEOUT) -> list[Presence]:
    """Every guarded worker of ``app`` that answers within ``timeout`` seconds.

    Raises UnreachableError when the broker does not answer.
    """
    def ask() -> dict:
        control = Control(app)
        control.mailbox.accept = ["json"]
        return flatten_reply(control.broadcast(PRESENCE_COMMAND, reply=True,
                                               timeout=timeout) or [])

    replies = within(timeout + 5.0, "workers (guard presence)", ask)
    return sorted((Presence(worker=name, store=str(r.get("store", "")),
                            host=str(r.get("host", "")), pid=int(r.get("pid") or 0),
                            fail_task=bool(r.get("fail_task")),
                            queues=[str(q) for q in r.get("queues") or []])
                   for name, r in replies.items() if isinstance(r, dict) and "store" in r),
                  key=lambda p: p.worker)
