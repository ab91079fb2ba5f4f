"""One bounded ``inspect`` round: what every running worker holds and which queues it consumes.

The commands (active, reserved, scheduled, active_queues, revoked) are broadcast side by side,
each through its own ``Control`` so their reply queues never steal each other's replies. Replies
are accepted as JSON only (a pickle reply is refused, never loaded). A request's
``time_start`` is deliberately ignored: it is when the current run started (wall time on every
supported Celery, ``Request.on_accepted`` converts the pool's monotonic clock), never the age of
a chord, and each chord_unlock retry is a new run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from celery import Celery
from celery.app.control import Control, flatten_reply

from ..._timeouts import within_each
from ...errors import UnreachableError
from . import amqp_roster, control_listeners, worker_roster

INSPECT_TIMEOUT = 2.0
COMMANDS = ("active", "reserved", "scheduled", "active_queues", "revoked")


@dataclass
class HeldRequest:
    """A task request a worker holds: executing (active), prefetched (reserved) or waiting
    for its ETA in the worker's timer (scheduled)."""

    task_id: str
    name: str | None
    args: Any
    kwargs: Any
    hostname: str
    state: str  # "active" | "reserved" | "scheduled"
    eta: datetime | None = None
    routing_key: str | None = None


@dataclass
class WorkerSurvey:
    """The answers of one inspect round."""

    workers: list[str]
    consumed_queues: set[str]
    requests: list[HeldRequest] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)  # command (or "workers") -> why
    counting_queues: set[str] = field(default_factory=set)  # quorum/stream: requeues count

    def holders(self) -> dict[str, list[HeldRequest]]:
        """Task id -> every request for it, in every worker."""
        out: dict[str, list[HeldRequest]] = {}
        for request in self.requests:
            out.setdefault(request.task_id, []).append(request)
        return out


