"""Celery's Redis chord keys, read in bulk: one SCAN, then one read-only Lua call per batch.

For a chord whose header group id is ``G``, celery/backends/redis.py keeps (after the
result backend's ``global_keyprefix``)::

    celery-taskset-meta-G.s   header size, SET by set_chord_size with EX chord_expires
    celery-taskset-meta-G.j   finished parts: zset (or list) of encoded [1, tid, state, result]
    celery-taskset-meta-G.t   extra parts added later (add_to_chord)
    celery-taskset-meta-G.d   dedup set of "tid:index" (5.7 only)
    celery-taskset-meta-G.c   callback dispatch claim token, or "done" once cleaned up (5.7 only)

All five are read whatever Celery runs here (``_compat.REDIS_CHORD_SUFFIXES``): the workers
that wrote them may run another version.

Every part return re-EXPIREs .j .t .s .d to chord_expires in one Lua script, and a completed
chord's .j .t .s .d are deleted together, so an atomic read per chord sees a consistent state
(the script reads only the keys it is given; GET returns false, i.e. None, for a missing key).
Nothing here is ever unpickled: parts not encoded as JSON are counted but not decoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from ..._compat import REDIS_CHORD_SUFFIXES as SUFFIXES

SCAN_COUNT = 5000
BATCH = 500  # chords per script call: a few ms of Redis time each
# KEYS: one "<group prefix><group id>" per chord; ARGV[1]: "1" when .j is a zset.
# Per chord: PTTL of SUFFIXES in order, GET .s .t .c, then .j's members (with scores if zset).
# The whole batch comes back as ONE string (cjson, built into Redis's Lua): a nested reply
# of ~15 values per chord costs more to parse in redis-py than Redis takes to make it.
READ_CHORDS_LUA = """
local out = {}
for i, base in ipairs(KEYS) do
  local row = {}
  for _, suffix in ipairs({'.s', '.j', '.t', '.d', '.c'}) do
    row[#row + 1] = redis.call('PTTL', base .. suffix)
  end
  for _, suffix in ipairs({'.s', '.t', '.c'}) do
    row[#row + 1] = redis.call('GET', base .. suffix)
  end
  if row[2] == -2 then
    row[#row + 1] = {}
  elseif ARGV[1] == '1' then
    row[#row + 1] = redis.call('ZRANGE', base .. '.j', 0, -1, 'WITHSCORES')
  else
    row[#row + 1] = redis.call('LRANGE', base .. '.j', 0, -1)
  end
  out[i] = row
end
return cjson.encode(out)
"""
META_PER_CHORD = 8  # header results (for date_done) read per chord, at most
# ARGV: cursor, MATCH pattern, COUNT, length of the group prefix -> {cursor, cjson of ids}
SCAN_IDS_LUA = """
local reply = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local start, seen, ids = tonumber(ARGV[4]) + 1, {}, {}
for _, key in ipairs(reply[2]) do
  local suffix = string.sub(key, -2)
  if suffix == '.s' or suffix == '.j' or suffix == '.t' or suffix == '.d' or suffix == '.c' then
    local id = string.sub(key, start, -3)
    if not seen[id] then
      seen[id] = true
      ids[#ids + 1] = id
    end
  end
end
return {reply[1], cjson.encode(ids)}
"""
# KEYS: result keys -> cjson of their values (false: missing)
MGET_LUA = "return cjson.encode(redis.call('MGET', unpack(KEYS)))"


@dataclass
class RawPart:
    """One entry of ``.j``: a finished header task, or an undecodable entry (``task_id`` None)."""

    task_id: str | None
    state: str | None
    result: Any = None
    index: int | None = None
    meta: dict[str, Any] | None = None  # its celery-task-meta record when read


@dataclass
class RawChord:
    """What the keys of one chord said, at one instant."""

    group_id: str
    ttl_ms: dict[str, int] = field(default_factory=dict)  # suffix -> PTTL (-1 none, -2 missing)
    size: int | None = None
    extra: int = 0
    claim: str | None = None
    parts: list[RawPart] = field(default_factory=list)
    undecodable: int = 0

    def exists(self, suffix: str) -> bool:
        return self.ttl_ms.get(suffix, -2) != -2


def _glob_escape(prefix: bytes) -> bytes:
    out = bytearray()
    for byte in prefix:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)


def scan_group_ids(client: Any, group_prefix: bytes) -> set[str]:
    """Group ids that have at least one chord key (``.s .j .t .d .c``) under ``group_prefix``:
    SCAN run by a read-only script that returns each step's ids as one string."""
    script = client.register_script(SCAN_IDS_LUA)
    ids: set[str] = set()
    cursor = "0"
    while True:
        cursor, packed = script(args=[cursor, _glob_escape(group_prefix) + b"*",
                                      SCAN_COUNT, len(group_prefix)], client=client)
        found = _unpack(packed)
        ids.update(found if isinstance(found, list) else [])  # cjson makes {} of no ids
        if cursor in (b"0", "0", 0):
            return ids


def _unpack(packed: bytes) -> Any:
    """A script's cjson reply. cjson copies bytes that are not UTF-8 (a pickled value) as
    they are: they are kept as surrogates, so such a value fails its own decoding only."""
    return json.loads(packed.decode("utf-8", "surrogateescape"))


def _decode_part(member: str, score: float | None) -> RawPart:
    try:
        _, task_id, state, result = json.loads(member)
    except (ValueError, TypeError):  # not JSON (pickle, msgpack...) or not the expected shape
        return RawPart(None, None)
    index = int(score) if score is not None and score not in (float("inf"), float("-inf")) \
        else None
    return RawPart(str(task_id), state, result, index)


def _int(value: str | bool) -> int | None:
    try:
        return None if isinstance(value, bool) else int(value)  # false: no such key
    except ValueError:
        return None


def read_chords(client: Any, group_prefix: bytes, ordered: bool, group_ids: list[str],
                ) -> list[RawChord]:
    """The chord keys of ``group_ids`` (``group_prefix + id + suffix``, as Celery builds them):
    one read-only script call per batch, so each batch is one atomic round trip."""
    script = client.register_script(READ_CHORDS_LUA)
    out: list[RawChord] = []
    it = iter(group_ids)
    while batch := list(islice(it, BATCH)):
        rows = _unpack(script(keys=[group_prefix + gid.encode() for gid in batch],
                              args=[1 if ordered else 0], client=client))
        out += [_raw_chord(gid, row, ordered) for gid, row in zip(batch, rows, strict=True)]
    return out


def _raw_chord(gid: str, row: list[Any], ordered: bool) -> RawChord:
    raw = RawChord(gid, dict(zip(SUFFIXES, row[:5], strict=True)))
    raw.size, raw.extra = _int(row[5]), _int(row[6]) or 0
    raw.claim = row[7] if isinstance(row[7], str) else None  # false: no such key
    members = row[8] if isinstance(row[8], list) else []  # cjson makes {} of an empty table
    pairs = zip(members[::2], members[1::2], strict=True) if ordered \
        else ((m, None) for m in members)
    for member, score in pairs:
        part = _decode_part(member, None if score is None else float(score))
        raw.parts.append(part)
        raw.undecodable += part.task_id is None
    return raw


def read_metas(client: Any, task_prefix: bytes, chords: list[RawChord]) -> None:
    """Attach the JSON result record (date_done, traceback) of a few parts of each chord."""
    wanted = [part for raw in chords
              for part in [p for p in raw.parts if p.task_id][:META_PER_CHORD]]
    script = client.register_script(MGET_LUA)
    it = iter(wanted)
    while batch := list(islice(it, BATCH * META_PER_CHORD)):  # within Lua's unpack limit
        values = _unpack(script(keys=[task_prefix + part.task_id.encode() for part in batch],
                                client=client))
        for part, value in zip(batch, values, strict=True):
            if not isinstance(value, str):  # false: no such key
                continue
            try:
                meta = json.loads(value)
            except ValueError:  # not JSON: never unpickled
                continue
            if isinstance(meta, dict):
                part.meta = meta
