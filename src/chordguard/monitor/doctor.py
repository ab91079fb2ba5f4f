"""Linting a Celery configuration for chord hazards: pure functions, no I/O.

``lint(config)`` takes an :class:`AppConfig` (what the user set, the effective settings and
every task's effective options) and returns :class:`Finding` objects, each with its code, the
specific problem, why it hurts chords and how to fix it. ``config_from_app`` (the only
function that looks at a live app) builds the AppConfig.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery import Celery
from celery.app.defaults import _TO_NEW_KEY, DEFAULTS

from .._compat import INSTALLED, CeleryFacts
from ..config import STORE_ENV, installed_settings, store_identity, store_url
from ..model import Severity, format_seconds
from .celery_hazards import HAZARDS
from .diagnose import Code
from .sources import django_chords
from .sources.guard_presence import Presence, guard_presence

REDIS_DEFAULT_VISIBILITY = 3600.0  # kombu.transport.redis
SQS_DEFAULT_VISIBILITY = 1800.0  # kombu.transport.SQS
UNLOCK = "celery.chord_unlock"
CELERY_PREFIXES = ("task_", "result_", "worker_", "broker_", "beat_", "chord_", "event_")
BACKOFF_OPTIONS = ("retry_backoff", "retry_backoff_max", "retry_jitter")
RUN_ONCE_MARKS = ("chordguard_run_once", "chordguard_callback")


@dataclass(frozen=True)
class TaskFacts:
    """A task's effective options (decorator, class and ``task_annotations`` applied)."""

    name: str
    acks_late: bool = False
    time_limit: float | None = None
    soft_time_limit: float | None = None
    max_retries: int | None = None
    backoff_options: tuple[str, ...] = ()  # retry_backoff/_max/jitter set explicitly
    autoretry_for: tuple = ()
    run_once: bool = False  # the guard made its body run at most once per chord
    registered: bool = True  # False: only named in task_annotations

    @property
    def limit(self) -> float | None:
        """The longest this task may run, from its hard or else its soft time limit."""
        return self.time_limit or self.soft_time_limit


@dataclass
class AppConfig:
    """What ``lint`` reads. ``settings`` holds effective values keyed by Celery's names."""

    settings: dict[str, Any]
    user_keys: list[str] = field(default_factory=list)  # every key the user set, as written
    tasks: list[TaskFacts] = field(default_factory=list)
    guarded: bool = False  # chordguard.install(app) ran: its unlock ignores max_retries
    celery: CeleryFacts = INSTALLED  # the Celery version the app runs with
    store: str = ""  # config.store_identity of the store this process (the CLI) reads
    host: str = ""  # this process's host name
    workers: list[Presence] | None = None  # guarded workers' answers; None: not asked
    namespace: str | None = None  # Django's CELERY_: settings are shown by the names users write
    django_db: bool = False  # the result backend is django-celery-results' django-db
    django_engine: str | None = None  # the Django database engine ChordCounter is written to

    def get(self, key: str, default: Any = None) -> Any:
        value = self.settings.get(key)
        return default if value is None else value

    def task(self, name: str) -> TaskFacts | None:
        return next((t for t in self.tasks if t.name == name), None)


@dataclass
class Finding:
    """One hazard: ``summary`` says what exactly is wrong here, ``why`` and ``fix`` explain."""

    code: str
    severity: Severity
    setting: str
    summary: str
    why: str
    fix: str