def survey(app: Celery, timeout: float = INSPECT_TIMEOUT, wait_out: bool = False,
           queues: Iterable[str] = ()) -> WorkerSurvey:
    """Ask every worker of ``app`` (its control exchange) what it holds.

    Each command ends as soon as every expected worker (``worker_roster``: those that answered
    recent look-ups) has replied and, where the broker can count them, as many workers as
    listen for control commands (Redis: ``control_listeners``) or as take from ``queues``
    (RabbitMQ: ``amqp_roster``; ``active_queues`` is asked first, then the others wait for
    the workers it heard); ``timeout`` seconds after the last reply bounds the wait for
    stragglers, and is the whole wait when none is expected and nothing was counted. On
    RabbitMQ a remembered worker whose pidbox queue is gone (it died) is not expected.
    ``wait_out`` (a confirming look: a worker nobody expected may hold something) trusts
    only the counts, which include such workers. A worker that answered some commands but
    not all, or an expected one that answered none, makes the survey incomplete
    (``failed["workers"]``). Raises UnreachableError when no command could be broadcast.
    """
    expected = frozenset(worker_roster.expected(app))
    listening = control_listeners.count(app)
    roster = amqp_roster.look(app, expected, queues) if listening is None else None
    if roster is not None:
        expected = frozenset(roster.alive)
    waited = frozenset() if wait_out else expected
    if listening == 0 and (wait_out or not expected):  # nobody listens: nothing to wait out
        outcomes: dict[str, Any] = {cmd: {} for cmd in COMMANDS}
    elif roster is not None and any(roster.consumers.values()):
        outcomes = _in_two_steps(app, timeout, waited, roster)
    else:
        enough = _Enough(waited, listening)
        calls = {cmd: (lambda cmd=cmd: _broadcast(app, cmd, timeout, enough))
                 for cmd in COMMANDS}
        outcomes = within_each(timeout * 2 + 3, calls)
    replies: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    for cmd, outcome in outcomes.items():
        if isinstance(outcome, BaseException):
            failed[cmd] = str(outcome) or type(outcome).__name__
        else:
            replies[cmd] = outcome
    if not replies:
        raise UnreachableError("no inspect command could be broadcast: "
                               + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    found = parse(replies, failed)
    worker_roster.remember(app, found.workers)
    if silent := unanswered(expected, replies):
        found.failed["workers"] = "no reply from " + ", ".join(
            f"{host} ({', '.join(cmds)})" for host, cmds in sorted(silent.items()))
    return found


def unanswered(expected: frozenset[str], replies: dict[str, dict[str, Any]],
               ) -> dict[str, list[str]]:
    """Worker -> the commands it did not answer, of every worker expected or heard from."""
    hosts = expected.union(*replies.values())
    return {host: missing for host in hosts
            if (missing := [cmd for cmd, by_host in replies.items() if host not in by_host])}


def _in_two_steps(app: Celery, timeout: float, expected: frozenset[str],
                  roster: amqp_roster.Roster) -> dict[str, Any]:
    """``active_queues`` until its answers account for every consumer of the app's queues,
    then the other commands until the workers it heard (and ``expected``) answered."""
    first = _Enough(expected, None, roster)
    queues = within_each(timeout * 2 + 3, {"active_queues": lambda: _broadcast(
        app, "active_queues", timeout, first)})
    heard = set(queues["active_queues"]) if isinstance(queues["active_queues"], dict) \
        else set()
    if not heard and not expected:  # nobody answered within the timeout: nobody to ask
        return {**queues, **{cmd: {} for cmd in COMMANDS if cmd != "active_queues"}}
    then = _Enough(expected | heard, None)
    rest = within_each(timeout * 2 + 3, {cmd: (lambda cmd=cmd: _broadcast(
        app, cmd, timeout, then)) for cmd in COMMANDS if cmd != "active_queues"})
    return {**queues, **rest}


class _EveryoneAnswered(Exception):
    """Raised from the reply callback to stop waiting: kombu stops only on a count."""


@dataclass(frozen=True)
class _Enough:
    """When a command has heard enough: every ``hosts`` and at least ``count`` workers, or
    (``roster``, for ``active_queues``) workers accounting for every consumer (None and no
    hosts: only the timeout ends the wait)."""

    hosts: frozenset[str]
    count: int | None
    roster: amqp_roster.Roster | None = None

    def reached(self, replies: dict[str, Any]) -> bool:
        heard = set(replies)
        if not self.hosts <= heard:
            return False
        if self.roster is not None:
            return self.roster.accounted({host: [q.get("name") for q in queues or []
                                                 if isinstance(q, dict)]
                                          for host, queues in replies.items()})
        if self.count is None:
            return bool(self.hosts)
        return len(heard) >= self.count


def _broadcast(app: Celery, command: str, timeout: float, enough: _Enough) -> dict[str, Any]:
    """The replies to one command, until ``enough`` workers have replied (or ``timeout``
    after the last reply)."""
    control = Control(app)
    control.mailbox.accept = ["json"]
    replies: list[dict[str, Any]] = []

    def heard(reply: dict[str, Any]) -> None:
        replies.append(reply)
        if enough.reached(flatten_reply(replies)):
            raise _EveryoneAnswered

    # its own connection, closed after: never a pooled one left mid-read
    with app.connection_for_write() as connection, contextlib.suppress(_EveryoneAnswered):
        control.broadcast(command, reply=True, timeout=timeout, callback=heard,
                          connection=connection)
    return flatten_reply(replies)


def parse(replies: dict[str, dict[str, Any]], failed: dict[str, str]) -> WorkerSurvey:
    """Turn the raw ``{command: {hostname: reply}}`` answers into a survey."""
    hosts: set[str] = set()
    for by_host in replies.values():
        hosts.update(by_host)
    declared = [q for queues in replies.get("active_queues", {}).values()
                for q in queues or [] if isinstance(q, dict) and q.get("name")]
    consumed = {q["name"] for q in declared}
    counting = {q["name"] for q in declared if counts_requeues(q.get("queue_arguments"))}
    requests: list[HeldRequest] = []
    for state in ("active", "reserved"):
        for host, infos in replies.get(state, {}).items():
            requests += [r for info in infos or [] if (r := _request(info, host, state))]
    for host, entries in replies.get("scheduled", {}).items():
        for entry in entries or []:
            request = _request(entry.get("request") or {}, host, "scheduled")
            if request is not None:
                request.eta = _datetime(entry.get("eta"))
                requests.append(request)
    revoked = {tid for ids in replies.get("revoked", {}).values() for tid in ids or []}
    return WorkerSurvey(sorted(hosts), consumed, requests, revoked, failed, counting)


def counts_requeues(queue_arguments: Any) -> bool:
    """RabbitMQ quorum and stream queues count each requeue toward a delivery limit."""
    return isinstance(queue_arguments, dict) and \
        queue_arguments.get("x-queue-type") in ("quorum", "stream")


def _request(info: dict[str, Any], host: str, state: str) -> HeldRequest | None:
    if not isinstance(info, dict) or not info.get("id"):
        return None
    delivery = info.get("delivery_info") or {}
    return HeldRequest(task_id=info["id"], name=info.get("name") or info.get("type"),
                       args=info.get("args"), kwargs=info.get("kwargs"),
                       hostname=info.get("hostname") or host, state=state,
                       routing_key=delivery.get("routing_key"))


def _datetime(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except (TypeError, ValueError):
        return None
