"""The ``chordguard`` console script: Ctrl-C while the CLI is still loading exits 130 quietly."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
    run()