CHECKS: dict[str, Code] = {c.code: c for c in [
    Code("ignored_setting", Severity.BLOCKING,
         "Celery has no such setting and ignores it silently, so whatever it was meant to "
         "bound is not bounded.",
         "Remove it. To bound chords, install the guard: chordguard.install(app, deadline=...)."),
    Code("unlock_max_retries", Severity.BLOCKING,
         "celery.chord_unlock polls the header once per result_chord_retry_interval with "
         "self.retry, so max_retries=N gives up after about N intervals: every chord longer "
         "than that fails with ChordError (celery >= 5.7) or leaves its callback PENDING "
         "forever (5.3 to 5.6).",
         "Remove max_retries from the celery.chord_unlock annotation (and from '*' "
         "annotations); bound chords by time with chordguard.install(app, deadline=...)."),
    Code("unlock_backoff_ignored", Severity.WARNING,
         "retry_backoff, retry_backoff_max and retry_jitter only shape automatic retries "
         "(autoretry_for); chord_unlock calls self.retry(countdown=interval) itself, so they "
         "do nothing and it keeps polling once per interval.",
         "Remove them; the guard's bounded unlock backs off with jitter up to a cap."),
    Code("backoff_without_autoretry", Severity.WARNING,
         "retry_backoff/retry_jitter only apply to retries triggered by autoretry_for; this "
         "task has none, so the options do nothing.",
         "Add autoretry_for=(SomeError,) to the task, or drop the backoff options."),
    Code("results_expire_before_chord", Severity.BLOCKING,
         "Header results (or the Redis chord counter) expire before the chord can finish: "
         "the header reads PENDING forever (lost_header) or the counter is lost "
         "(counter_lost), and the callback never runs.",
         "Set result_expires (and result_chord_expires on Redis) well above the longest "
         "chord, e.g. 2x its deadline."),
    Code("unbounded_chords", Severity.WARNING,
         "Nothing bounds how long a chord may run: no chordguard deadline and no task time "
         "limit, so one hung header keeps its chord (and chord_unlock polling) alive forever.",
         "Set task_time_limit (and soft limits), or chordguard.install(app, deadline=...)."),
    Code("rpc_backend_chords", Severity.BLOCKING,
         "The rpc:// result backend does not support chords: applying one raises "
         "NotImplementedError.",
         "Use a Redis or database result backend for apps that run chords."),
    Code("no_result_backend", Severity.BLOCKING,
         "Chords need a result backend to collect header results; without one they cannot "
         "run.",
         "Set result_backend (Redis, or db+postgresql://...)."),
    Code("acks_late_not_run_once", Severity.WARNING,
         "Under acks_late a message is redelivered when its worker dies before acking: a "
         "callback body can run twice (duplicate_callback), and a chord_unlock redelivered "
         "after it already published its retry starts a second polling chain (unlock_storm).",
         "Decorate callbacks with @chordguard.chord_callback (run-once) and install the guard "
         "(its unlock holds a lease), or turn acks_late off for callbacks and chord_unlock."),
    Code("visibility_timeout_short", Severity.BLOCKING,
         "The broker redelivers a message not acked within visibility_timeout; an acks_late "
         "task allowed to run longer than that is delivered again while it still runs: "
         "duplicate headers, callbacks and unlock chains.",
         "Raise broker_transport_options['visibility_timeout'] above the longest task time "
         "limit and countdown."),
    Code("events_disabled", Severity.WARNING,
         "Workers send no task events, so `chordguard watch`, Flower and exporters cannot see "
         "unlock retry rates or callback failures as they happen.",
         "Set worker_send_task_events=True (or start workers with -E) and "
         "task_send_sent_event=True."),
    Code("store_not_shared", Severity.WARNING,
         "The guarded workers write their journal, dead letters and durable chords to a "
         "store this command does not read (another URL, or a SQLite file on another host): "
         "status, dlq and the dashboard miss what the guard records.",
         f"Set {STORE_ENV} (or app.conf.chordguard_store) to the same URL for the workers "
         "and the CLI; across hosts use PostgreSQL or Redis, not a SQLite file."),
    Code("django_db_duplicate_parts", Severity.WARNING,
         "django-db counts each header part's return down in its ChordCounter row: a part "
         "delivered twice (acks_late redelivery after a worker died, a visibility_timeout "
         "shorter than the task) counts twice, the count reaches 0 before the last part "
         "returns, the row is deleted and the callback never fires "
         "(django-celery-results#397).",
         "Keep header tasks run-once (acks_late off for them, or visibility_timeout above "
         "their time limit); install the guard so such a chord is failed by its deadline; "
         "`chordguard check` names it counter_mismatch, counter_lost or orphaned_body."),
    Code("django_db_sqlite", Severity.WARNING,
         "django-db counts parts down under select_for_update, which SQLite ignores: parts "
         "returning at once contend for the whole database, and one that fails with "
         "'database is locked' loses its count-down, so the count never reaches 0 and the "
         "callback never fires.",
         "Put django_celery_results' tables on PostgreSQL or MySQL (DATABASES, or a database "
         "router for its models), or run a single worker process against SQLite."),
    *(Code(h.code, Severity.WARNING, h.what, h.chordguard) for _, h in HAZARDS
      if h.code in ("untested_celery_version", "nested_chain_failure")),
]}


def finding(code: str, setting: str, summary: str, why_extra: str = "") -> Finding:
    entry = CHECKS[code]
    why = entry.explanation + (f" {why_extra}" if why_extra else "")
    return Finding(code, entry.severity, setting, summary, why, entry.next_step)


