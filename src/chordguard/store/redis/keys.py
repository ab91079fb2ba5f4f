"""The Redis store's key layout. Every key starts with ``chordguard:``.

Journal:
- ``chord:<id>`` hash: a journaled chord — ``data`` (the record's JSON), ``state``,
  ``reason``, ``ended_at``, ``polls``, ``duplicates``; expires ``retention`` after it ends;
- ``parts:<id>`` hash: task id -> ``state|at`` of each finished header part;
- ``open`` zset: open chord ids by deadline (none: ``NO_DEADLINE``).

Leases: ``lease:<name>`` string: the holder, expiring with the lease (unlock leases
``unlock:<chord>``, run-once claims ``run:<chord>``, reaper locks ``reaper:<app>``, ...).

Dead letters: ``dlq`` zset of ids by creation time; ``dlq:<id>`` the letter's JSON.
Breakers: ``breakers`` set of names; ``breaker:<name>`` its JSON (with its version).

Barriers (``durable:``): ``b:<id>`` hash, the barrier field by field (the codec's
``to_row``); ``p:<id>`` hash, header index -> the part's envelope; ``h:<id>`` the header
task ids (JSON); ``due:<app>`` zset of an app's in-flight barrier ids by when the reaper
must look. Finished barriers' keys expire ``KEEP_SECONDS`` after they end.
"""

from __future__ import annotations

PREFIX = "chordguard:"
BARRIER_PREFIX = PREFIX + "durable:"
NO_DEADLINE = 1e18

OPEN = PREFIX + "open"
DEAD_LETTERS = PREFIX + "dlq"
BREAKERS = PREFIX + "breakers"


def chord(chord_id: str) -> str:
    return f"{PREFIX}chord:{chord_id}"


def parts(chord_id: str) -> str:
    return f"{PREFIX}parts:{chord_id}"


def lease(name: str) -> str:
    return f"{PREFIX}lease:{name}"


def dead_letter(letter_id: str) -> str:
    return f"{PREFIX}dlq:{letter_id}"


def breaker(name: str) -> str:
    return f"{PREFIX}breaker:{name}"


def barrier(barrier_id: str) -> tuple[str, str, str]:
    """The barrier hash, its parts' envelopes, its header ids."""
    return (f"{BARRIER_PREFIX}b:{barrier_id}", f"{BARRIER_PREFIX}p:{barrier_id}",
            f"{BARRIER_PREFIX}h:{barrier_id}")


def due(app: str) -> str:
    return f"{BARRIER_PREFIX}due:{app}"
