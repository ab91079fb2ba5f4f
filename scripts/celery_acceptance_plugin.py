"""pytest plugin for scripts/celery-acceptance: Celery's own canvas suite, plain or guarded.

Loaded with ``-p celery_acceptance_plugin`` (``scripts/`` on PYTHONPATH) next to
``-p celery.contrib.pytest`` when pytest runs ``t/integration/test_canvas.py`` from a Celery
sdist. Configured by environment variables set by scripts/celery_acceptance.py:

- ``CG_ACCEPT_REPORT``: a JSON-lines file; one line per test report, plus the guard checks.
- ``CG_ACCEPT_MODE``: ``plain`` (nothing is changed), ``guarded``, or ``store`` (guarded with
  ``fan_in="store"``: chordguard's store joins every chord; docs/fan-in.md).
- ``CG_ACCEPT_STORE``, ``CG_ACCEPT_DEADLINE``, ``CG_ACCEPT_REAPER_INTERVAL``: guard settings.
- ``DJANGO_SETTINGS_MODULE`` (the ``django`` backend, ``django-db``): Django is set up here in
  every mode, before Celery's fixtures build an app (each app gets Celery's Django fix-up, as
  in a Django project's worker); the harness has migrated the database.

How the guard gets in (guarded mode). Celery's integration conftest builds two kinds of app,
both through ``celery.contrib.pytest._create_app``: the session app (``celery_session_app``),
which the embedded worker (``celery.contrib.testing.worker.start_worker``: a WorkController in
a thread of the pytest process) runs, and a fresh function-scoped app per test (the ``app``
fixture), current and default while the test publishes its canvases. This plugin replaces
``_create_app`` so that every app it creates gets ``chordguard.install(app, ...)`` right after
it is configured, before the worker starts. The worker's prefork pool forks its children from
the pytest process after that, so each child inherits the guarded app (the journal's signal
handlers, chordguard's ``celery.chord_unlock``, the store). A probe task run by the worker
proves it from inside a pool child. Celery's embedded worker never sends ``worker_ready``, so
the guard's reaper (started on that signal) is started here, in the worker's process.

After the last test, before the worker stops, the plugin waits until every chord still open
in the journal at the end of its test has ended (at most until it is past its deadline and
the reaper has had its passes), then reads again every result id of each such chord body: a
result that was SUCCESS at the end of its test and is something else now was changed by the guard
after the test had passed (issue 8, finding 3). Those are reported against the test. It also
counts side effects (issue 20): every task run in the worker (name, id) and every errback
Celery runs or publishes for a failed task (name, the failed task: old-style errbacks run in
the failing process, with no task run of their own) is logged; an errback of such a chord's
body (failed task: one of the chord's) or a body task that ran during the test and runs again
after it is a rerun.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from typing import Any

import pytest

MODE = os.environ.get("CG_ACCEPT_MODE", "plain")
GUARDED = MODE in ("guarded", "store")
REPORT = os.environ.get("CG_ACCEPT_REPORT")
PROBE = "chordguard_acceptance.probe"
MAX_SNAPSHOT_IDS = 200  # result ids read per chord at the end of its test

_apps: list[Any] = []
_snapshots: dict[str, dict[str, Any]] = {}  # chord id -> {"test", "states", "deadline_at"}
_windows: list[tuple[float, float, str]] = []  # (start, end, test id) of each guarded test
_lock = threading.Lock()


def _emit(record: dict[str, Any]) -> None:
    if not REPORT:
        return
    with _lock, open(REPORT, "a", encoding="utf-8") as out:
        out.write(json.dumps(record, default=str) + "\n")


def _settings() -> dict[str, Any]:
    return {
        "store": os.environ["CG_ACCEPT_STORE"],
        "deadline": float(os.environ.get("CG_ACCEPT_DEADLINE", "60")),
        "reaper_interval": float(os.environ.get("CG_ACCEPT_REAPER_INTERVAL", "5")),
    }


def _probe(self: Any) -> dict[str, Any]:
    """Runs in a worker pool child: is the guard there?"""
    from chordguard.guard.state import guard_of

    unlock = self.app.tasks["celery.chord_unlock"]
    return {"pid": os.getpid(), "guard": guard_of(self.app) is not None,
            "unlock": getattr(unlock.run, "__module__", "?")}


def _guard_app(app: Any) -> None:
    import chordguard

    settings = _settings()
    chordguard.install(app, store=settings["store"], deadline=settings["deadline"],
                       reaper_interval=settings["reaper_interval"],
                       fan_in="store" if MODE == "store" else None)
    app.task(name=PROBE, bind=True, shared=False)(_probe)
    _apps.append(app)


def pytest_configure(config: pytest.Config) -> None:
    _emit({"kind": "start", "mode": MODE, "pid": os.getpid(), "time": time.time()})
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        import django

        django.setup()
    if not GUARDED:
        return
    import celery.contrib.pytest as celery_pytest

    original = celery_pytest._create_app

    @contextlib.contextmanager
    def guarded_create_app(*args: Any, **kwargs: Any):
        with original(*args, **kwargs) as app:
            _guard_app(app)
            yield app

    celery_pytest._create_app = guarded_create_app
    from celery.backends.base import Backend
    from celery.signals import task_prerun

    task_prerun.connect(_log_run, weak=False)
    call_errbacks = Backend._call_task_errbacks

    def _call_task_errbacks(self: Any, request: Any, exc: Any, traceback: Any) -> Any:
        for errback in request.errbacks or []:
            _emit({"kind": "errback", "task": dict(errback).get("task"), "parent": request.id,
                   "time": time.time()})
        return call_errbacks(self, request, exc, traceback)

    Backend._call_task_errbacks = _call_task_errbacks


def _log_run(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
    """Log one task run (in whichever worker process runs it) for the rerun check."""
    _emit({"kind": "run", "task": getattr(sender, "name", None), "id": task_id,
           "time": time.time()})


def _unlock_module(app: Any) -> str:
    return getattr(app.tasks["celery.chord_unlock"].run, "__module__", "?")


def _fail_setup(message: str) -> None:
    _emit({"kind": "guard_check", "ok": False, "message": message})
    pytest.exit(f"celery-acceptance: {message}", returncode=4)


@pytest.fixture(scope="session", autouse=True)
def _chordguard_acceptance_session(request: pytest.FixtureRequest):
    """Guarded: check the guard in the session app and a pool child, start the reaper."""
    if not GUARDED:
        yield
        return
    from chordguard.guard import reaper
    from chordguard.guard.state import guard_of

    app = request.getfixturevalue("celery_session_app")
    request.getfixturevalue("celery_session_worker")  # the worker runs from here on
    guard = guard_of(app)
    if guard is None or app not in _apps:
        _fail_setup("the guard is not installed in Celery's session app")
    if not _unlock_module(app).startswith("chordguard"):
        _fail_setup(f"celery.chord_unlock of the session app is {_unlock_module(app)}")
    try:
        seen = app.send_task(PROBE).get(timeout=60)
    except Exception as exc:  # noqa: BLE001 - reported and fatal
        _fail_setup(f"the probe task did not run in the worker: {exc!r}")
    if seen["pid"] == os.getpid() or not seen["guard"] or not seen["unlock"].startswith(
            "chordguard"):
        _fail_setup(f"the worker's pool child is not guarded: {seen}")
    running = any(t.name == "chordguard-reaper" and t.is_alive() for t in threading.enumerate())
    if not running:
        reaper.start(guard)
    _emit({"kind": "guard_check", "ok": True, "store": guard.settings.store,
           "deadline": guard.settings.deadline, "reaper_interval": guard.settings.reaper_interval,
           "child": seen, "reaper_started_here": not running})
    yield
    _after_deadline(app, guard)


@pytest.fixture(autouse=True)
def _chordguard_acceptance_test(request: pytest.FixtureRequest):
    """Guarded: the test's own app is guarded; snapshot the chords still open at its end."""
    if not GUARDED:
        yield
        return
    from chordguard.guard.state import guard_of

    app = request.getfixturevalue("app")
    session_app = request.getfixturevalue("celery_session_app")
    if guard_of(app) is None or not _unlock_module(app).startswith("chordguard"):
        _fail_setup(f"the test app of {request.node.nodeid} is not guarded")
    started = time.time()
    yield
    _windows.append((started, time.time(), request.node.nodeid))
    try:
        _snapshot(request.node.nodeid, session_app)
    except Exception as exc:  # noqa: BLE001 - a store problem must not fail Celery's test
        _emit({"kind": "snapshot_error", "test": request.node.nodeid, "error": repr(exc)})


