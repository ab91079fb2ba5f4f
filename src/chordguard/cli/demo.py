"""``chordguard demo``: the embedded cluster walk-through."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from ..demo.run import run_demo
from . import COMMANDS, command, settings


@command(COMMANDS, name="demo")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Where the embedded broker and results live (default: a new temp dir).")
def demo(directory: Path | None) -> int:
    """Start an embedded cluster (no servers), make a chord get stuck, and catch it."""
    root = directory or Path(tempfile.mkdtemp(prefix="chordguard-demo-"))
    return run_demo(root, settings().console)