def seconds(value: Any) -> float | None:
    """A setting given as seconds, timedelta or None."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def celery_key(key: str) -> str | None:
    """A user key as Celery's lowercase name, or None when Celery does not know it."""
    if key in DEFAULTS:
        return key
    upper = key.upper()
    if upper in _TO_NEW_KEY:
        return _TO_NEW_KEY[upper]
    lower = key.lower()
    if lower in DEFAULTS:
        return lower
    if lower.startswith("celery_") and lower[7:] in DEFAULTS:  # Django's CELERY_ namespace
        return lower[7:]
    return None


def ignored_settings(config: AppConfig) -> Iterable[Finding]:
    for key in config.user_keys:
        if celery_key(key) is not None:
            continue
        name = key.lower().removeprefix("celery_")
        if name.startswith("chordguard_"):
            continue
        if "chord" in name or "unlock" in name or name.startswith(CELERY_PREFIXES):
            yield finding("ignored_setting", key, f"{key} is not a Celery setting")


def unlock_annotations(config: AppConfig) -> Iterable[Finding]:
    unlock = config.task(UNLOCK)
    if unlock is None:
        return
    interval = float(config.get("result_chord_retry_interval", 1.0))
    if unlock.max_retries is not None and not config.guarded:
        span = unlock.max_retries * interval
        yield finding("unlock_max_retries", f"task_annotations[{UNLOCK!r}].max_retries",
                      f"chord_unlock gives up after {unlock.max_retries} retries x "
                      f"{interval:g} s: every chord longer than ~{format_seconds(span)} fails")
    if unlock.backoff_options:
        yield finding("unlock_backoff_ignored", f"task_annotations[{UNLOCK!r}]",
                      f"{', '.join(unlock.backoff_options)} on chord_unlock have no effect")


def backoff_without_autoretry(config: AppConfig) -> Iterable[Finding]:
    for task in config.tasks:
        if task.name == UNLOCK or task.autoretry_for:
            continue
        if task.backoff_options:
            yield finding("backoff_without_autoretry", task.name,
                          f"{task.name} sets {', '.join(task.backoff_options)} but no "
                          "autoretry_for")


def longest_chord(config: AppConfig) -> tuple[float | None, str]:
    """An estimate of the longest chord in seconds and what it rests on."""
    deadline = seconds(config.get("chordguard_deadline"))
    if deadline:
        return deadline, f"chordguard_deadline {format_seconds(deadline)}"
    limits = [(t.limit, t.name) for t in config.tasks
              if t.limit and t.name != UNLOCK and not t.name.startswith("celery.")]
    default = seconds(config.get("task_time_limit")) or seconds(config.get("task_soft_time_limit"))
    if default:
        limits.append((default, "task_time_limit"))
    if not limits:
        return None, "no deadline or time limit"
    limit, name = max(limits)
    return limit, f"at least the time limit of {name}, {format_seconds(limit)}"


def result_expiry(config: AppConfig) -> Iterable[Finding]:
    longest, basis = longest_chord(config)
    if longest is None:
        yield finding("unbounded_chords", "task_time_limit",
                      "no chordguard deadline and no task time limit bound a chord")
        return
    backend = str(config.get("result_backend", ""))
    candidates = [("result_expires", seconds(config.get("result_expires")))]
    if backend.startswith("redis") and config.celery.result_chord_expires:
        candidates.append(("result_chord_expires", seconds(config.get("result_chord_expires"))))
    for key, expires in candidates:
        if expires and expires < longest:
            yield finding("results_expire_before_chord", key,
                          f"{key} {format_seconds(expires)} is shorter than the longest chord "
                          f"({basis})")


def backend_supports_chords(config: AppConfig) -> Iterable[Finding]:
    backend = str(config.get("result_backend", "") or "")
    if not backend or backend == "disabled":
        yield finding("no_result_backend", "result_backend", "no result backend is configured")
    elif backend.startswith("rpc"):
        yield finding("rpc_backend_chords", "result_backend",
                      "result_backend is rpc://, which refuses chords")


def acks_late(config: AppConfig) -> Iterable[Finding]:
    exposed = [t.name for t in config.tasks if t.acks_late and t.registered and not t.run_once
               and (t.name == UNLOCK and not config.guarded or not t.name.startswith("celery."))]
    if not exposed:
        return
    shown = ", ".join(sorted(exposed)[:5]) + (" ..." if len(exposed) > 5 else "")
    setting = "task_acks_late" if config.get("task_acks_late") else "acks_late"
    yield finding("acks_late_not_run_once", setting,
                  f"{len(exposed)} task(s) run with acks_late and no run-once guard: {shown}")


