"""``python -m chaos [--rows a,b] [--cols x,y] [--chords N] [--jobs N] [--json FILE]``: run
the matrix and print its table."""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

from .cell import Servers, Tally, run_cell
from .faults import FAULTS, Fault
from .kinds import KINDS, Kind
from .servers import lane_servers
from .table import render


def pick(names: str | None, known: list, what: str) -> list:
    if not names:
        return known
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in {k.name for k in known}]
    if unknown:
        raise SystemExit(f"chaos: unknown {what} {', '.join(unknown)}; known: "
                         + ", ".join(k.name for k in known))
    return [k for k in known if k.name in wanted]


def run_matrix(faults: list[Fault], kinds: list[Kind], chords: int, jobs: int,
               logs: Path | None = None) -> dict[tuple[str, str], Tally]:
    """Every cell, ``jobs`` at a time; each lane has private servers of its own, so a
    fault in one lane never reaches another's cells."""
    cells: queue.Queue = queue.Queue()
    for fault in faults:
        for kind in kinds:
            if fault.applies(kind) is None:
                cells.put((fault, kind))
    results = {(f.name, k.name): Tally(na=f.applies(k), deadline=f.deadline)
               for f in faults for k in kinds if f.applies(k)}
    errors: list[BaseException] = []

    def lane() -> None:
        try:
            with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
                cells_dir = logs or Path(tmp)
                servers: Servers | None = None
                while True:
                    try:
                        fault, kind = cells.get_nowait()
                    except queue.Empty:
                        return
                    servers = servers or stack.enter_context(lane_servers(Path(tmp)))
                    began = time.monotonic()
                    cell_dir = cells_dir / f"{fault.name}--{kind.name.replace(':', '-')}"
                    cell_dir.mkdir(parents=True, exist_ok=True)
                    tally = run_cell(kind, fault, servers, chords, cell_dir)
                    results[fault.name, kind.name] = tally
                    print(f"chaos: {fault.name} × {kind.name}: {asdict(tally)} "
                          f"({time.monotonic() - began:.0f} s)", file=sys.stderr, flush=True)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=lane, name=f"chaos-lane-{i}") for i in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--rows", help="faults to run (comma-separated; default all)")
    parser.add_argument("--cols", help="kinds to run (comma-separated; default all)")
    parser.add_argument("--chords", type=int, default=5, help="chords per cell (default 5)")
    parser.add_argument("--jobs", type=int, default=3,
                        help="cells run at once, each lane on its own servers (default 3)")
    parser.add_argument("--json", type=Path, help="also write the tallies to this file")
    parser.add_argument("--logs", type=Path,
                        help="keep each cell's worker logs in DIR/<fault>--<kind>/")
    args = parser.parse_args(argv)
    faults, kinds = pick(args.rows, FAULTS, "row"), pick(args.cols, KINDS, "column")
    if args.chords < 1 or not 1 <= args.jobs <= 5:
        raise SystemExit("chaos: --chords must be at least 1 and --jobs 1 to 5")
    logging.basicConfig(level=logging.CRITICAL)
    began = time.monotonic()
    results = run_matrix(faults, kinds, args.chords, args.jobs, args.logs)
    print(render(faults, kinds, results))
    print(f"\n{len(results)} cells, {args.chords} chords each, {args.jobs} at a time, "
          f"in {time.monotonic() - began:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({f"{f} × {k}": asdict(t)
                                         for (f, k), t in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # the cells' result consumers would unsubscribe from servers already stopped, from
    # finalizers at interpreter exit: leave without running them
    os._exit(code)
