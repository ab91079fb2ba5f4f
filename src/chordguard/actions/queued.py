"""A failed chord's task messages still waiting on the broker: removed on Redis, by task id.

Revoking tells only the workers listening at that moment (and those that later ask them, by
mingle); a worker started after they are gone runs a revoked task whose message is still
queued. So failing a chord also deletes its pending tasks' messages, matched by the task
id in their headers, never a whole queue:

- Redis: every queue list kombu has bound in the broker's database, and the app's own
  queues (each priority sub-queue, ``global_keyprefix`` honoured), scanned in slices by a
  script (matches overwritten with a tombstone, then one ``LREM`` of it: the other messages
  keep their order); then
  kombu's ``unacked`` hash. An entry there is a message a worker took and has not acked:
  that worker holds it in memory and acts on it as it would anyway (it heard the revoke or
  it did not), but once the entry is gone kombu can no longer put the message back in a
  queue for another worker (after the visibility timeout, the worker's death or a reject
  with requeue). A worker that acks it later deletes nothing, which is harmless.
- RabbitMQ and other transports: nothing is removed (AMQP takes no message out of a queue
  by id without taking every message before it); the plan says what stays.
"""

from __future__ import annotations

import uuid

import redis
from celery import Celery

from ..monitor.sources.broker import bound_queues, queue_keys

SLICE = 1000  # messages a script call decodes: Redis is blocked a few ms per call
LIST_LIMIT = 1_000_000  # messages read from one list at most
HELD = "(held by workers)"  # the report's name for kombu's unacked hash
IDS_TTL = 600  # seconds the temporary set of wanted ids outlives a scan cut short

# Shared head of both scripts; the last key is a set of the wanted task ids. ``names`` tells
# from the raw JSON, without decoding it, whether some ``"id":`` key in it holds a wanted id
# (a base64 body has no quote; a quote inside a string is escaped); ``is_wanted`` decides by
# the envelope's headers, decoded only for such a candidate.
_MATCH = """
local function wanted(id)
  return type(id) == 'string' and redis.call('SISMEMBER', KEYS[#KEYS], id) == 1
end
local function names(raw)
  local at = 1
  while true do
    local _, e = string.find(raw, '"id":', at, true)
    if not e then return false end
    local q = e + 1
    if string.sub(raw, q, q) == ' ' then q = q + 1 end
    if string.sub(raw, q, q) == '"' then
      local close = string.find(raw, '"', q + 1, true)
      if close and wanted(string.sub(raw, q + 1, close - 1)) then return true end
    end
    at = e + 1
  end
end
local function is_wanted(envelope)
  return type(envelope) == 'table' and type(envelope.headers) == 'table'
    and wanted(envelope.headers.id)
end
"""

# KEYS: a queue list, the ids; ARGV: start index, count, a tombstone -> {removed, read}.
# Matches are overwritten with the tombstone, then removed by one LREM (one pass per slice,
# not one per match).
_LIST_SLICE = _MATCH + """
local start = tonumber(ARGV[1])
local slice = redis.call('LRANGE', KEYS[1], start, start + tonumber(ARGV[2]) - 1)
local marked = 0
for i, payload in ipairs(slice) do
  if names(payload) then
    local ok, envelope = pcall(cjson.decode, payload)
    if ok and is_wanted(envelope) then
      redis.call('LSET', KEYS[1], start + i - 1, ARGV[3])
      marked = marked + 1
    end
  end
end
if marked > 0 then redis.call('LREM', KEYS[1], 0, ARGV[3]) end
return {marked, #slice}
"""

# KEYS: kombu's unacked hash, its index, the ids; ARGV: HSCAN cursor, count
# -> {next cursor, removed}
_HELD_SLICE = _MATCH + """
local reply = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local entries, removed = reply[2], 0
for i = 1, #entries, 2 do
  if names(entries[i + 1]) then
    local ok, entry = pcall(cjson.decode, entries[i + 1])
    if ok and type(entry) == 'table' and is_wanted(entry[1]) then
      redis.call('HDEL', KEYS[1], entries[i])
      redis.call('ZREM', KEYS[2], entries[i])
      removed = removed + 1
    end
  end
end
return {reply[1], removed}
"""


def broker_kind(app: Celery) -> str:
    """The app's broker transport as kombu names it (``redis``, ``amqp``, …); connects to
    nothing."""
    with app.connection_for_write() as conn:
        return conn.transport.driver_type


def remove_queued(app: Celery, task_ids: list[str]) -> dict[str, int]:
    """Delete the messages of ``task_ids`` from a Redis broker's queues and unacked hash;
    return queue -> messages removed (``HELD``: from the unacked hash), queues with none left
    out. The ids wait in a temporary set under the broker's key prefix while the scripts run.
    Raises redis' errors when the broker does not answer."""
    if not task_ids:
        return {}
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        client = redis.Redis(connection_pool=channel.client.connection_pool)
        prefix = channel.global_keyprefix or ""
        ids = f"{prefix}chordguard.removing.{uuid.uuid4().hex}"
        queues = bound_queues(conn) | set(app.amqp.queues) | {app.conf.task_default_queue}
        try:
            with client.pipeline(transaction=False) as pipe:
                for at in range(0, len(task_ids), SLICE):
                    pipe.sadd(ids, *task_ids[at:at + SLICE])
                pipe.expire(ids, IDS_TTL)
                pipe.execute()
            removed: dict[str, int] = {}
            in_list = client.register_script(_LIST_SLICE)
            for queue in sorted(queues):
                for key in queue_keys(channel, queue):
                    if count := _scan_list(in_list, key, ids):
                        removed[queue] = removed.get(queue, 0) + count
            held = _scan_held(client.register_script(_HELD_SLICE), prefix + channel.unacked_key,
                              prefix + channel.unacked_index_key, ids)
        finally:
            client.delete(ids)
    return removed | ({HELD: held} if held else {})


def _scan_list(script, key: str, ids: str) -> int:
    """Slice by slice from the head (newest). A push meanwhile shifts the list: a slice is
    read again, which removes nothing twice; removals move the start back by as many."""
    start = removed = 0
    tombstone = f"chordguard:removed:{uuid.uuid4().hex}"
    while start < LIST_LIMIT:
        gone, read = script(keys=[key, ids], args=[start, SLICE, tombstone])
        removed += gone
        if read < SLICE:
            return removed
        start += read - gone
    return removed


def _scan_held(script, unacked: str, index: str, ids: str) -> int:
    cursor, removed = 0, 0
    while True:
        cursor, gone = script(keys=[unacked, index, ids], args=[cursor, SLICE])
        removed += gone
        if int(cursor) == 0:
            return removed
