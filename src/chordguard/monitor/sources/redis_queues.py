"""Every task message in kombu's Redis queues, read by a server-side script: ids, not bodies.

kombu's Redis messages are JSON envelopes (body, content-encoding, content-type, headers,
properties) whose ``headers`` are in clear: the script finds each message's task id, task
name, group and group index with plain string searches and returns six short fields per
message. A message's body (base64) is shipped only when it is needed:

- ``celery.chord_unlock`` messages: always, whole (their args name the chord);
- the first message of each group: its body, for the chord's callback (``embed['chord']``);
- a message that names no group (a chain member of a chord names it only in its body, a
  protocol 1 message only there): whole, up to ``budget`` of them; beyond that the message
  is listed with its body unread, and the view counts it (``BrokerView.unread_bodies``).

Each queue is read a page (``PAGE`` entries) per script call from its newest end, so Redis
is never blocked for long whatever the depth; the ``unacked`` hash (messages workers hold) is
read in one more call. Pages are not one instant: a message a worker takes meanwhile is read
again in ``unacked`` or seen in the worker, never lost from view (pops are at the oldest
end, pushes at the newest shift pages toward the oldest: a message is read twice at most).
Nothing is popped.
"""

from __future__ import annotations

import base64
from typing import Any

UNLOCK_TASK = "celery.chord_unlock"
PAGE = 20_000  # list entries per script call: about 0.1 s of Redis time on a quiet machine
# ROW(msg, tail) appends six fields to ``out``: kind, id, task, group, group index, tail (the
# routing key of a held message). Kinds: c (compact), b (its base64 body is next in
# ``bodies``), f (the whole message is next in ``wholes``), u (no group, body unread).
ROW = r"""
local budget, unlock = tonumber(ARGV[1]), ARGV[2]
local seen, out, n, bodies, wholes = {}, {}, 0, {}, {}
local find, sub, match = string.find, string.sub, string.match
local function value(msg, key, from, stop)
  local s, e = find(msg, key, from, true)
  if not s or s > stop then return '' end
  return sub(msg, e + 1, find(msg, '"', e + 1, true) - 1)
end
local FAST = '^"headers": {"lang": "py", "task": "([^"\\]*)", "id": "([^"\\]*)", "shadow": '
  .. '[^,]*, "eta": [^,]*, "expires": [^,]*, "group": "?([^",\\]*)"?, "group_index": (%d*)'
local function row(msg, tail)
  local b = find(msg, '"', 11, true)
  local h = b and find(msg, '"headers": {', b, true)
  local kind, id, task, group, index = 'f', '', '', '', ''
  if h then
    task, id, group, index = match(msg, FAST, h)
    if task then
      if group == 'null' then group = '' end
    else
      local stop = find(msg, '"properties": {', h, true) or #msg
      id, task = value(msg, '"id": "', h, stop), value(msg, '"task": "', h, stop)
      group = value(msg, '"group": "', h, stop)
      local gs, ge = find(msg, '"group_index": ', h, true)
      index = (gs and gs < stop) and match(msg, '^%d+', ge + 1) or ''
    end
    if find(id, '\\', 1, true) or find(task, '\\', 1, true) or find(group, '\\', 1, true) then
      id, task, group = '', '', ''
    elseif task == unlock then
    elseif group == '' then
      if budget > 0 then budget = budget - 1 else kind = 'u' end
    elseif seen[group] then
      kind = 'c'
    else
      seen[group] = true
      local ct = find(msg, '"content-type": "application/json"', b, true)
      if ct and ct < h and sub(msg, 1, 10) == '{"body": "'
          and not find(msg, '"compression": "', h, true)
          and find(msg, '"body_encoding": "base64"', h, true) then
        kind = 'b'
        bodies[#bodies + 1] = sub(msg, 11, b - 1)
      end
    end
  end
  if kind == 'f' then wholes[#wholes + 1] = msg end
  out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5] = kind, id, task, group, index
  out[n + 6] = tail
  n = n + 6
end
local function reply(head)
  head[#head + 1] = budget
  head[#head + 1] = table.concat(out, '\t')
  head[#head + 1] = table.concat(bodies, '\n')
  for _, msg in ipairs(wholes) do head[#head + 1] = msg end
  return head
end
"""
# KEYS[1]: a queue list. ARGV: budget, unlock task name, first index, count (from the newest).
# Reply: {LLEN, budget left, rows, bodies joined by newlines, whole message...}.
LIST_LUA = ROW + r"""
local length = redis.call('LLEN', KEYS[1])
local first = tonumber(ARGV[3])
local chunk = redis.call('LRANGE', KEYS[1], first, first + tonumber(ARGV[4]) - 1)
for j = 1, #chunk do row(chunk[j], '') end
return reply({length})
"""
# KEYS[1]: the unacked hash. ARGV: budget, unlock task name, read limit. Values are
# ``[envelope, exchange, routing key]``. Reply as LIST_LUA's, HLEN first (nothing read beyond
# the limit).
HELD_LUA = ROW + r"""
local held = redis.call('HLEN', KEYS[1])
if held <= tonumber(ARGV[3]) then
  local cursor = '0'
  repeat
    local step = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 1000)
    cursor = step[1]
    for j = 2, #step[2], 2 do
      row(step[2][j], match(step[2][j], '"([^"]*)"%]$') or '?')
    end
  until cursor == '0'
end
return reply({held})
"""


class Listing:
    """What the script calls returned for one queue (or the unacked hash)."""

    def __init__(self) -> None:
        self.size = 0  # LLEN (HLEN) at the first call
        self.rows: list[list[str]] = []  # [kind, id, task, group, index, routing key or ""]
        self.bodies: list[str] = []  # base64 bodies of the b rows, in order
        self.wholes: list[bytes] = []  # whole messages of the f rows, in order

    def add(self, reply: list[Any]) -> int:
        """Take one script reply; return the budget left."""
        fields = _text(reply[2]).split("\t")
        self.rows += [fields[at:at + 6] for at in range(0, len(fields) - 5, 6)]
        self.bodies += _text(reply[3]).split("\n") if reply[3] else []
        self.wholes += reply[4:]
        return int(reply[1])


def read_list(client: Any, key: bytes | str, budget: int) -> tuple[Listing, int]:
    """Every message of one queue list, newest first, and the budget left."""
    script = client.register_script(LIST_LUA)
    listing = Listing()
    start = 0
    while True:
        reply = script(keys=[key], args=[budget, UNLOCK_TASK, start, PAGE], client=client)
        listing.size = listing.size or int(reply[0])
        budget = listing.add(reply)
        start += PAGE
        if start >= int(reply[0]):
            return listing, budget


def read_held(client: Any, key: bytes | str, budget: int, limit: int) -> Listing:
    """Every message of the unacked hash (none when it holds more than ``limit``)."""
    listing = Listing()
    reply = client.register_script(HELD_LUA)(keys=[key], args=[budget, UNLOCK_TASK, limit],
                                              client=client)
    listing.size = int(reply[0])
    listing.add(reply)
    return listing


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def body_bytes(payload: str) -> bytes | None:
    """The decoded body of a ``b`` row's payload (base64), or None when it is not base64."""
    try:
        return base64.b64decode(payload)
    except ValueError:
        return None
