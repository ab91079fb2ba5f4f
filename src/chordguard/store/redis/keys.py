"""The Redis store's key layout. Every key starts with ``chordguard:``.

Every key of one chord or barrier carries its id as a hash tag (``{<id>}``), so on a Redis
Cluster they share one slot and each Lua call touches one slot. The cross-chord indexes
(``open``, ``dlq``, ``breakers``, ``due:<app>``) are one key each: a write updates the
chord's own keys first (one Lua call), then the index; readers take index entries as hints,
check each against the chord's own keys and drop the stale ones. So a listing is one read
of one key on any deployment, and no write ever spans two slots.

Journal:
- ``{<id>}:chord`` hash: a journaled chord — ``data`` (the record's JSON), ``state``,
  ``reason``, ``ended_at``, ``polls``, ``duplicates``; expires ``retention`` after it ends;
- ``{<id>}:parts`` hash: task id -> ``state|at`` of each finished header part;
- ``open`` zset: open chord ids by deadline (none: ``NO_DEADLINE``).

Leases: ``lease:<name>`` string: the holder, expiring with the lease (unlock leases
``unlock:<chord>``, run-once claims ``run:<chord>``, reaper locks ``reaper:<app>``, ...).

Dead letters: ``dlq`` zset of ids by creation time; ``dlq:<id>`` the letter's JSON.
Breakers: ``breakers`` set of names; ``breaker:<name>`` its JSON (with its version).

Barriers (``durable:``): ``{<id>}:b`` hash, the barrier field by field (the codec's
``to_row``); ``{<id>}:p`` hash, header index -> the part's envelope; ``{<id>}:h`` the header
task ids (JSON); ``due:<app>`` zset of an app's in-flight barrier ids by when the reaper
must look at the latest (a completion never writes it: the reaper re-scores an entry it
finds early). Finished barriers' keys expire ``KEEP_SECONDS`` after they end.
"""

from __future__ import annotations

PREFIX = "chordguard:"
BARRIER_PREFIX = PREFIX + "durable:"
NO_DEADLINE = 1e18

OPEN = PREFIX + "open"
DEAD_LETTERS = PREFIX + "dlq"
BREAKERS = PREFIX + "breakers"


def chord(chord_id: str) -> str:
    return f"{PREFIX}{{{chord_id}}}:chord"


def parts(chord_id: str) -> str:
    return f"{PREFIX}{{{chord_id}}}:parts"


def lease(name: str) -> str:
    return f"{PREFIX}lease:{name}"


def dead_letter(letter_id: str) -> str:
    return f"{PREFIX}dlq:{letter_id}"


def breaker(name: str) -> str:
    return f"{PREFIX}breaker:{name}"


def barrier(barrier_id: str) -> tuple[str, str, str]:
    """The barrier hash, its parts' envelopes, its header ids (one hash tag: one slot)."""
    tagged = f"{BARRIER_PREFIX}{{{barrier_id}}}"
    return f"{tagged}:b", f"{tagged}:p", f"{tagged}:h"


def due(app: str) -> str:
    return f"{BARRIER_PREFIX}due:{app}"