def visibility_timeout(config: AppConfig) -> Iterable[Finding]:
    broker = str(config.get("broker_url", "") or "")
    if broker.startswith(("redis", "rediss", "sentinel")):
        default = REDIS_DEFAULT_VISIBILITY
    elif broker.startswith("sqs"):
        default = SQS_DEFAULT_VISIBILITY
    else:
        return
    options = config.get("broker_transport_options", {}) or {}
    timeout = float(options.get("visibility_timeout", default))
    default_limit = seconds(config.get("task_time_limit")) or \
        seconds(config.get("task_soft_time_limit"))
    limits = [(t.limit or default_limit, t.name) for t in config.tasks
              if t.acks_late and (t.limit or default_limit)]
    if not limits:  # acked on receipt: a long run is never redelivered
        return
    limit, name = max(limits)
    if limit > timeout:
        yield finding("visibility_timeout_short", "broker_transport_options.visibility_timeout",
                      f"visibility_timeout {format_seconds(timeout)} is shorter than the time "
                      f"limit of {name} ({format_seconds(limit)}), which runs with acks_late")


def celery_version(config: AppConfig) -> Iterable[Finding]:
    """The version hazards that hit this app and that nothing here contains."""
    version = ".".join(map(str, config.celery.version))
    if not config.celery.supported:
        yield finding("untested_celery_version", "celery", f"Celery {version} is installed")
    backend = str(config.get("result_backend", "") or "")
    joins_by_unlock = bool(backend) and not config.django_db and not backend.startswith(
        ("redis", "sentinel", "rpc", "disabled"))
    if joins_by_unlock and not config.guarded and \
            not config.celery.nested_chain_failure_propagates:
        yield finding("nested_chain_failure", "celery",
                      f"Celery {version} with a {backend.split(':')[0]} result backend: a "
                      "failure inside a chain in a chord header hangs the chord (celery#9674)")


def events(config: AppConfig) -> Iterable[Finding]:
    if not config.get("worker_send_task_events", False):
        yield finding("events_disabled", "worker_send_task_events",
                      "worker_send_task_events is off")


def shared_store(config: AppConfig) -> Iterable[Finding]:
    """Guarded workers whose store is not the one this process reads."""
    apart = [w for w in config.workers or [] if w.store != config.store
             or (w.store.startswith("sqlite:") and w.host != config.host)]
    if not apart:
        return
    shown = "; ".join(f"{w.worker} uses {w.store}" + (f" on host {w.host}" if w.host !=
                                                        config.host else "") for w in apart[:3])
    yield finding("store_not_shared", "chordguard_store",
                  f"{shown}; this command reads {config.store} on host {config.host}")


def django_db(config: AppConfig) -> Iterable[Finding]:
    """django-db's own hazards: parts counted twice, and SQLite's missing row locks."""
    if not config.django_db:
        return
    exposed = sorted(t.name for t in config.tasks if t.acks_late and t.registered
                     and not t.run_once and not t.name.startswith("celery."))
    if exposed:
        shown = ", ".join(exposed[:5]) + (" ..." if len(exposed) > 5 else "")
        setting = "task_acks_late" if config.get("task_acks_late") else "acks_late"
        yield finding("django_db_duplicate_parts", setting,
                      f"result backend django-db (ChordCounter rows) and {len(exposed)} "
                      f"task(s) with acks_late, redelivered after a worker dies: {shown}")
    if config.django_engine and "sqlite" in config.django_engine:
        yield finding("django_db_sqlite", "DATABASES",
                      f"result backend django-db writes ChordCounter to {config.django_engine}")


RULES: list[Callable[[AppConfig], Iterable[Finding]]] = [
    ignored_settings, unlock_annotations, backoff_without_autoretry, result_expiry,
    backend_supports_chords, acks_late, visibility_timeout, celery_version, events,
    shared_store, django_db,
]


def lint(config: AppConfig) -> list[Finding]:
    """Every hazard in ``config``, blocking ones first; settings named as the user writes
    them (``CELERY_TASK_ACKS_LATE`` in a Django project)."""
    found = [f for rule in RULES for f in rule(config)]
    for item in found:
        item.setting = written_name(config, item.setting)
    return sorted(found, key=lambda f: f.severity is not Severity.BLOCKING)


