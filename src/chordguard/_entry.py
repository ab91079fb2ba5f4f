"""The ``chordguard`` console script: ``--version`` answers before anything loads; Ctrl-C
while the CLI is still loading exits 130 quietly."""

from __future__ import annotations

import gc
import os
import signal
import sys


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
    run()