def _body_ids(node: Any, found: list[str]) -> None:
    if isinstance(node, dict):
        options = node.get("options")
        if isinstance(options, dict) and isinstance(options.get("task_id"), str):
            found.append(options["task_id"])
        for value in node.values():
            _body_ids(value, found)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _body_ids(value, found)


def _states(app: Any, ids: list[str]) -> dict[str, str]:
    return {i: app.AsyncResult(i).state for i in ids}


def _snapshot(test: str, app: Any) -> None:
    from chordguard.guard.state import guard_of

    guard = guard_of(app)
    for barrier in guard.store.barriers_in_flight(app.main or ""):  # joined by the store
        if barrier.id not in _snapshots:
            full = guard.store.barrier(barrier.id, with_header_ids=True) or barrier
            _snapshots[barrier.id] = _opened(app, test, "store", barrier.callback_id,
                                             barrier.callback, barrier.deadline_at,
                                             full.header_ids)
    for record in guard.store.open_chords():
        if record.id not in _snapshots:
            _snapshots[record.id] = _opened(app, test, record.kind, record.callback_id,
                                            record.callback,
                                            record.deadline_at or record.created_at,
                                            record.header_ids)


def _opened(app: Any, test: str, kind: str, callback_id: str | None, callback: Any,
            deadline_at: float, header_ids: list[str]) -> dict[str, Any]:
    """A chord still open at the end of ``test``: its body's states, header and errbacks."""
    ids: list[str] = [callback_id] if callback_id else []
    _body_ids(callback, ids)
    ids = list(dict.fromkeys(ids))[:MAX_SNAPSHOT_IDS]
    return {"test": test, "states": _states(app, ids), "deadline_at": deadline_at,
            "kind": kind, "at": time.time(), "tasks": ids + list(header_ids),
            "errbacks": sorted(_errback_names(callback))}


