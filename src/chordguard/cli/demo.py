"""``chordguard demo``: the embedded cluster walk-through."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import click

from ..demo.run import run_demo
from . import COMMANDS, command, settings


@command(COMMANDS, name="demo")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Where the embedded broker and results live (default: a new temp dir).")
@click.option("--keep", is_flag=True, help="Keep the demo's files (broker, results, logs).")
def demo(directory: Path | None, keep: bool) -> int:
    """Start an embedded cluster (no servers), make a chord get stuck, and catch it.

    Its files live in a new temporary folder (or --dir) and are removed at the end unless
    --keep is given.
    """
    console = settings().console
    root = directory or Path(tempfile.mkdtemp(prefix="chordguard-demo-"))
    try:
        return run_demo(root, console)
    finally:
        if keep:
            console.print(f"demo files kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
            console.print(f"demo files removed ({root}); --keep keeps them")
