"""Read the task messages sitting on the broker without consuming or reordering them.

- Redis: the queue lists (every priority sub-queue, ``global_keyprefix`` honoured) read with
  LRANGE and the ``unacked`` hash (messages workers hold) read in the same MULTI, so one
  view is atomic. Nothing is popped. Besides the queues asked for, every queue bound to an
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

PER_QUEUE_LIMIT = 5000
UNACKED_LIMIT = 20000
BUDGET = 3.0
JSON_TYPES = ("application/json", "json")


@dataclass
class TaskMessage:
    """One Celery task message as far as its headers and a JSON body tell."""

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
    note: str = ""

    def merge(self, other: BrokerView) -> None:
        """Add what a peek at further queues saw."""
        self.messages += other.messages
        self.queues.update(other.queues)
        self.truncated = self.truncated or other.truncated
        self.note = "; ".join(n for n in (self.note, other.note) if n)

    @property
    def complete(self) -> bool:
        """Every message of every queue asked for was read."""
        return self.transport in ("redis", "amqp", "filesystem") and not self.truncated


def peek(app: Celery, queues: set[str], limit: int = PER_QUEUE_LIMIT,
         budget: float = BUDGET, include_held: bool = True,
         skip: frozenset[str] = frozenset()) -> BrokerView:
    """Every task message in ``queues`` (and, on Redis with ``include_held``, every message
    workers hold), oldest first. RabbitMQ queues in ``skip`` (quorum, stream: a requeue
    counts toward their delivery limit) are not read, and the view says it is incomplete."""
    with app.connection_for_read() as conn:
        driver = conn.transport.driver_type
        if driver == "redis":
            if include_held:
                queues = set(queues) | _bound_queues(conn)
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
    channel = conn.default_channel
    client = redis.Redis(connection_pool=channel.client.connection_pool)
    prefix = channel.global_keyprefix or ""
    steps = sorted(set(channel.priority_steps))
    keys = [(q, prefix + (f"{q}{channel.sep}{pri}" if pri else q)) for q in queues for pri in steps]
    unacked = prefix + channel.unacked_key
    with client.pipeline(transaction=True) as pipe:
        for _, key in keys:
            pipe.llen(key)
        pipe.hlen(unacked)
        lengths = pipe.execute()
    held_count = lengths.pop()
    view = BrokerView("redis", sees_held=include_held and held_count <= UNACKED_LIMIT)
    with client.pipeline(transaction=True) as pipe:
        for _, key in keys:
            pipe.lrange(key, -limit, -1)  # the oldest ``limit``: BRPOP takes from the right
        if view.sees_held:
            pipe.hgetall(unacked)
        contents = pipe.execute()
    held = contents.pop() if view.sees_held else {}
    for (queue, _), depth, raw in zip(keys, lengths, contents, strict=True):
        qv = view.queues.setdefault(queue, QueueView(queue, exists=False, depth=0))
        qv.exists = qv.exists or depth > 0
        qv.depth = (qv.depth or 0) + depth
        view.truncated = view.truncated or depth > limit
        for payload in reversed(raw):
            message = _from_envelope(_json(payload), queue)
            message.position = qv.read
            qv.read += 1
            view.messages.append(message)
    for value in held.values():
        entry = _json(value)
        envelope, routing_key = (entry[0], entry[2]) if isinstance(entry, list) \
            and len(entry) == 3 else (None, "?")
        message = _from_envelope(envelope, str(routing_key))
        message.held = True
        view.messages.append(message)
    if include_held and not view.sees_held:
        view.note = f"{held_count} held messages: more than {UNACKED_LIMIT}, not read"
    return view


def _bound_queues(conn: Any) -> set[str]:
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