def _errback_names(node: Any) -> set[str]:
    """Task names of every errback linked in a body signature (as journaled: JSON)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for errback in (node.get("options") or {}).get("link_error") or []:
            if isinstance(errback, dict) and errback.get("task"):
                found.add(errback["task"])
        for value in node.values():
            found |= _errback_names(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            found |= _errback_names(value)
    return found


def _reruns(snap: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, list[int]]:
    """What ran during the snapshot's test and again after it: ``{what: [before, after]}``
    for each errback task (run for a failed task of the chord) and body task id."""
    tasks, counts = set(snap["tasks"]), {}
    for run in runs:
        if run["kind"] == "run" and run["id"] in snap["states"]:
            what = f"body task {run['task']} {run['id']}"
        elif run["kind"] == "errback" and run["task"] in snap["errbacks"] and \
                run["parent"] in tasks:
            what = f"errback {run['task']}"
        else:
            continue
        counts.setdefault(what, [0, 0])[run["time"] > snap["at"]] += 1
    return {what: n for what, n in counts.items() if n[0] and n[1]}


def _runs() -> list[dict[str, Any]]:
    with open(REPORT, encoding="utf-8") as lines:
        return [r for r in map(json.loads, lines) if r.get("kind") in ("run", "errback")]


def _after_deadline(app: Any, guard: Any) -> None:
    """Wait until the guard can no longer change a snapshotted chord, then look for flips."""
    settings = guard.settings
    slack = settings.unlock_max_interval + 5.0 + 2 * settings.reaper_interval + 5.0
    if _snapshots:
        started = time.time()
        until = max(s["deadline_at"] for s in _snapshots.values()) + slack
        print(f"\ncelery-acceptance: waiting up to {until - started:.0f} s for {len(_snapshots)} "
              "open chord(s) to end (their deadline and the reaper)", flush=True)
        still_open = _wait_for_ends(guard, until, 2 * settings.reaper_interval + 5.0)
        _emit({"kind": "reaper_wait", "seconds": round(time.time() - started, 1),
               "bound": round(until - started, 1), "chords": len(_snapshots),
               "still_open": still_open})
    guard.parts.flush()
    runs = _runs() if REPORT else []
    for chord_id, snap in _snapshots.items():
        now = _states(app, list(snap["states"]))
        flipped = {i: [before, now[i]] for i, before in snap["states"].items()
                   if before == "SUCCESS" and now[i] != "SUCCESS"}
        record = guard.store.chord(chord_id)
        if flipped:
            _emit({"kind": "flip", "test": snap["test"], "chord": chord_id,
                   "chord_kind": snap["kind"], "flipped": flipped,
                   "journal": [record.state, record.reason] if record else None})
        again = _reruns(snap, runs)
        if again:
            _emit({"kind": "rerun", "test": snap["test"], "chord": chord_id, "runs": again,
                   "journal": [record.state, record.reason] if record else None})
    for letter in guard.store.dead_letters():
        test = _snapshots.get(letter.chord_id, {}).get("test")
        if test is None:
            record = guard.store.chord(letter.chord_id)
            created = record.created_at if record else letter.created_at
            test = next((t for start, end, t in _windows if start <= created <= end), None)
        _emit({"kind": "dead_letter", "test": test, "chord": letter.chord_id,
               "callback": letter.callback_name, "reason": letter.reason,
               "after_test": letter.chord_id in _snapshots})


def _wait_for_ends(guard: Any, until: float, settle: float) -> int:
    """Sleep until every snapshotted chord is closed in the journal, or until ``until``;
    return how many were still open.

    Only ``dead_letter`` changes a chord's results, and it closes the record first (then
    fails the callback): when one of these chords was dead-lettered, ``settle`` more seconds
    let a failure under way land. A record closed as succeeded or failed changes no result.
    """
    while True:
        records = [guard.store.chord(chord_id) for chord_id in _snapshots]
        barriers = [guard.store.barrier(chord_id) for chord_id in _snapshots]
        still_open = sum(1 for r in records if r is not None and r.open) + sum(
            1 for b in barriers if b is not None and b.state.value not in ("succeeded", "failed"))
        if not still_open:
            if any(r is not None and r.state == "dead_lettered" for r in records):
                time.sleep(max(0.0, min(settle, until - time.time())))
            return 0
        if time.time() >= until:
            return still_open
        time.sleep(min(1.0, max(0.0, until - time.time())))


def _message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message).splitlines()[0][:300] if crash.message else ""
    text = str(report.longrepr or "")
    return text.strip().splitlines()[-1][:300] if text.strip() else ""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    outcome = report.outcome
    if hasattr(report, "wasxfail"):
        outcome = "xfailed" if report.skipped else "xpassed"
    if report.when != "call" and outcome == "passed":
        return
    _emit({"kind": "test", "test": report.nodeid, "when": report.when, "outcome": outcome,
           "sub": bool(getattr(report, "context", None)),
           "duration": round(report.duration, 2),
           "message": _message(report) if report.failed else ""})