def written_name(config: AppConfig, setting: str) -> str:
    """``setting`` (a Celery or chordguard name, maybe followed by ``[…]`` or ``.…``) as the
    user writes it: with a namespace (Django's ``CELERY``) upper case behind its prefix."""
    if not config.namespace:
        return setting
    cut = min((i for i in (setting.find("["), setting.find(".")) if i >= 0),
              default=len(setting))
    key = setting[:cut]
    if key not in DEFAULTS and not key.startswith("chordguard_"):
        return setting
    return f"{config.namespace}_{key.upper()}{setting[cut:]}"


def config_from_app(app: Celery, ask_workers: bool = False) -> AppConfig:
    """Read what ``lint`` needs from a live app (finalizing it: tasks get their annotations);
    ``ask_workers``: also which store each guarded worker uses (one bounded broadcast; no
    answer, e.g. no broker, leaves ``workers`` None)."""
    conf = app.conf
    conf.finalize()
    guard = installed_settings(app)
    user_keys = sorted({k for layer in conf.maps[:-1] for k in layer if isinstance(k, str)})
    settings = {key: conf.get(key) for key in DEFAULTS}
    settings["chordguard_deadline"] = guard.deadline if guard is not None \
        else conf.get("chordguard_deadline")
    tasks = [task_facts(name, task, guard is not None) for name, task in sorted(app.tasks.items())]
    known = {t.name for t in tasks}
    for name, options in annotation_dicts(conf.task_annotations):
        if name not in known and name != "*":
            tasks.append(TaskFacts(
                name=name, registered=False,
                acks_late=bool(options.get("acks_late", conf.task_acks_late)),
                time_limit=seconds(options.get("time_limit")),
                soft_time_limit=seconds(options.get("soft_time_limit")),
                max_retries=options.get("max_retries"),
                backoff_options=backoff_options(options),
                autoretry_for=tuple(options.get("autoretry_for") or ())))
    workers = None
    if ask_workers:
        try:
            workers = guard_presence(app)
        except Exception:  # doctor lints the configuration even with no broker to ask
            workers = None
    on_django_db = django_chords.SOURCE.applies(app)
    return AppConfig(settings=settings, user_keys=user_keys, tasks=tasks,
                     guarded=guard is not None, store=store_identity(store_url(app)),
                     host=socket.gethostname(), workers=workers, namespace=app.namespace,
                     django_db=on_django_db,
                     django_engine=django_chords.database_engine() if on_django_db else None)


def runs_once(task: Any) -> bool:
    """Whether the task's body is run-once in a guarded app (``@chordguard.chord_callback``).

    A ``chordguard_run_once`` mark on the task or its run function says so (``chord_callback``
    marks the bodies it wraps).
    """
    run = getattr(task, "run", None)
    return any(getattr(holder, mark, False) for holder in (task, run) for mark in RUN_ONCE_MARKS)


def task_facts(name: str, task: Any, guarded: bool = False) -> TaskFacts:
    return TaskFacts(
        name=name, acks_late=bool(task.acks_late), time_limit=seconds(task.time_limit),
        soft_time_limit=seconds(task.soft_time_limit), max_retries=task.max_retries,
        backoff_options=backoff_options(explicit_options(task)),
        autoretry_for=tuple(getattr(task, "autoretry_for", ()) or ()),
        run_once=guarded and runs_once(task))


def explicit_options(task: Any) -> dict[str, Any]:
    """Options set on the task's own classes (decorator, base or annotation), not Celery's."""
    found: dict[str, Any] = {}
    for klass in reversed(type(task).__mro__):
        if klass.__module__ == "celery.app.task" or klass is object:
            continue
        found.update({k: v for k, v in vars(klass).items() if k in BACKOFF_OPTIONS})
    return found


def backoff_options(options: Mapping[str, Any]) -> tuple[str, ...]:
    """The backoff options present in ``options``, ``retry_backoff=False`` not counted."""
    return tuple(o for o in BACKOFF_OPTIONS
                 if o in options and not (o == "retry_backoff" and not options[o]))


def annotation_dicts(annotations: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """(task name, options) from task_annotations given as a dict or a list of dicts."""
    if not annotations:
        return []
    items = annotations if isinstance(annotations, list | tuple) else [annotations]
    return [(name, options) for item in items if isinstance(item, Mapping)
            for name, options in item.items() if isinstance(options, Mapping)]
