"""What workers and queues hold: one look (an inspect round plus a broker peek) per snapshot,
shared by every source that needs it, and at most one confirming second look.

One look is not atomic: a task moving between queue and worker can look doubled or missing
for a moment. A source that suspects a problem from the first look asks ``Holdings.confirm``
for a second one about a poll interval later; both looks are shared, so a snapshot never
broadcasts more than two inspect rounds whatever the number of sources.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field

from celery import Celery

from ..._timeouts import within_each
from ...model import Chord, ChordKind, ClusterFacts
from .broker import BrokerView, peek
from .workers import WorkerSurvey, counts_requeues, survey

CONFIRM_PAUSE = 1.0
OBSERVE_TIMEOUT = 7.0  # the least a look's inspect round and peek are each given


def confirm_pause(interval: float) -> float:
    """Seconds between the two looks that confirm a problem: half an interval out of phase
    with the unlock's retry period, so a chain caught mid-retry (its old copy in a worker,
    its new one on the broker) is not caught at the same instant of its next retry."""
    return min(max(CONFIRM_PAUSE, 1.5 * interval), 4.5)


@dataclass
class Observation:
    """An inspect round plus a broker peek, taken side by side."""

    survey: WorkerSurvey | None  # None: the inspect round failed
    view: BrokerView | None
    problems: list[str] = field(default_factory=list)

    def holders(self) -> dict[str, str]:
        """Task id -> where its message is: ``worker:<host> <state>`` or ``queue:<name>``."""
        out: dict[str, str] = {}
        for message in self.view.messages if self.view else []:
            if message.task_id:
                out[message.task_id] = ("worker (unacked, " + message.queue + ")") \
                    if message.held else f"queue:{message.queue}"
        for request in self.survey.requests if self.survey else []:
            out[request.task_id] = f"worker:{request.hostname} {request.state}"
        return out

    def queued(self) -> dict[str, str]:
        return {m.task_id: m.queue for m in self.view.messages if m.task_id and not m.held} \
            if self.view else {}


def candidate_queues(app: Celery, consumed: set[str]) -> set[str]:
    """The app's queues, the queues its routes name, and those workers consume."""
    names = set(app.amqp.queues) | set(consumed) | {app.conf.task_default_queue}
    routes = app.conf.task_routes or ()
    for table in routes if isinstance(routes, list | tuple) else [routes]:
        if isinstance(table, dict):
            for target in table.values():
                queue = target.get("queue") if isinstance(target, dict) else target
                name = getattr(queue, "name", queue)
                if isinstance(name, str):
                    names.add(name)
    return {n for n in names if n}


def observe(app: Celery, budget: float, wait_out: bool = False) -> Observation:
    """One look, its inspect round and peek each given ``budget`` seconds; ``wait_out``: a
    confirming one, which waits for workers nobody expected (``survey``)."""
    configured = candidate_queues(app, set())
    counting = frozenset(q.name for q in app.amqp.queues.values()
                         if counts_requeues(q.queue_arguments))
    outcomes = within_each(budget, {  # side by side, so both see the same moment
        "inspect": lambda: survey(app, wait_out=wait_out, queues=configured),
        "peek": lambda: peek(app, configured, skip=counting)})
    found, view = outcomes["inspect"], outcomes["peek"]
    if isinstance(view, BaseException):
        raise view
    problems = [view.note] if view.note else []
    if isinstance(found, BaseException):
        found, problems = None, [*problems, f"inspect: {found}"]
    else:
        problems += [f"inspect {cmd}: {why}" for cmd, why in found.failed.items()]
        if extra := found.consumed_queues - configured:
            view.merge(peek(app, extra, include_held=False,
                            skip=frozenset(found.counting_queues)))
    return Observation(found, view, problems)


