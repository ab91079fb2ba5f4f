"""What a Celery version gets wrong with chords, and what chordguard does about each (pure).

The facts come from ``_compat.CeleryFacts``; this module only words them, for ``doctor``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .._compat import SUPPORTED, CeleryFacts


@dataclass(frozen=True)
class Hazard:
    """One known problem of a Celery version: which chords it hits (``unlock``, ``redis``),
    what happens, and what chordguard does about it."""

    code: str
    kinds: tuple[str, ...]
    what: str
    chordguard: str


def _range(bounds: tuple[tuple[int, int], tuple[int, int]]) -> str:
    return " to ".join(".".join(map(str, bound)) for bound in bounds)


HAZARDS: list[tuple[Callable[[CeleryFacts], bool], Hazard]] = [
    (lambda f: not f.supported, Hazard(
        "untested_celery_version", ("unlock", "redis"),
        f"chordguard is tested with Celery {_range(SUPPORTED)}; it reads Celery's own chord "
        "state (Redis keys, chord_unlock messages, result rows), which may differ here.",
        "Nothing specific: use a Celery in the tested range.")),
    (lambda f: not f.nested_chain_failure_propagates, Hazard(
        "nested_chain_failure", ("unlock",),
        "celery#9674: a task failing inside a chain that is a chord header member leaves the "
        "chain's last result PENDING, so chord_unlock polls forever and the callback never "
        "runs (fixed in Celery 5.7).",
        "The monitor names it nested_chain_failed; the guard's bounded unlock ends the chord "
        "by its deadline (callback FAILURE with ChordError, errbacks run, dead-lettered); "
        "`chordguard revoke` ends one now. Install the guard, or upgrade to Celery 5.7.")),
    (lambda f: not f.unlock_give_up_fails_callback, Hazard(
        "unlock_gives_up_silently", ("unlock",),
        "When chord_unlock cannot retry (a max_retries annotation runs out, the broker "
        "refuses the retry), the callback stays PENDING forever and nothing fails (Celery 5.7 "
        "fails it with ChordError).",
        "The guard's unlock ignores max_retries and ends a chord only at its deadline, "
        "failing the callback; doctor flags max_retries annotations (unlock_max_retries). "
        "Without the guard no unlock message is left for the monitor to see.")),
    (lambda f: not f.redis_parts_deduplicated, Hazard(
        "redis_parts_counted_twice", ("redis",),
        "A header part delivered twice (acks_late redelivery) is counted twice in the Redis "
        "chord: the callback can run early, without a part's result, or twice (5.7 dedups).",
        "@chordguard.chord_callback makes a callback body run once per chord; the guard's "
        "journal counts each part once; durable_chord keeps its own deduplicated count.")),
    (lambda f: not f.errback_arity_ignores_bound_args, Hazard(
        "errback_taken_for_old_style", ("unlock", "redis"),
        "An errback task with two or more positional parameters is called in-process as an "
        "old-style (request, exc, traceback) errback even when its signature binds them: it "
        "raises TypeError and never runs (5.7 counts only the unbound ones).",
        "Failing a chord (revoke, the guard, durable_chord) runs errbacks through Celery's "
        "chord_error_from_stack, so the same rule holds: give errbacks one positional "
        "parameter (the failed task id) and keyword-only options.")),
    (lambda f: not f.result_chord_expires, Hazard(
        "no_result_chord_expires", ("redis",),
        "result_chord_expires does not exist (ignored if set): Redis chord keys expire with "
        "result_expires.",
        "The monitor (counter_expiring) and doctor (results_expire_before_chord) use "
        "result_expires as the chord key lifetime on this version.")),
    (lambda f: f.keyprefix_always_separated, Hazard(
        "keyprefix_separator", ("redis",),
        "With a result backend global_keyprefix, Celery 5.3/5.4 put '_' after it even when it "
        "ends in ':_-.', 5.5+ do not: workers either side of that upgrade use different chord "
        "keys, and Redis chords in flight during the upgrade never complete.",
        "The monitor reads keys as the Celery installed beside it builds them: run it with "
        "your workers' version; finish or `chordguard revoke` in-flight chords before "
        "upgrading past 5.4.")),
]


def hazards(facts: CeleryFacts) -> list[Hazard]:
    """The known hazards of the Celery version in ``facts``."""
    return [hazard for applies, hazard in HAZARDS if applies(facts)]
