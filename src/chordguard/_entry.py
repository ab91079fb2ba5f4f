"""The ``chordguard`` console script: ``--version`` answers before anything loads; Ctrl-C
while the CLI is still loading exits 130 quietly; a finished command leaves without
tearing the interpreter down."""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import signal
import sys
import threading


def _interrupted(*_: object) -> None:
    """Nothing has run yet: leave at once (an exception here could surface mid-import)."""
    sys.stderr.write("interrupted\n")
    sys.stderr.flush()
    os._exit(130)


# Reading 100,000 chords makes millions of small objects, few of them cyclic: with Python's
# default (700 allocations) the cycle collector rescans the growing heap over and over, a
# third of such a run. This process's own setting (never a user's app's).
GC_THRESHOLD = (100_000, 50, 100)


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from ._version import VERSION

        sys.stdout.write(f"chordguard {VERSION}\n")
        return
    gc.set_threshold(*GC_THRESHOLD)
    previous = signal.signal(signal.SIGINT, _interrupted)  # while the CLI's modules load
    try:
        from .cli import main as run
        from .cli import preload

        preload(sys.argv[1:])
    except KeyboardInterrupt:
        _interrupted()
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        run()
    except SystemExit as done:
        _leave(done)


def _leave(done: SystemExit) -> None:
    """Exit as Python would, minus its teardown of every module (Celery, SQLAlchemy and the
    user's app load ~900; ~0.2 s of a one-shot command): the exit handlers (the app's, and
    logging's) run and the output is flushed first. With a thread still running, the
    ordinary exit, which waits for it."""
    code = done.code
    if not isinstance(code, int) or any(
            not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        raise done
    _close_celery_apps()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nobody reads the rest
            stream.flush()
    os._exit(code)


def _close_celery_apps() -> None:
    """Close the broker connections the command's apps pooled, as a broker expects (a
    RabbitMQ broker logs a connection dropped without its close handshake)."""
    state = sys.modules.get("celery._state")
    for app in list(state._get_active_apps()) if state is not None else ():
        with contextlib.suppress(Exception):  # leaving anyway: the socket closes with us
            app.close()