def facts_from(observations: list[Observation], facts: ClusterFacts) -> ClusterFacts:
    """``facts`` with the workers, consumed queues and queued ids the observations show."""
    surveys = [o.survey for o in observations if o.survey is not None]
    if not surveys:
        return dataclasses.replace(facts)
    consumed = set().union(*(s.consumed_queues for s in surveys))
    for observation in observations:
        for queue in observation.view.queues.values() if observation.view else []:
            if queue.consumers:
                consumed.add(queue.name)
    queued: dict[str, str] = {}
    for observation in observations:
        queued.update(observation.queued())
    complete = all(o.survey is not None and not o.survey.failed and o.view is not None
                   and o.view.complete for o in observations)
    return dataclasses.replace(facts, workers=surveys[-1].workers, consumed_queues=consumed,
                               queued={**facts.queued, **queued}, holdings_complete=complete)


def gaps(observations: list[Observation]) -> list[str]:
    """What the looks could not see (empty: they saw every worker and every message)."""
    out: list[str] = []
    for look in observations:
        if look.survey is None:
            out.append("no worker answered the inspect round")
        else:
            out += [f"inspect {cmd}: {why}" for cmd, why in look.survey.failed.items()]
        view = look.view
        if view is None or view.complete:
            continue
        unread = [f"{q.name} ({q.depth - q.read:,} of {q.depth:,} messages)"
                  for q in view.queues.values() if q.depth is not None and q.read < q.depth]
        if unread:
            out.append("unread queue(s): " + ", ".join(unread))
        out += [view.note] if view.note else []
        if not unread and not view.note:
            out.append("the broker read was cut short")
    return list(dict.fromkeys(out))


def unseen(chord: Chord, facts: ClusterFacts, missing: list[str]) -> str | None:
    """What ``chord``'s verdict rests on that the looks could not see (``missing``, from
    ``gaps``), or None when every part is accounted for: finished, held by a worker, or
    queued where the consumers are known. A chord whose parts are all accounted for needs no
    more of the view."""
    pending = [p for p in chord.header if p.state in (None, "PENDING")]
    lost = chord.unaccounted if chord.kind is ChordKind.REDIS else \
        sum(1 for p in pending if p.held_by is None and p.task_id not in facts.queued)
    if missing and (lost is None or lost > 0):
        return (f"{'an unknown number of' if lost is None else lost} part(s) seen nowhere, "
                "and the look was incomplete: " + "; ".join(missing))
    if facts.consumed_queues is None and any(p.task_id in facts.queued for p in pending):
        return "parts wait in a queue and no worker answered: whether it is consumed is unknown"
    return None


class Holdings:
    """The snapshot's looks at workers and queues, taken on first use and shared by sources
    reading side by side (thread-safe). A failed look raises for every caller. ``budget``:
    the seconds a source gives a look (``ClusterFacts.look_budget``, which grows with the
    source timeout: a long queue's peek gets longer), never less than ``OBSERVE_TIMEOUT``."""

    def __init__(self, app: Celery, budget: float) -> None:
        self.app = app
        self.budget = max(OBSERVE_TIMEOUT, budget)
        self._lock = threading.Lock()
        self._looks: list[Observation | BaseException] = []

    def first(self) -> list[Observation]:
        """The first look (taken now if no source has asked yet)."""
        return self._take(1, 0.0)

    def confirm(self, pause: float) -> list[Observation]:
        """Both looks: the second is taken ``pause`` seconds after the caller asks, once."""
        return self._take(2, pause)

    def _take(self, count: int, pause: float) -> list[Observation]:
        with self._lock:
            while len(self._looks) < count:
                if self._looks:
                    time.sleep(pause)
                try:
                    self._looks.append(observe(self.app, self.budget,
                                               wait_out=bool(self._looks)))
                except Exception as exc:  # every caller sees the same failure
                    self._looks.append(exc)
            looks = self._looks[:count]
        for look in looks:
            if isinstance(look, BaseException):
                raise look
        return looks  # type: ignore[return-value]

    def fill(self, facts: ClusterFacts, observations: list[Observation]) -> None:
        """Copy what ``observations`` show about workers and queues into ``facts``."""
        seen = facts_from(observations, facts)
        with self._lock:
            facts.workers, facts.consumed_queues = seen.workers, seen.consumed_queues
            facts.holdings_complete = seen.holdings_complete
            facts.queued.update(seen.queued)
