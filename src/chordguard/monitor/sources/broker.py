"""Read the task messages sitting on the broker without consuming or reordering them.

- Redis: the queue lists (every priority sub-queue, ``global_keyprefix`` honoured) and the
  ``unacked`` hash (messages workers hold) read by a server-side script (``redis_queues``):
  every message by id, task and group, bodies only where needed, a page per call. Nothing
  is popped. Besides the queues asked for, every queue bound to an
  exchange in this database (kombu's ``_kombu.binding.*`` sets) is read: a task sent with
  ``.set(queue=...)`` to a queue the app does not configure is seen too.
- Filesystem (the embedded demo's broker): the queue's message files, read in the order
  kombu delivers them (sorted names). Nothing is moved.
- RabbitMQ: per queue, a passive declare (depth, consumers) and then ``basic_get`` without
  ack on a dedicated channel; closing the channel returns every message to its original
  position. While a peek holds messages (milliseconds), a consuming worker may receive a
  later message first; the queue's own order is unchanged.

Bodies are decoded only when they are JSON (zlib/bzip2 compression allowed); anything else
is reported as undecodable and never unpickled. Reads are bounded in count and time.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from amqp.exceptions import ChannelError
from celery import Celery
from kombu.compression import decompress

from . import redis_queues

PER_QUEUE_LIMIT = 5000  # messages read whole per queue (Redis: whole messages naming no group)
HELD_LIMIT = 200_000  # Redis: held (unacked) messages listed by id
UNREAD = "body not read: beyond the budget of whole messages naming no group"
BUDGET = 3.0
JSON_TYPES = ("application/json", "json")


@dataclass(slots=True)
class TaskMessage:
    """One Celery task message as far as its headers and a JSON body tell (slots: a look
    holds one per queued message, 200,000 on a busy broker)."""

    task_id: str | None
    name: str | None
    queue: str  # the queue; for a held (unacked) message, its routing key
    held: bool = False  # True: in Redis' unacked hash, i.e. a worker has it
    position: int | None = None  # 0: next to be delivered from its queue
    retries: int | None = None
    eta: datetime | None = None
    args: Any = None
    kwargs: Any = None
    undecodable: str | None = None  # why the body could not be read (args/kwargs unknown)
    argsrepr: str | None = None  # protocol 2 headers: Celery's (possibly truncated) reprs
    kwargsrepr: str | None = None
    group: str | None = None  # the header group (chord) this task reports to, if any
    group_index: int | None = None
    embed: dict[str, Any] | None = None  # protocol 2: callbacks, errbacks, chain, chord


@dataclass
class QueueView:
    name: str
    exists: bool = True
    depth: int | None = None  # messages ready on the broker
    consumers: int | None = None  # RabbitMQ only
    read: int = 0


@dataclass
class BrokerView:
    """What one peek saw."""

    transport: str
    messages: list[TaskMessage] = field(default_factory=list)
    queues: dict[str, QueueView] = field(default_factory=dict)
    sees_held: bool = False  # True when messages held by workers are included (Redis)
    truncated: bool = False  # a bound (count or time) stopped the read
    unread_bodies: int = 0  # Redis: messages naming no group whose body was not read
    note: str = ""

    def merge(self, other: BrokerView) -> None:
        """Add what a peek at further queues saw."""
        self.messages += other.messages
        self.queues.update(other.queues)
        self.truncated = self.truncated or other.truncated
        self.unread_bodies += other.unread_bodies
        self.note = "; ".join(n for n in (self.note, other.note) if n)

    @property
    def complete(self) -> bool:
        """Every message of every queue asked for was read."""
        return self.transport in ("redis", "amqp", "filesystem") and not self.truncated \
            and not self.unread_bodies


def peek(app: Celery, queues: set[str], limit: int | None = None,
         budget: float = BUDGET, include_held: bool = True,
         skip: frozenset[str] = frozenset()) -> BrokerView:
    """Every task message in ``queues`` (and, on Redis with ``include_held``, every message
    workers hold). ``limit`` (default ``PER_QUEUE_LIMIT``) bounds the messages read whole
    per queue. RabbitMQ queues in ``skip`` (quorum, stream: a requeue counts toward their
    delivery limit) are not read, and the view says it is incomplete."""
    limit = PER_QUEUE_LIMIT if limit is None else limit
    with app.connection_for_read() as conn:
        driver = conn.transport.driver_type
        if driver == "redis":
            if include_held:
                queues = set(queues) | bound_queues(conn)
            return _peek_redis(conn, sorted(queues), limit, include_held)
        if driver == "amqp":
            view = _peek_amqp(conn, sorted(set(queues) - skip), limit,
                              time.monotonic() + budget)
            if unread := sorted(set(queues) & skip):
                view.truncated = True
                view.note = f"not peeked (quorum/stream queues count requeues): {unread}"
            return view
        if driver == "filesystem":
            return _peek_filesystem(conn, sorted(queues), limit)
        return BrokerView(driver, note=f"peeking at {driver} brokers is not supported")


def _peek_redis(conn: Any, queues: list[str], limit: int, include_held: bool) -> BrokerView:
    """Every message of ``queues`` (and held ones) by id and group; bodies as ``redis_queues``
    says: the chord_unlock ones, one per group, and up to ``limit`` that name no group."""
    channel = conn.default_channel
    client = redis.Redis(connection_pool=channel.client.connection_pool)
    keys = [(q, key) for q in queues for key in queue_keys(channel, q)]
    view = BrokerView("redis")
    budget = limit
    for queue, key in keys:
        listing, budget = redis_queues.read_list(client, key, budget)
        qv = view.queues.setdefault(queue, QueueView(queue, exists=False, depth=0))
        qv.exists = qv.exists or listing.size > 0
        qv.depth = (qv.depth or 0) + listing.size
        payloads = {"b": iter(listing.bodies), "f": iter(listing.wholes)}
        found = []
        for at, row in enumerate(listing.rows):  # read newest first
            message = _from_row(row, queue, payloads, view)
            message.position = listing.size - 1 - at
            found.append(message)
        view.messages += reversed(found)  # oldest first: the order they are delivered in
        qv.read = qv.depth  # pages until the list's current end: nothing left unread
    held = redis_queues.read_held(client, (channel.global_keyprefix or "") + channel.unacked_key,
                                  budget,
                                  HELD_LIMIT if include_held else -1)
    held_count = held.size
    view.sees_held = include_held and held_count <= HELD_LIMIT
    payloads = {"b": iter(held.bodies), "f": iter(held.wholes)}
    for row in held.rows:
        message = _from_row(row, row[5], payloads, view)
        message.held = True
        view.messages.append(message)
    if include_held and not view.sees_held:
        view.truncated = True
        view.note = f"{held_count} held messages: more than {HELD_LIMIT}, not read"
    if view.unread_bodies:
        view.note = "; ".join(n for n in (view.note, f"{view.unread_bodies} message(s) naming "
                                          f"no group: bodies beyond the first {limit} not read")
                              if n)
    return view


def _from_row(row: list[str], queue: str, payloads: dict[str, Any], view: BrokerView,
              ) -> TaskMessage:
    """A TaskMessage from one row of ``redis_queues`` (taking its payload, if it has one)."""
    kind, task_id, name, group, index, _ = row
    if kind == "f":
        envelope = _json(next(payloads["f"]))
        if isinstance(envelope, list) and len(envelope) == 3:  # held: [envelope, exchange, rk]
            envelope = envelope[0]
        return _from_envelope(envelope, queue)
    message = TaskMessage(task_id or None, name or None, queue, group=group or None,
                          group_index=int(index) if index else None,
                          undecodable=None if group else UNREAD)
    if kind == "b":  # protocol 2, JSON, uncompressed (the script checked): [args, kwargs, embed]
        body = _json(redis_queues.body_bytes(next(payloads["b"])))
        if isinstance(body, list) and len(body) == 3 and isinstance(body[2], dict):
            message.args, message.kwargs, message.embed = body
        else:
            message.undecodable = "not a Celery task body"
    view.unread_bodies += kind == "u"
    return message


def queue_keys(channel: Any, queue: str) -> list[str]:
    """The Redis lists of ``queue``: one per priority step, ``global_keyprefix`` included."""
    prefix = channel.global_keyprefix or ""
    return [prefix + (f"{queue}{channel.sep}{step}" if step else queue)
            for step in sorted(set(channel.priority_steps))]


def ready_messages(app: Celery, queues: set[str]) -> int:
    """How many messages wait in ``queues`` (on Redis also in every queue kombu has bound in
    the broker's database), counted without reading any (LLEN; a passive declare elsewhere:
    kombu's own misses a Redis queue under a ``global_keyprefix``)."""
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        if conn.transport.driver_type == "redis":
            client = redis.Redis(connection_pool=channel.client.connection_pool)
            with client.pipeline(transaction=False) as pipe:
                for queue in set(queues) | bound_queues(conn):
                    for key in queue_keys(channel, queue):
                        pipe.llen(key)
                return sum(pipe.execute())
        total = 0
        for queue in queues:
            try:
                total += channel.queue_declare(queue=queue, passive=True).message_count
            except Exception:  # a queue that does not exist holds nothing
                channel = conn.channel()
        return total


def bound_queues(conn: Any) -> set[str]:
    """Every queue kombu has bound to an exchange in this Redis database."""
    channel = conn.default_channel
    client = redis.Redis(connection_pool=channel.client.connection_pool)
    prefix = channel.global_keyprefix or ""
    pattern = prefix + channel.keyprefix_queue % "*"
    out: set[str] = set()
    for key in client.scan_iter(match=pattern, count=1000):
        for member in client.smembers(key):
            queue = member.decode(errors="replace").split(channel.sep)[-1]
            if queue:
                out.add(queue)
    return out


def _peek_amqp(conn: Any, queues: list[str], limit: int, deadline: float) -> BrokerView:
    view = BrokerView("amqp")
    conn.connect()
    for queue in queues:
        if time.monotonic() > deadline:
            view.truncated = True
            break
        channel = conn.channel()
        try:
            _, depth, consumers = channel.queue_declare(queue=queue, passive=True)
        except ChannelError:  # missing (404) or exclusive to another connection
            view.queues[queue] = QueueView(queue, exists=False)
            continue  # the broker closed the channel
        qv = view.queues[queue] = QueueView(queue, depth=depth, consumers=consumers)
        try:
            while qv.read < min(depth, limit) and time.monotonic() < deadline:
                raw = channel.basic_get(queue=queue, no_ack=False)
                if raw is None:
                    break
                message = _from_parts(raw.properties.get("application_headers") or {},
                                      raw.properties.get("content_type"),
                                      raw.properties.get("content_encoding"), raw.body, queue)
                message.position = qv.read
                qv.read += 1
                view.messages.append(message)
            view.truncated = view.truncated or qv.read < depth
        finally:
            channel.close()  # every unacked message goes back where it was
    return view


def _peek_filesystem(conn: Any, queues: list[str], limit: int) -> BrokerView:
    """Read the ``<ms>_<uuid>.<queue>.msg`` files kombu's filesystem transport delivers from."""
    folder = Path(conn.default_channel.data_folder_in)
    view = BrokerView("filesystem")
    wanted = {f"{q}.msg": q for q in queues}
    for queue in queues:
        view.queues[queue] = QueueView(queue, exists=True, depth=0)
    for name in sorted(os.listdir(folder)):
        queue = wanted.get(name.partition(".")[2])
        if queue is None:
            continue
        qv = view.queues[queue]
        qv.depth = (qv.depth or 0) + 1
        if qv.read >= limit:
            view.truncated = True
            continue
        try:
            raw = (folder / name).read_bytes()
        except FileNotFoundError:  # delivered to a worker meanwhile
            continue
        message = _from_envelope(_json(raw), queue)
        message.position = qv.read
        qv.read += 1
        view.messages.append(message)
    return view


def _json(raw: Any) -> Any:
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return None


def _from_envelope(envelope: Any, queue: str) -> TaskMessage:
    """A kombu virtual-transport envelope (Redis) -> TaskMessage."""
    if not isinstance(envelope, dict):
        return TaskMessage(None, None, queue, undecodable="not a kombu JSON envelope")
    body = envelope.get("body")
    properties = envelope.get("properties") or {}
    if properties.get("body_encoding") == "base64" and isinstance(body, str):
        try:
            body = base64.b64decode(body)
        except ValueError:
            body = None
    return _from_parts(envelope.get("headers") or {}, envelope.get("content-type"),
                       envelope.get("content-encoding"), body, queue)


def _from_parts(headers: dict, content_type: str | None, encoding: str | None, body: Any,
                queue: str) -> TaskMessage:
    """Headers + raw body -> TaskMessage; task protocol 2 (headers) or 1 (JSON body)."""
    message = TaskMessage(task_id=headers.get("id"), name=headers.get("task"), queue=queue,
                          retries=_int(headers.get("retries")), eta=_datetime(headers.get("eta")),
                          argsrepr=_str(headers.get("argsrepr")),
                          kwargsrepr=_str(headers.get("kwargsrepr")),
                          group=_str(headers.get("group")),
                          group_index=_int(headers.get("group_index")))
    decoded, why = _decode_body(headers, content_type, encoding, body)
    message.undecodable = why
    if isinstance(decoded, list) and len(decoded) >= 2:  # protocol 2: [args, kwargs, embed]
        message.args, message.kwargs = decoded[0], decoded[1]
        if len(decoded) > 2 and isinstance(decoded[2], dict):
            message.embed = decoded[2]
    elif isinstance(decoded, dict) and "task" in decoded:  # protocol 1
        message.task_id = message.task_id or decoded.get("id")
        message.name = message.name or decoded.get("task")
        message.args, message.kwargs = decoded.get("args"), decoded.get("kwargs")
        message.retries = message.retries if message.retries is not None \
            else _int(decoded.get("retries"))
        message.group = message.group or _str(decoded.get("taskset"))
        message.embed = {"chord": decoded.get("chord"), "callbacks": decoded.get("callbacks"),
                         "errbacks": decoded.get("errbacks"), "chain": None}
        message.eta = message.eta or _datetime(decoded.get("eta"))
    elif why is None:
        message.undecodable = "not a Celery task body"
    return message


def _decode_body(headers: dict, content_type: str | None, encoding: str | None, body: Any,
                 ) -> tuple[Any, str | None]:
    if (content_type or "") not in JSON_TYPES:
        return None, f"content type {content_type!r} is not JSON (not decoded)"
    if body is None:
        return None, "no body"
    raw = body.encode(encoding or "utf-8") if isinstance(body, str) else bytes(body)
    if headers.get("compression"):
        try:
            raw = decompress(raw, headers["compression"])
        except Exception as exc:  # unknown or corrupt compression
            return None, f"cannot decompress ({exc})"
    try:
        return json.loads(raw.decode(encoding or "utf-8")), None
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"invalid JSON ({exc})"


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _datetime(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
