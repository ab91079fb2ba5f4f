"""Pure functions from the model to diagnoses: no I/O here.

Each rule looks at one chord and the cluster facts and returns a Diagnosis or None.
``CATALOG`` documents every code (docs/diagnoses.md is generated from it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..model import (
    FAILED_STATES,
    READY_STATES,
    Chord,
    ChordKind,
    ClusterFacts,
    Diagnosis,
    Severity,
    format_seconds,
)


@dataclass(frozen=True)
class Code:
    """A diagnosis code: its severity, what it means, and what to do."""

    code: str
    severity: Severity
    explanation: str
    next_step: str


CATALOG: dict[str, Code] = {c.code: c for c in [
    Code("stuck", Severity.BLOCKING,
         "No header part of this chord has finished for longer than the allowed idle time.",
         "Look at the other diagnoses for the cause; `chordguard revoke` fails the chord so "
         "waiters stop waiting."),
    Code("lost_header", Severity.BLOCKING,
         "A header task's result is gone or was never stored, and no worker or queue holds "
         "the task: it reads PENDING forever, so chord_unlock polls forever (a Redis chord's "
         "count never completes and its callback never fires). Redis chords keep only the "
         "ids of finished parts: there it counts the parts neither finished nor held anywhere.",
         "Fail the chord with `chordguard revoke`; keep results longer than your longest chord "
         "(result_expires) and never delete header results while a chord waits."),
    Code("counter_lost", Severity.BLOCKING,
         "The chord counter is gone while parts remain (Redis: the .s key; django-db: the "
         "ChordCounter row): the last header task cannot know it is last, so the callback "
         "will never fire (Redis logs nothing; django-db logs \"Can't find ChordCounter\").",
         "Fail the chord with `chordguard revoke`; raise result_chord_expires above your "
         "longest chord."),
    Code("counter_mismatch", Severity.BLOCKING,
         "django-db: the ChordCounter's count disagrees with the header parts still "
         "unfinished. Lower: a part was counted twice (django-celery-results#397), so the "
         "count reaches 0 early, the row is deleted and the callback never fires. Higher: a "
         "part finished without counting down, so the count never reaches 0.",
         "Fail the chord with `chordguard revoke`; make header parts run once (no acks_late "
         "redelivery of finished tasks, visibility_timeout above the longest task)."),
    Code("counter_expiring", Severity.WARNING,
         "The Redis chord counter's TTL will run out before the header is likely to finish.",
         "Raise result_chord_expires (or result_expires) above the longest chord's duration."),
    Code("unlock_storm", Severity.BLOCKING,
         "More than one celery.chord_unlock chain polls this chord: retries arrive faster than "
         "one per interval and each worker restart can multiply them.",
         "Fail the chord with `chordguard revoke`, which revokes every copy; install the "
         "chordguard guard, whose unlock holds a lease so a duplicate chain stops."),
    Code("header_failed", Severity.BLOCKING,
         "A header task failed; the callback will receive a ChordError instead of results.",
         "Inspect the failed header's traceback; make header tasks return failure envelopes "
         "(@chordguard.header_task) if the callback should see partial results."),
    Code("nested_chain_failed", Severity.BLOCKING,
         "A header member is a chain in which a task failed. Celery before 5.7 never "
         "propagates that failure to the chord (celery#9674): the chain's last task stays "
         "PENDING and chord_unlock polls forever.",
         "Fail the chord with `chordguard revoke` so its errbacks run; upgrade to Celery 5.7, "
         "or install the chordguard guard, which ends such a chord by its deadline."),
    Code("callback_failed", Severity.BLOCKING,
         "The chord's callback raised; the chord's work is done but its result is lost.",
         "Fix the callback (it must accept what the header returns, including None), then "
         "replay it from the dead-letter queue if the guard is installed."),
    Code("orphaned_body", Severity.BLOCKING,
         "Every header task is ready but the callback was never published: the unlock task "
         "gave up or was revoked, or the counter was lost.",
         "Fail the chord with `chordguard revoke` so its errbacks run, or re-run the callback "
         "by hand with the header's results."),
    Code("no_consumer", Severity.BLOCKING,
         "A header task or the chord_unlock task waits in a queue that no running worker "
         "consumes, so it will never run.",
         "Start a worker for that queue (-Q) or fix the task routing; then the chord proceeds."),
    Code("duplicate_callback", Severity.WARNING,
         "The chord's callback was delivered more than once (acks_late redelivery, a "
         "visibility timeout shorter than the callback, a worker lost mid-run): unless it is "
         "run-once, its body runs twice.",
         "Make the callback idempotent or run-once (@chordguard.chord_callback in a guarded "
         "app stops extra deliveries); raise visibility_timeout above its time limit."),
    Code("durable_overdue", Severity.BLOCKING,
         "A durable chord is past its deadline and still in flight: no reaper is running for "
         "its app, so nothing will end it.",
         "Run `chordguard -A proj reap` (or schedule the beat task chordguard.durable.reap); "
         "`chordguard revoke` fails it now."),
]}

KINDS = {"redis": "Redis chord", "unlock": "chord_unlock chord", "django": "django-db chord",
         "guarded": "guarded (journal)", "durable": "durable"}
"""The chord kinds docs/diagnoses.md tells evidence for (guarded: any kind, guard installed)."""
HOLDINGS = "queue peek + workers' reserved/active (shared look-up)"
NONE = "does not apply"

EVIDENCE: dict[str, dict[str, str]] = {
    "stuck": {
        "redis": "idle since the last part recorded in the chord's `.j` key",
        "unlock": "header results' done times and the unlock message's retries (a lower "
                  "bound of the age)",
        "django": "TaskResult.date_done of the last finished header part; age from "
                  "GroupResult.date_created, else a lower bound (earliest TaskResult)",
        "guarded": "journal: exact publication time and last finished header part",
        "durable": "barrier: creation time and last completed part"},
    "lost_header": {
        "redis": f"header result PENDING + {HOLDINGS}; complete view, past the grace",
        "unlock": f"header result PENDING + {HOLDINGS}; complete view, past the grace",
        "django": f"ids from ChordCounter.sub_tasks, no TaskResult row + {HOLDINGS}; "
                  "complete view, two looks, past the grace",
        "guarded": "as its kind, every header id from the journal; the guard's unlock also "
                   "ends the chord (journal saw the part finish, its result reads PENDING)",
        "durable": f"{NONE}: the barrier counts parts; its deadline ends the chord"},
    "counter_lost": {
        "redis": "the chord's Redis keys: `.s` gone while `.j` remains",
        "unlock": NONE,
        "django": "no ChordCounter row while the journal or a queued header message names "
                  "the chord and header parts remain unfinished (TaskResult)",
        "guarded": "as its kind; the reaper ends it by its deadline",
        "durable": NONE},
    "counter_mismatch": {
        "redis": NONE, "unlock": NONE,
        "django": "ChordCounter.count against the header parts without a ready TaskResult, "
                  "idle past 20 s",
        "guarded": "as a django-db chord; the reaper ends it by its deadline",
        "durable": NONE},
    "counter_expiring": {
        "redis": "`.s` TTL against the idle time and mean gap between part returns",
        "unlock": NONE, "django": NONE,
        "guarded": "as a Redis chord, with the journal's exact age",
        "durable": NONE},
    "unlock_storm": {
        "redis": NONE,
        "unlock": f"two observations of chord_unlock copies ({HOLDINGS}, scheduled) and "
                  "their retries counts",
        "django": NONE,
        "guarded": "the guard's unlock holds a lease: a duplicate chain stops (journal counts "
                   "it)",
        "durable": NONE},
    "header_failed": {
        "redis": "header results FAILURE/REVOKED (header ids from the chord's messages)",
        "unlock": "header results FAILURE/REVOKED (header ids from the unlock message)",
        "django": "TaskResult FAILURE/REVOKED of the ids in ChordCounter.sub_tasks",
        "guarded": "header results of every header id in the journal",
        "durable": "barrier: failed parts"},
    "nested_chain_failed": {
        "redis": "not detected",
        "unlock": "a PENDING header part's chain parents (unlock message) and their results",
        "django": "not detected",
        "guarded": "as its kind; the guard's unlock ends the chord by its deadline",
        "durable": NONE},
    "callback_failed": {
        "redis": "callback result FAILURE (callback id from the header messages)",
        "unlock": "callback result FAILURE (callback id from the unlock message)",
        "django": "callback id from the header messages or the journal; its TaskResult "
                  "FAILURE",
        "guarded": "callback id from the journal and its result; the dead letter keeps its "
                   "inputs",
        "durable": "callback id from the barrier and its result"},
    "orphaned_body": {
        "redis": "the chord's Redis keys: count complete, no `.c` dispatch claim, past 20 s",
        "unlock": "every header ready, callback PENDING, every unlock copy left revoked "
                  "(workers' revoked lists)",
        "django": "no ChordCounter row, every header part ready (TaskResult), the callback "
                  f"PENDING and held nowhere ({HOLDINGS}, complete view), past 20 s",
        "guarded": "as its kind",
        "durable": f"{NONE}: the reaper reclaims a dispatch claim that lapsed"},
    "no_consumer": {
        "redis": f"{HOLDINGS}: a pending header in a queue no worker consumes",
        "unlock": f"{HOLDINGS}: a pending header or unlock message in a queue no worker "
                  "consumes",
        "django": f"{HOLDINGS}: a pending header in a queue no worker consumes",
        "guarded": "as its kind",
        "durable": "not detected"},
    "duplicate_callback": {
        "redis": "not detected without the guard (nothing names the callback once published)",
        "unlock": "`chordguard watch` (task events): the callback id, named by the unlock "
                  "polls, started twice",
        "django": "not detected without the guard",
        "guarded": "journal: deliveries the run-once claim stopped "
                   "(`@chordguard.chord_callback`)",
        "durable": "not detected"},
    "durable_overdue": {
        "redis": NONE, "unlock": NONE,
        "django": NONE,
        "guarded": f"{NONE}: the guard's reaper ends chords at their deadline",
        "durable": "barrier (store): deadline passed, still in flight"},
}
"""Per code and chord kind, the evidence the rule needs (docs/diagnoses.md shows it)."""

Rule = Callable[[Chord, ClusterFacts], Diagnosis | None]


def make(code: str, summary: str, **evidence: object) -> Diagnosis:
    """A Diagnosis for ``code`` with its catalogued explanation and next step."""
    entry = CATALOG[code]
    return Diagnosis(code=code, severity=entry.severity, summary=summary,
                     explanation=entry.explanation, next_step=entry.next_step,
                     evidence=dict(evidence))


def header_failed(chord: Chord, facts: ClusterFacts) -> Diagnosis | None:
    failed = [p for p in chord.header if p.state in FAILED_STATES]
    if not failed:
        return None
    first = failed[0]
    return make("header_failed", f"{len(failed)} header task(s) failed, first {first.task_id}",
                failed=[p.task_id for p in failed], states=[p.state for p in failed])


def nested_chain_failed(chord: Chord, facts: ClusterFacts) -> Diagnosis | None:
    """A PENDING header part ends a chain in which an earlier task failed (celery#9674)."""
    parts = [p for p in chord.header if p.failed_upstream and p.state in (None, "PENDING")]
    if not parts:
        return None
    first = parts[0]
    return make("nested_chain_failed",
                f"header {first.task_id} ends a chain whose task {first.failed_upstream} "
                "failed; Celery never propagated it to the chord (celery#9674)",
                pending=[p.task_id for p in parts],
                failed=[p.failed_upstream for p in parts])


def callback_failed(chord: Chord, facts: ClusterFacts) -> Diagnosis | None:
    if chord.callback_state != "FAILURE":
        return None
    return make("callback_failed", f"callback {chord.callback_name} ({chord.callback_id}) raised",
                callback_id=chord.callback_id, state=chord.callback_state)


ORPHAN_GRACE_SECONDS = 20.0  # since the last part; Celery re-takes a lapsed claim sooner


def _redis_ttl(chord: Chord, suffix: str) -> int | None:
    """TTL in seconds of the chord's Redis key ending in ``suffix`` (-1: none; None: missing)."""
    return next((ttl for key, ttl in chord.redis_keys.items() if key.endswith(suffix)), None)


def counter_lost(chord: Chord, facts: ClusterFacts) -> Diagnosis | None:
    """Redis: the ``.s`` size key is gone while other keys of the chord remain."""
    if chord.kind is not ChordKind.REDIS or not chord.redis_keys:
        return None
    size_gone = any(key.endswith(".s") and ttl is None for key, ttl in chord.redis_keys.items())
    remaining = [key for key, ttl in chord.redis_keys.items() if ttl is not None
                 and not key.endswith(".c")]
    if not size_gone or not remaining:
        return None
    return make("counter_lost", f".s counter gone; {chord.done} part(s) recorded in .j",
                remaining_keys=remaining, done=chord.done)


def counter_expiring(chord: Chord, facts: ClusterFacts) -> Diagnosis | None:
    """Redis: the ``.s`` TTL is likely to run out before the next header part returns.

    Each part return resets the TTL, so the counter survives as long as no gap between part
    returns exceeds chord_expires. The expected wait for the next return is taken as the
    larger of (a) the idle time so far (a part that has not finished after ``idle`` seconds
    is, by the usual survival estimate, as likely as not to need ``idle`` more) and (b) the
    mean interval between returns so far (age / done). Fires when that wait is at least the
    TTL left, i.e. at the earliest after half of chord_expires without progress: never on a
    cluster whose chords make progress well within chord_expires.
    """
    ttl = _redis_ttl(chord, ".s")
    if chord.kind is not ChordKind.REDIS or ttl is None or ttl < 0 or chord.total is None \
            or chord.idle is None or chord.done >= chord.total:
        return None
    gap = chord.age.seconds / chord.done if chord.done and chord.age else 0.0
    wait = max(chord.idle.seconds, gap)
    if wait < ttl:
        return None
    return make("counter_expiring",
                f".s expires in {format_seconds(ttl)}; {chord.total - chord.done} part(s) left, "
                f"expected wait for the next ≈ {format_seconds(wait)}",
                ttl_seconds=ttl, idle_seconds=chord.idle.seconds, mean_gap_seconds=gap,
                remaining=chord.total - chord.done)


def orphaned_redis_body(chord: Chord, facts: ClusterFacts) -> Diagnosis | None:
    """Redis: every part recorded and the count complete, yet the keys linger with no dispatch
    claim (``.c``) past a grace period: the worker that claimed the callback died before
    publishing it (Celery deletes the keys once it has published)."""
    if chord.kind is not ChordKind.REDIS or chord.total is None or chord.done < chord.total \
            or _redis_ttl(chord, ".s") is None or _redis_ttl(chord, ".c") is not None \
            or chord.idle is None or chord.idle.seconds < ORPHAN_GRACE_SECONDS:
        return None
    return make("orphaned_body",
                f"all {chord.total} parts returned {chord.idle.label()} ago, callback never "
                "published (no dispatch claim left)",
                done=chord.done, total=chord.total, idle_seconds=chord.idle.seconds,
                grace_seconds=ORPHAN_GRACE_SECONDS)


def counter_row_lost(chord: Chord, facts: ClusterFacts) -> Diagnosis | None:
    """django-db: no ChordCounter row while header parts remain unfinished."""
    if chord.kind is not ChordKind.DJANGO or not chord.counter_gone:
        return None
    unfinished = [p.task_id for p in chord.header if p.state not in READY_STATES]
    if not unfinished:
        return None
    return make("counter_lost", f"ChordCounter row gone while {len(unfinished)} header "
                "part(s) remain: the callback will never fire", unfinished=unfinished)


def counter_mismatch(chord: Chord, facts: ClusterFacts) -> Diagnosis | None:
    """django-db: the row's count is not the number of unfinished parts, with no part
    finished for ``ORPHAN_GRACE_SECONDS`` (a part between its result and its count-down is
    a moment's difference)."""
    span = chord.idle or chord.age
    if chord.kind is not ChordKind.DJANGO or chord.counter is None or not chord.header \
            or span is None or span.seconds < ORPHAN_GRACE_SECONDS:
        return None
    unfinished = sum(1 for p in chord.header if p.state not in READY_STATES)
    if chord.counter == unfinished:
        return None
    why = ("a part was counted twice (django-celery-results#397): the count reaches 0 early "
           "and the callback never fires") if chord.counter < unfinished else \
        "a part finished without counting down: the count never reaches 0"
    return make("counter_mismatch", f"ChordCounter.count {chord.counter}, {unfinished} header "
                f"part(s) unfinished: {why}", count=chord.counter, unfinished=unfinished,
                idle_seconds=span.seconds)


def orphaned_django_body(chord: Chord, facts: ClusterFacts) -> Diagnosis | None:
    """django-db: every part ready, the row gone, the callback neither ready nor held by a
    queue or worker (a complete view) past a grace period: the count reached 0 early (#397)
    or the row was deleted, and no part is left to publish the callback."""
    if chord.kind is not ChordKind.DJANGO or not chord.counter_gone or not chord.header \
            or not facts.holdings_complete or chord.callback_held_by is not None \
            or chord.callback_state not in (None, "PENDING") \
            or any(p.state not in READY_STATES for p in chord.header) \
            or chord.idle is None or chord.idle.seconds < ORPHAN_GRACE_SECONDS:
        return None
    return make("orphaned_body", f"all {len(chord.header)} header parts are ready and the "
                "ChordCounter row is gone, but the callback was never published",
                idle_seconds=chord.idle.seconds, grace_seconds=ORPHAN_GRACE_SECONDS)


def lost_header(chord: Chord, facts: ClusterFacts) -> Diagnosis | None:
    """A header PENDING (no result) that no worker or queue holds, once the chord is older
    than ``facts.lost_header_grace`` (so headers still being published are not counted).
    Needs a complete view of the holdings: every inspect command answered, every queue read.
    Redis chords keep no pending header ids: there it is the count of parts neither finished
    nor held anywhere (``Chord.unaccounted``)."""
    if not facts.holdings_complete or chord.age is None \
            or chord.age.seconds < facts.lost_header_grace:
        return None
    lost = [] if chord.kind is ChordKind.REDIS else [
        p.task_id for p in chord.header if p.state in (None, "PENDING")
        and p.held_by is None and p.task_id not in facts.queued and not p.failed_upstream]
    count = (chord.unaccounted or 0) if chord.kind is ChordKind.REDIS else len(lost)
    if not count:
        return None
    which = f"first {lost[0]}" if lost else "ids unknown (Celery keeps only finished ones)"
    return make("lost_header", f"{count} header task(s) have no result and no worker or "
                f"queue holds them, {which}", lost=lost, age_seconds=chord.age.seconds,
                age_basis=chord.age.basis, grace_seconds=facts.lost_header_grace,
                workers=facts.workers)


def unlock_storm(chord: Chord, facts: ClusterFacts) -> Diagnosis | None:
    """More than one live chord_unlock chain (confirmed by two observations)."""
    if not chord.unlock_chains or chord.unlock_chains < 2:
        return None
    return make("unlock_storm", f"{chord.unlock_chains} chord_unlock chains poll this chord, "
                f"≈ {chord.unlock_chains / facts.retry_interval:g} polls/s instead of "
                f"{1 / facts.retry_interval:g}", chains=chord.unlock_chains,
                copies=[(c.task_id, c.retries, c.where) for c in chord.unlock_copies])


def orphaned_unlock_body(chord: Chord, facts: ClusterFacts) -> Diagnosis | None:
    """Unlock chords: every header ready, the callback PENDING, and every chord_unlock copy
    left is revoked, so nothing will publish the callback."""
    if chord.kind is not ChordKind.UNLOCK or not chord.header \
            or chord.callback_state not in (None, "PENDING") \
            or any(p.state not in READY_STATES for p in chord.header) \
            or any(not c.revoked for c in chord.unlock_copies):
        return None
    return make("orphaned_body", f"all {len(chord.header)} header tasks are ready but every "
                "chord_unlock copy left is revoked: the callback will never be published",
                revoked=[c.task_id for c in chord.unlock_copies])


def no_consumer(chord: Chord, facts: ClusterFacts) -> Diagnosis | None:
    """A pending header or an unlock message waits in a queue no running worker consumes."""
    consumed = facts.consumed_queues
    if consumed is None:
        return None
    headers = {p.task_id: q for p in chord.header if p.state in (None, "PENDING")
               and (q := facts.queued.get(p.task_id)) and q not in consumed}
    unlocks = {c.task_id: c.where.removeprefix("queue:") for c in chord.unlock_copies
               if c.where.startswith("queue:") and c.where.removeprefix("queue:") not in consumed}
    if not headers and not unlocks:
        return None
    queues = sorted(set(headers.values()) | set(unlocks.values()))
    return make("no_consumer", f"{len(headers) + len(unlocks)} message(s) wait in "
                f"{', '.join(queues)}, which no running worker consumes", queues=queues,
                headers=headers, unlocks=unlocks, workers=facts.workers)


def duplicate_callback(chord: Chord, facts: ClusterFacts) -> Diagnosis | None:
    """The callback was delivered more than once: extra deliveries the guard's run-once
    claim stopped (journal). Without the guard, ``chordguard watch`` reports the same code
    from task events (``monitor.events``)."""
    if chord.callback_duplicates < 1:
        return None
    return make("duplicate_callback", f"callback {chord.callback_name} ({chord.callback_id}) "
                f"delivered {chord.callback_duplicates} extra time(s); the guard ran it once",
                callback_id=chord.callback_id, stopped_by_guard=chord.callback_duplicates)


def durable_overdue(chord: Chord, facts: ClusterFacts) -> Diagnosis | None:
    if chord.kind not in (ChordKind.DURABLE, ChordKind.STORE) or chord.deadline_at is None \
            or facts.now < chord.deadline_at:
        return None
    late = (facts.now - chord.deadline_at).total_seconds()
    return make("durable_overdue", f"deadline passed {format_seconds(late)} ago, not reaped",
                deadline_at=chord.deadline_at.isoformat(), seconds_late=late)


RULES: list[Rule] = [header_failed, nested_chain_failed, callback_failed, counter_lost,
                     counter_row_lost, counter_mismatch, counter_expiring, orphaned_redis_body,
                     orphaned_django_body, lost_header, unlock_storm, orphaned_unlock_body,
                     no_consumer, duplicate_callback, durable_overdue]
AFTER_END: list[Rule] = [duplicate_callback]  # still true of a chord that has ended


def diagnose(chord: Chord, facts: ClusterFacts, stuck_after_hours: float | None = None,
             ) -> list[Diagnosis]:
    """Every diagnosis that applies to ``chord``.

    ``stuck_after_hours`` adds ``stuck`` when the chord has been idle longer than that.
    """
    found = [d for rule in RULES if (d := rule(chord, facts)) is not None]
    idle = chord.idle or chord.age
    if stuck_after_hours is not None and idle is not None \
            and idle.seconds > stuck_after_hours * 3600:
        found.insert(0, make("stuck", f"idle {idle.label()} (limit "
                             f"{format_seconds(stuck_after_hours * 3600)})",
                             idle_seconds=idle.seconds, basis=idle.basis,
                             limit_hours=stuck_after_hours))
    return found
